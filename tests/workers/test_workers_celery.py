"""Jobs through a real Redis broker and real Celery worker processes, on SQLite and on
PostgreSQL: completion, a real fine-tune with DP and the privacy ledger, 100 jobs exactly
once, cancel, a worker SIGKILLed mid-job, and an unreachable broker."""

from __future__ import annotations

import json
import time

import pytest
from jobs_helpers import add_users, make_settings
from sqlalchemy import func, select

from storage import catalog, ledger
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import Adapter, Dataset, Evaluation, Job, PrivacyLedgerEntry
from workers.celery_app import make_celery
from workers.client import JobClient, QueueUnavailable
from testkit.services import CeleryWorker, free_port


def _wait_all(client: JobClient, ids: list[int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    with session_scope(settings=client.settings) as s:
        pass
    while True:
        with session_scope(settings=client.settings) as s:
            rows = dict(s.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())
        if all(v in ("succeeded", "failed", "cancelled") for v in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _wait_running(client: JobClient, job_id: int, user: str, min_progress: float = 0.0, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = client.get(job_id, user)
        if v.status == "running" and v.progress >= min_progress:
            return v
        assert v.status in ("queued", "running"), (v.status, v.error)
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not reach {min_progress:.0%}")


def test_job_completes_through_real_worker(celery_backend):
    settings, worker = celery_backend
    users = add_users(settings)
    client = JobClient(settings)
    job_id = client.submit("selftest", {"steps": 5, "step_s": 0.02, "seed": 3}, users["alice"])
    view = client.wait(job_id, timeout=60)
    assert view.status == "succeeded", (view.error, worker.log_tail())
    assert view.worker.startswith(worker.name + "@"), view.worker  # ran in the Celery worker process
    assert view.attempts == 1 and view.progress == 1.0
    # the Celery task itself reports the outcome in the Redis result backend
    assert make_celery(settings).AsyncResult(f"gtapp-job-{job_id}-1").get(timeout=10) == "succeeded"
    results = json.loads((ArtifactStore(settings.artifacts_dir).run_dir(job_id) / "results.json").read_text())
    assert results["outputs"]["artifact"] == view.outputs["artifact"]


def _examples(n: int) -> list[dict]:
    return [{"prompt": f"Q: what is {i} plus {i}?\nA:", "answer": f" {2 * i}"} for i in range(n)]


@pytest.mark.slow
def test_dp_finetune_through_real_worker_and_ledger(celery_sqlite, micro_zoo):
    pytest.importorskip("gtapp.finetune", reason="gtapp.finetune not present in this version")
    settings, worker = celery_sqlite
    users = add_users(settings)
    client = JobClient(settings)
    store = ArtifactStore(settings.artifacts_dir)
    with session_scope(settings=settings) as s:
        from storage.accounts import principal

        alice = principal(s, users["alice"])
        pair = catalog.register_pair(s, f"micro-{users['alice']}", micro_zoo)
        ds = catalog.create_dataset(s, store, alice.org_id, "sums", _examples(32), user_id=alice.user_id,
                                    epsilon_budget=3.0, delta=1e-5)
        pair_id, ds_id = pair.id, ds.id
    params = {"pair_id": pair_id, "dataset_id": ds_id, "steps": 4, "batch_size": 4, "max_length": 32,
              "lr": 0.01, "seed": 1, "dp": {"target_epsilon": 2.0, "max_grad_norm": 1.0}, "device": "cpu"}
    job_id = client.submit("finetune", params, users["alice"])
    with session_scope(settings=settings) as s:  # reserved before it ran
        entry = s.scalars(select(PrivacyLedgerEntry).where(PrivacyLedgerEntry.job_id == job_id)).one()
        assert entry.status == "reserved" and entry.epsilon == pytest.approx(2.0, rel=1e-3)
    view = client.wait(job_id, timeout=240)
    assert view.status == "succeeded", (view.error, view.log_tail, worker.log_tail())
    record = view.outputs["record"]
    assert record["dp"] and 0 < record["epsilon"] <= 2.0 + 1e-6
    with session_scope(settings=settings) as s:
        adapter = s.get(Adapter, view.outputs["adapter_id"])
        assert adapter.origin == "produced" and adapter.job_id == job_id and adapter.org_id == alice.org_id
        entry = s.scalars(select(PrivacyLedgerEntry).where(PrivacyLedgerEntry.job_id == job_id)).one()
        assert entry.status == "spent" and entry.epsilon == pytest.approx(record["epsilon"])
        assert entry.mechanism["noise_multiplier"] == pytest.approx(record["noise_multiplier"])
        summary = ledger.summary(s, s.get(Dataset, ds_id))
        assert summary["spent"] == pytest.approx(record["epsilon"], rel=1e-6)
    files = store.materialize(adapter.artifact, settings.data_dir / "adapter_copy")
    assert (files / "adapter_config.json").is_file() and (files / "adapter_model.safetensors").is_file()
    # A second DP job asking ε=2.9 would take the dataset past its budget of 3 (even with
    # RDP composition, which is tighter than adding ε's): refused before anything is queued.
    with session_scope(settings=settings) as s:
        jobs_before = s.scalar(select(func.count()).select_from(Job))
    greedy = {**params, "dp": {"target_epsilon": 2.9}}
    with pytest.raises(ledger.BudgetExceeded, match=r"budget ε=3 .*already spent ε=.*requests ε=2\.9"):
        client.submit("finetune", greedy, users["alice"])
    with session_scope(settings=settings) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == jobs_before  # nothing queued or running
    # bob (another organisation) cannot fine-tune on alice's dataset: it does not exist for him
    with pytest.raises(LookupError, match="dataset .* not found"):
        client.submit("finetune", params, users["bob"])
    # evaluate the produced adapter on alice's dataset, through the same worker
    ev_id = client.submit("evaluate", {"pair_id": pair_id, "model": "tiny", "adapter_id": adapter.id,
                                       "dataset_id": ds_id, "limit": 8, "batch_size": 8, "device": "cpu"},
                          users["alice"])
    ev = client.wait(ev_id, timeout=120)
    assert ev.status == "succeeded", (ev.error, ev.log_tail)
    assert ev.outputs["method"] == "adapter_tiny" and ev.outputs["n"] == 8 and 0.0 <= ev.outputs["value"] <= 1.0
    with session_scope(settings=settings) as s:
        row = s.get(Evaluation, ev.outputs["evaluation_id"])
        assert row.job_id == ev_id and row.epsilon == pytest.approx(record["epsilon"]) and row.task == "dataset:sums"
    with pytest.raises(LookupError, match="not found"):  # bob cannot use alice's adapter or dataset
        client.submit("evaluate", {"pair_id": pair_id, "model": "tiny", "adapter_id": adapter.id,
                                   "dataset_id": ds_id}, users["bob"])
    with session_scope(settings=settings) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == jobs_before + 1  # only alice's evaluate


def test_hundred_jobs_finish_exactly_once(celery_pg):
    settings, worker = celery_pg
    users = add_users(settings)
    client = JobClient(settings)
    t0 = time.monotonic()
    ids = [client.submit("selftest", {"steps": 1, "step_s": 0.0, "payload_kb": 1, "seed": i}, users["alice"])
           for i in range(100)]
    statuses = _wait_all(client, ids, timeout=150)
    elapsed = time.monotonic() - t0
    assert list(statuses.values()).count("succeeded") == 100, (statuses, worker.log_tail())
    store = ArtifactStore(settings.artifacts_dir)
    with session_scope(settings=settings) as s:
        attempts = dict(s.execute(select(Job.id, Job.attempts).where(Job.id.in_(ids))).all())
    assert set(attempts.values()) == {1}
    for job_id in ids:  # each job's function ran once
        assert (store.run_dir(job_id) / "executions.log").read_text().count("attempt=") == 1
    assert len({client.get(i, users["alice"]).outputs["artifact"] for i in ids}) == 100  # distinct seeds
    print(f"100 jobs in {elapsed:.1f}s")


def test_cancel_stops_a_running_job_quickly(celery_sqlite):
    settings, worker = celery_sqlite
    users = add_users(settings)
    client = JobClient(settings)
    job_id = client.submit("selftest", {"steps": 400, "step_s": 0.05}, users["alice"])
    _wait_running(client, job_id, users["alice"], min_progress=0.01)
    t0 = time.monotonic()
    client.cancel(job_id, users["alice"])
    view = client.wait(job_id, timeout=30)
    assert view.status == "cancelled" and time.monotonic() - t0 < 5
    assert view.error == "cancelled by request" and view.outputs == {}
    assert not (ArtifactStore(settings.artifacts_dir).run_dir(job_id) / "results.json").exists()
    assert make_celery(settings).AsyncResult(f"gtapp-job-{job_id}-1").get(timeout=10) == "cancelled"


def test_sigkilled_worker_job_is_requeued_or_failed(tmp_path, broker_url, key_prefix):
    """Two jobs run on a worker that is SIGKILLed mid-job. The one with attempts left is
    requeued by the reaper and finishes on a new worker; the one without is failed with the
    reason. No artifact is ever half-written."""
    settings = make_settings(tmp_path / "kill", broker_url=broker_url, key_prefix=key_prefix + "kill:")
    users = add_users(settings)
    client = JobClient(settings)
    store = ArtifactStore(settings.artifacts_dir)
    a = CeleryWorker(settings, tmp_path / "a.log", name="doomed", concurrency=2).start()
    try:
        params = {"steps": 30, "step_s": 0.1, "payload_kb": 4096}
        retried = client.submit("selftest", {**params, "seed": 1}, users["alice"])
        single = client.submit("selftest", {**params, "seed": 2}, users["alice"], max_attempts=1)
        _wait_running(client, retried, users["alice"], min_progress=0.2)
        _wait_running(client, single, users["alice"], min_progress=0.2)
    finally:
        a.kill()
    with CeleryWorker(settings, tmp_path / "b.log", name="rescuer"):
        view = client.wait(retried, timeout=90)
        failed = client.wait(single, timeout=30)
    assert view.status == "succeeded" and view.attempts == 2 and view.worker.startswith("rescuer@"), view
    assert failed.status == "failed" and failed.attempts == 1
    assert "lost (no heartbeat since" in failed.error and "giving up" in failed.error and "doomed@" in failed.error
    assert failed.outputs == {} and not (store.run_dir(single) / "results.json").exists()
    runs = (store.run_dir(retried) / "executions.log").read_text()
    assert runs.count("attempt=1 worker=doomed@") == 1 and runs.count("attempt=2 worker=rescuer@") == 1
    assert "reaper: requeued" in (store.run_dir(retried) / "log.txt").read_text()
    assert store.verify() == []  # every stored object is complete and matches its hash
    assert store.size(view.outputs["artifact"]) == 4096 * 1024
    assert set(store.iter_objects()) == {view.outputs["artifact"]}  # the killed runs published nothing


def test_unreachable_broker_fails_submission_clearly(tmp_path):
    settings = make_settings(tmp_path / "nobroker", broker_url=f"redis://127.0.0.1:{free_port()}/0")
    users = add_users(settings)
    client = JobClient(settings)
    t0 = time.monotonic()
    with pytest.raises(QueueUnavailable, match="unreachable") as ei:
        client.submit("selftest", {"steps": 1}, users["alice"])
    assert time.monotonic() - t0 < 15
    assert "Start Redis" in str(ei.value)
    with session_scope(settings=settings) as s:
        rows = s.execute(select(Job.status, Job.error)).all()
    assert len(rows) == 1 and rows[0][0] == "failed" and "unreachable" in rows[0][1]


def test_celery_reliability_settings(celery_sqlite):
    settings, _ = celery_sqlite
    conf = make_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert {q.name for q in conf.task_queues} == {"cpu", "gpu"}
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit > conf.task_soft_time_limit
    tasks = make_celery(settings).tasks
    assert {"gtapp.job.selftest", "gtapp.job.finetune", "gtapp.job.evaluate", "gtapp.job.shadow"} <= set(tasks)


def test_soft_time_limit_fails_the_job_readably(tmp_path, broker_url, key_prefix):
    settings = make_settings(tmp_path / "limits", broker_url=broker_url, key_prefix=key_prefix + "limits:",
                             job_soft_time_limit_s=2, job_hard_time_limit_s=6)
    users = add_users(settings)
    client = JobClient(settings)
    with CeleryWorker(settings, tmp_path / "w.log", name="limited") as worker:
        job_id = client.submit("selftest", {"steps": 200, "step_s": 0.1}, users["alice"])
        view = client.wait(job_id, timeout=60)
    assert view.status == "failed", (view, worker.log_tail())
    assert view.error.startswith("time limit exceeded") and view.attempts == 1 and view.outputs == {}
