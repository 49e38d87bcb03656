"""Job integrity through real fine-tune jobs. The privacy ledger on the embedded worker (real database, real
DP-SGD on the micro zoo): charged when private data is trained on, not when queued; refunded
when a job stops before its first step; charged for the steps a stopped job ran; a non-DP
fine-tune refused on a budgeted dataset unless it is marked 'no DP required' (then ε = ∞); a
dataset with U+2028 in a row trains (it validated). What a member sees of a job has no server
paths (error, log tail, the JSON inside a downloaded adapter); admins can open the traceback."""

from __future__ import annotations

import threading
import time

import pytest
from jobs_helpers import MicroDeployment, make_settings

from storage import catalog
from storage.accounts import principal
from storage.db import session_scope
from storage.models import Dataset, Job
from workers.embedded import stop_all

pytestmark = pytest.mark.slow


class Env(MicroDeployment):
    def dataset(self, name, rows, budget=8.0) -> int:
        with session_scope(settings=self.settings) as s:
            return catalog.create_dataset(s, self.store, self.alice.org_id, name, rows, epsilon_budget=budget).id

    def params(self, dataset_id, steps=6, dp=True, eps=4.0):
        return {"pair_id": self.pair_id, "dataset_id": dataset_id, "steps": steps, "batch_size": 4, "max_length": 48,
                "lr": 0.01, "device": "cpu", "dp": {"target_epsilon": eps} if dp else None}

    def ledger(self, dataset_id):
        from storage.ledger import current

        with session_scope(settings=self.settings) as s:
            return current(s, s.get(Dataset, dataset_id))


@pytest.fixture(scope="module")
def env(tmp_path_factory, micro_zoo):
    e = Env(make_settings(tmp_path_factory.mktemp("privacy_charging")), micro_zoo)
    yield e
    stop_all()


ROWS = [{"prompt": f"Question {i}: how many apples?", "answer": str(i)} for i in range(40)]


def test_a_row_with_a_line_separator_validates_and_trains(env):
    rows = ROWS[:20] + [{"prompt": "Janet has 3\u2028apples and 2\u2029pears. How many?", "answer": "5"}] + ROWS[20:]
    ds = env.dataset("u2028", rows)
    view = env.client.wait(env.client.submit("finetune", env.params(ds), env.users["alice"]), timeout=240)
    assert view.status == "succeeded", (view.error, view.log_tail)
    led = env.ledger(ds)
    assert [e["status"] for e in led["entries"]] == ["spent"] and 0 < led["spent"] <= 4.0 + 1e-6


def test_a_job_that_fails_before_its_first_step_gets_its_reservation_back(env):
    ds = env.dataset("lost-file", ROWS)
    with session_scope(settings=env.settings) as s:
        sha = s.get(Dataset, ds).artifact
    env.store.path(sha).unlink()  # the examples cannot be read: the job fails at 0 %
    view = env.client.wait(env.client.submit("finetune", env.params(ds), env.users["alice"]), timeout=240)
    assert view.status == "failed"
    (entry,) = env.ledger(ds)["entries"]
    assert entry["status"] == "released" and "before its first training step" in entry["note"]
    assert env.ledger(ds)["spent"] == 0.0


def test_a_job_stopped_part_way_is_charged_for_the_steps_it_ran(env):
    from gtapp import privacy

    ds = env.dataset("partial", ROWS)
    job_id = env.client.submit("finetune", env.params(ds, steps=400), env.users["alice"])
    reserved = env.ledger(ds)["entries"][0]["epsilon"]

    def cancel_when_started():
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            v = env.client.get(job_id, env.users["alice"])
            if v.status == "running" and (v.progress or 0) >= 0.1:
                env.client.cancel(job_id, env.users["alice"])
                return
            time.sleep(0.05)

    t = threading.Thread(target=cancel_when_started)
    t.start()
    view = env.client.wait(job_id, timeout=240)
    t.join()
    assert view.status == "cancelled", (view.status, view.error)
    (entry,) = env.ledger(ds)["entries"]
    with session_scope(settings=env.settings) as s:
        from storage.models import PrivacyLedgerEntry

        row = s.query(PrivacyLedgerEntry).filter_by(job_id=job_id).one()
        mech = dict(row.mechanism)
    assert entry["status"] == "spent" and "charged for the steps it ran" in entry["note"]
    taken = mech["steps"]
    assert 0 < taken < 400 and mech["steps_planned"] == 400
    assert entry["epsilon"] == pytest.approx(privacy.epsilon(mech["noise_multiplier"], mech["sample_rate"], taken,
                                                             1e-5), rel=1e-9)
    assert entry["epsilon"] < reserved


