"""Progress a person can plan by (issue #15 item 10): every job kind reports monotone
progress with a stage, and an ETA that, once 20 % of the work is done, stays within a factor
of 2 of the time actually left; a queued job says its place in line and what it waits for.

Each job runs on the embedded worker (the micro zoo, sized to last a few seconds), and the
runner's own record of what it reported (``run_dir/progress.json``: elapsed, fraction, ETA at
each write, and when the attempt ended) is checked against the truth."""

from __future__ import annotations

import json

import pytest
from jobs_helpers import MicroDeployment, make_settings

from storage import catalog
from storage.artifacts import ArtifactStore
from storage.db import session_scope

pytestmark = pytest.mark.slow
TASK = "math/add-fruit-easy"
MIN_LEFT_S = 1.5  # below this the truth is as short as the scheduling noise: not judged


def honest(store: ArtifactStore, job_id: int) -> int:
    """Checks a finished job's progress record; the number of ETAs judged."""
    record = json.loads((store.run_dir(job_id) / "progress.json").read_text())
    samples, ended = record["samples"], record["ended_s"]
    assert samples, f"job {job_id} reported no progress"
    fractions = [f for _, f, _ in samples]
    assert fractions == sorted(fractions), f"job {job_id}: progress went back: {fractions}"
    judged = 0
    for t, f, eta in samples:
        left = ended - t
        if f >= 0.2 and f < 1 and left >= MIN_LEFT_S:
            assert eta >= 0, f"job {job_id}: no ETA at {f:.0%} ({left:.1f} s left)"
            assert left / 2 <= eta <= 2 * left, f"job {job_id}: ETA {eta:.1f} s at {f:.0%}, truth {left:.1f} s"
            judged += 1
    print(f"job {job_id}: {len(samples)} progress reports over {ended:.1f} s, {judged} ETAs judged")
    return judged


def test_every_job_kind_reports_monotone_progress_and_an_honest_eta(tmp_path, micro_zoo):
    from gtapp.tasks import make_task

    env = MicroDeployment(make_settings(tmp_path / "data"), micro_zoo)
    settings, client, store, users, pair_id = env.settings, env.client, env.store, env.users, env.pair_id
    with session_scope(settings=settings) as s:
        dataset_id = catalog.create_dataset(s, store, env.alice.org_id, "mine",
                                            make_task(TASK, seed=3, n_train=64, n_test=1).train).id

    def run(kind: str, params: dict, user: str) -> int:
        view = client.wait(client.submit(kind, params, users[user]), timeout=300)
        assert view.status == "succeeded", (kind, view.error, view.log_tail)
        return view.id

    # a queued job says where it stands while another runs (one embedded worker thread)
    import time

    from workers.client import JobNotFound

    first = client.submit("selftest", {"steps": 30, "step_s": 0.1}, users["alice"])
    second = client.submit("selftest", {"steps": 2, "step_s": 0.0}, users["alice"])
    third = client.submit("selftest", {"steps": 2, "step_s": 0.0}, users["alice"])
    deadline = time.monotonic() + 30
    while client.get(first, users["alice"]).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    place = client.queue_place(third, users["alice"])
    assert place.startswith("queued: 1 of your organisation's jobs ahead of it;"), place
    assert "0 other organisations' job(s) queued" in place and "'cpu' queue (1 running there now)" in place, place
    assert "next of your organisation's jobs" in client.queue_place(second, users["alice"])
    with pytest.raises(JobNotFound):  # another organisation learns nothing of it, not even that it exists
        client.queue_place(third, users["bob"])
    for j in (first, second, third):
        assert client.wait(j, timeout=60).status == "succeeded"
    assert client.queue_place(third, users["alice"]) is None  # no longer queued
    judged = {"selftest": honest(store, first)}

    # the provider's and an organisation's job kinds, each long enough to judge its ETA
    judged["zoo"] = honest(store, run("zoo", {"preset": "ci", "name": "ci-progress"}, "root"))
    # shadow, train_mapper and finetune sized to run 3 s or more here: at about 2 s a run had barely one ETA
    # past 20 % with 1.5 s left, so whether the check bit at all was down to scheduling noise. The GT
    # is wider, not longer: 1,000 steps stop early on patience, which its ETA (all steps) cannot foresee
    shadow = {"tasks": [TASK], "subsets": 8, "subset_size": 32, "steps": 80, "snapshot_steps": [40], "seeds": [0],
              "batch_size": 4, "n_train": 128, "lr": 0.01, "device": "cpu", "pair_id": pair_id}
    judged["shadow"] = honest(store, run("shadow", shadow, "root"))
    gt = {"pair_id": pair_id, "kind": "gt", "promote": True, "device": "cpu",
          "config": {"steps": 400, "d_model": 48, "n_enc_layers": 1, "n_dec_layers": 1}}
    judged["train_mapper"] = honest(store, run("train_mapper", gt, "root"))
    ft = {"pair_id": pair_id, "dataset_id": dataset_id, "steps": 300, "batch_size": 32, "lr": 0.002, "device": "cpu"}
    ft_job = run("finetune", ft, "alice")
    judged["finetune"] = honest(store, ft_job)
    with session_scope(settings=settings) as s:
        from sqlalchemy import select

        from storage.models import Adapter

        adapter_id = s.scalars(select(Adapter.id).where(Adapter.job_id == ft_job)).one()
    gen = {"adapter_ids": [adapter_id], "evaluate_task": TASK, "n_test": 1024, "device": "cpu"}
    judged["generate"] = honest(store, run("generate", gen, "alice"))
    print("ETAs judged per kind:", judged)
    assert all(n >= 1 for n in judged.values()), judged  # each long enough that the check bites
