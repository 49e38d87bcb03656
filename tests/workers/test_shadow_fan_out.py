"""A shadow job fanned out over two real Celery workers on the real Redis: each batch of runs
is a shadow_batch job of its own, run by whichever worker is free (the parent runs those
nobody took), and the batches are assembled into one pair set — the same pair set, to the
byte, that one process makes alone."""

from __future__ import annotations

import pytest
from jobs_helpers import add_users, make_settings
from sqlalchemy import select

from gtapp.pairset import PairSet
from gtapp.shadow import ShadowConfig, make_pairs
from storage import catalog
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import Job
from testkit.services import CeleryWorker
from workers.client import JobClient

pytestmark = pytest.mark.slow

TASKS = ["math/add-fruit-easy", "commonsense/animal_home-4opt"]
PARAMS = {"tasks": TASKS, "subsets": 4, "subset_size": 8, "steps": 4, "snapshot_steps": [2], "batch_size": 4,
          "max_length": 64, "n_train": 32, "seed": 5, "batch_runs": 2, "device": "cpu"}


def test_shadow_job_fans_out_over_two_workers_and_assembles_one_pair_set(tmp_path, micro_zoo, broker_url,
                                                                       key_prefix):
    settings = make_settings(tmp_path / "d", broker_url=broker_url, key_prefix=key_prefix + "fanout:")
    users = add_users(settings)
    with session_scope(settings=settings) as s:
        pair_id = catalog.register_pair(s, "micro-fan", micro_zoo).id
    client = JobClient(settings)
    with CeleryWorker(settings, tmp_path / "w1.log", name="fan1", concurrency=1) as w1, \
            CeleryWorker(settings, tmp_path / "w2.log", name="fan2", concurrency=1) as w2:
        job_id = client.submit("shadow", {"pair_id": pair_id, **PARAMS, "fan_out": True}, users["root"])
        view = client.wait(job_id, timeout=300)
        assert view.status == "succeeded", (view.error, view.log_tail, w1.log_tail(), w2.log_tail())
    with session_scope(settings=settings) as s:
        children = [j for j in s.scalars(select(Job).where(Job.kind == "shadow_batch"))
                    if j.params.get("parent") == job_id]
        rows = [(j.params["batch"], j.status, j.worker, j.attempts) for j in children]
    # 8 runs in batches of 2: four batch jobs, every one run once, by both workers between them
    assert sorted(b for b, *_ in rows) == [0, 1, 2, 3] and all(st == "succeeded" and a == 1 for _, st, _, a in rows), rows
    hosts = {w.split("@")[0].split("/")[0] for _, _, w, _ in rows}
    assert len(hosts) == 2, rows
    assert view.outputs["runs"] == 8 and view.outputs["n_pairs"] == 16
    # the same pair set one process makes alone: same shards, same version
    folder = ArtifactStore(settings.artifacts_dir).materialize(view.outputs["pair_set_artifact"], tmp_path / "got")
    fanned = PairSet.load(folder)
    cfg = ShadowConfig(tasks=tuple(TASKS), subsets=4, subset_size=8, steps=4, snapshot_steps=(2,), batch_size=4,
                       max_length=64, n_train=32, task_seed=5, subset_seed=5, batch_runs=2)
    alone = make_pairs(micro_zoo, cfg, tmp_path / "alone")
    assert {r: e["sha256"] for r, e in fanned.runs.items()} == {r: e["sha256"] for r, e in alone.runs.items()}
    assert fanned.version == alone.version