def test_non_dp_fine_tune_needs_an_explicit_no_dp_choice(env):
    from ui.service import Service

    ds = env.dataset("budgeted", ROWS)
    with pytest.raises(ValueError, match="has a privacy budget .* without DP would void it"):
        env.client.submit("finetune", env.params(ds, dp=False), env.users["alice"])
    assert env.ledger(ds)["entries"] == []
    with session_scope(settings=env.settings) as s:
        assert s.query(Job).filter(Job.params["dataset_id"].as_integer() == ds).count() == 0
    svc = Service(env.settings)
    with pytest.raises(ValueError, match="tick the confirmation"):
        svc.mark_no_dp_required(env.alice, ds, False)
    assert "marked 'no DP required'" in svc.mark_no_dp_required(env.alice, ds, True)
    with session_scope(settings=env.settings) as s:
        d = s.get(Dataset, ds)
        assert d.no_dp_required and d.no_dp_marked_by == env.alice.user_id and d.no_dp_marked_at is not None
    view = env.client.wait(env.client.submit("finetune", env.params(ds, dp=False), env.users["alice"]), timeout=240)
    assert view.status == "succeeded", view.error
    led = env.ledger(ds)
    assert [(e["status"], e["epsilon"]) for e in led["entries"]] == [("spent", "∞")] and led["spent"] == float("inf")
    with pytest.raises(ValueError, match="used without DP"):
        env.client.submit("finetune", env.params(ds), env.users["alice"])
    # a dataset without a budget: non-DP fine-tunes need no choice and leave no entry
    with session_scope(settings=env.settings) as s:
        free = catalog.create_dataset(s, env.store, env.alice.org_id, "free", ROWS).id
    env.client.wait(env.client.submit("finetune", env.params(free, dp=False), env.users["alice"]), timeout=240)
    assert env.ledger(free)["entries"] == []


def test_members_see_no_server_paths_and_admins_can_open_the_traceback(env):
    import io
    import zipfile

    from ui.service import Service

    from storage.models import ModelPairRecord

    ds = env.dataset("gone", ROWS, budget=None)
    missing = env.settings.data_dir / "moved-away" / "tiny"  # a pair whose model folder is gone
    with session_scope(settings=env.settings) as s:
        good = s.get(ModelPairRecord, env.pair_id)
        broken = ModelPairRecord(name="moved", tiny_path=str(missing), llm_path=str(missing.parent / "llm"),
                                 recipe=good.recipe, recipe_fingerprint=good.recipe_fingerprint)
        s.add(broken)
        s.flush()
        broken_id = broken.id
    params = {**env.params(ds, dp=False), "pair_id": broken_id}
    view = env.client.wait(env.client.submit("finetune", params, env.users["alice"]), timeout=240)
    assert view.status == "failed"
    server = str(env.settings.data_dir.resolve().parent)
    for text in (view.error, view.log_tail):
        assert server not in text and str(missing) not in text and "Traceback" not in text, text
    assert "<server path>/tiny" in view.error  # says what was missing, not where
    svc = Service(env.settings)
    with session_scope(settings=env.settings) as s:
        root = principal(s, env.users["root"])
    assert "Traceback" in svc.job_traceback(root, view.id) and str(missing) in svc.job_traceback(root, view.id)
    assert svc.job_traceback(env.alice, view.id) == ""

    ok = env.dataset("fine", ROWS, budget=None)
    done = env.client.wait(env.client.submit("finetune", env.params(ok, dp=False), env.users["alice"]), timeout=240)
    assert done.status == "succeeded", done.error
    _, data = svc.adapter_zip(env.alice, done.outputs["adapter_id"])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if name.endswith(".json"):
                body = zf.read(name).decode()
                assert server not in body and "/tmp/" not in body, (name, body[:300])


def test_a_fine_tune_job_draws_a_live_loss_curve(env):
    from types import SimpleNamespace

    from ui import jobs
    from ui.service import Service
    from workers.client import JobNotFound

    ds = env.dataset("curve", ROWS, budget=None)
    view = env.client.wait(env.client.submit("finetune", env.params(ds, steps=6, dp=False), env.users["alice"]),
                           timeout=240)
    assert view.status == "succeeded", view.error
    svc = Service(env.settings)
    curve = svc.job_curve(env.alice, view.id)
    points = curve["finetune: train loss"]
    assert [p[0] for p in points] == [1, 2, 3, 4, 5, 6] and all(p[1] > 0 for p in points)
    assert points == [[i + 1, pytest.approx(v, rel=1e-6)] for i, v in enumerate(p[1] for p in points)]
    with session_scope(settings=env.settings) as s:
        bob = principal(s, env.users["bob"])
    with pytest.raises(JobNotFound):
        svc.job_curve(bob, view.id)
    svc.who = lambda request: env.alice
    _, _, fig = jobs.job_detail(svc, SimpleNamespace(), view.id)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [1, 2, 3, 4, 5, 6]
