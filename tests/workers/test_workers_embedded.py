"""The job API in embedded mode (no broker: an in-process worker on SQLite), plus the
runner's and reaper's rules, which the Celery workers share."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from jobs_helpers import add_users
from sqlalchemy import update

from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import Job, utcnow
from workers.client import JobClient, JobNotAvailable, JobNotFound
from workers.embedded import get_embedded, stop_all
from workers.reaper import reap
from workers.runner import run_job


@pytest.fixture
def client(embedded_settings):
    c = JobClient(embedded_settings)
    yield c
    stop_all()


def test_embedded_mode_runs_a_job(client, embedded_settings):
    assert embedded_settings.embedded
    users = add_users(embedded_settings)
    job_id = client.submit("selftest", {"steps": 4, "step_s": 0.02, "seed": 7}, users["alice"])
    view = client.wait(job_id, timeout=60)
    assert view.status == "succeeded", view.error
    assert view.progress == 1.0 and view.attempts == 1 and view.worker.startswith("embedded/")
    assert view.params["seed"] == 7 and view.finished_at >= view.started_at >= view.created_at
    store = ArtifactStore(embedded_settings.artifacts_dir)
    assert store.size(view.outputs["artifact"]) == 64 * 1024
    run = store.run_dir(job_id)
    config = json.loads((run / "config.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert config["kind"] == "selftest" and config["seed"] == 7
    assert results["outputs"] == view.outputs and results["status"] == "succeeded"
    assert "succeeded" in (run / "log.txt").read_text() and "succeeded" in view.log_tail
    # same seed, same bytes: the run is reproducible
    again = client.wait(client.submit("selftest", {"steps": 4, "step_s": 0, "seed": 7}, users["alice"]), 60)
    assert again.outputs["artifact"] == view.outputs["artifact"]


def test_failed_job_keeps_error_readable_and_no_outputs(client, embedded_settings):
    users = add_users(embedded_settings)
    job_id = client.submit("selftest", {"steps": 5, "step_s": 0, "fail_at": 2}, users["alice"])
    view = client.wait(job_id, timeout=60)
    assert view.status == "failed" and view.outputs == {}
    assert view.error == "RuntimeError: selftest was asked to fail at step 2"
    run = ArtifactStore(embedded_settings.artifacts_dir).run_dir(job_id)
    assert not (run / "results.json").exists()
    assert json.loads((run / "failure.json").read_text())["error"] == view.error
    assert "Traceback" in (run / "log.txt").read_text() or "selftest was asked" in (run / "log.txt").read_text()
    assert list(ArtifactStore(embedded_settings.artifacts_dir).iter_objects()) == []  # nothing half-published
    retry_id = client.retry(job_id, users["alice"])
    assert retry_id != job_id and client.get(job_id, users["alice"]).status == "failed"  # history intact


def test_cancel_running_and_queued(client, embedded_settings):
    users = add_users(embedded_settings)
    running = client.submit("selftest", {"steps": 200, "step_s": 0.05}, users["alice"])
    queued = client.submit("selftest", {"steps": 1}, users["alice"])  # one embedded thread: waits behind
    deadline = time.monotonic() + 30
    while client.get(running, users["alice"]).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.cancel(queued, users["alice"]).status == "cancelled"
    t0 = time.monotonic()
    client.cancel(running, users["alice"])
    view = client.wait(running, timeout=30)
    assert view.status == "cancelled" and time.monotonic() - t0 < 5
    assert view.outputs == {} and view.progress < 1.0


def test_tenancy_and_permissions(client, embedded_settings):
    users = add_users(embedded_settings)
    a = client.submit("selftest", {"steps": 1, "step_s": 0}, users["alice"])
    b = client.submit("selftest", {"steps": 1, "step_s": 0}, users["bob"])
    client.wait(a, 60), client.wait(b, 60)
    assert [j.id for j in client.list(users["alice"])] == [a]
    assert [j.id for j in client.list(users["bob"])] == [b]
    assert {j.id for j in client.list(users["root"])} >= {a, b}
    with pytest.raises(JobNotFound):
        client.get(b, users["alice"])
    with pytest.raises(JobNotFound):
        client.cancel(b, users["alice"])
    assert client.get(b, users["root"]).id == b
    for admin_kind in ("shadow", "train_mapper"):
        with pytest.raises((PermissionError, JobNotAvailable)):
            client.submit(admin_kind, {}, users["alice"])
    kinds = {k["kind"]: k for k in client.kinds(users["alice"])}
    assert not kinds["shadow"]["allowed"] and kinds["selftest"]["allowed"] and kinds["shadow"]["admin_only"]


def test_bad_submissions_are_refused_without_a_row(client, embedded_settings):
    users = add_users(embedded_settings)
    with pytest.raises(ValueError, match="unknown job kind"):
        client.submit("rm -rf", {}, users["alice"])
    with pytest.raises(ValueError, match="unknown parameter"):
        client.submit("selftest", {"stpes": 3}, users["alice"])
    with pytest.raises(ValueError, match="should be int"):
        client.submit("selftest", {"steps": "3"}, users["alice"])
    with pytest.raises(ValueError, match="shadow needs pair_id"):
        client.submit("shadow", {}, users["root"])
    assert client.list(users["root"]) == []


def test_claim_is_exactly_once(embedded_settings):
    """A second delivery of the same job (duplicate message, redelivery) is skipped."""
    users = add_users(embedded_settings)
    with session_scope(settings=embedded_settings) as s:
        from storage.accounts import principal

        p = principal(s, users["alice"])
        job = Job(kind="selftest", params={"steps": 1, "step_s": 0.0, "payload_kb": 1, "fail_at": None, "seed": 0},
                  org_id=p.org_id, user_id=p.user_id)
        s.add(job)
        s.flush()
        job_id = job.id
    assert run_job(job_id, settings=embedded_settings) == "succeeded"
    assert run_job(job_id, settings=embedded_settings) == "skipped"
    run = ArtifactStore(embedded_settings.artifacts_dir).run_dir(job_id)
    assert (run / "executions.log").read_text().count("attempt=") == 1


def _running_job(settings, users, attempts=1, max_attempts=3, cancel=False, age_s=10.0) -> int:
    """A row as a dead worker leaves it: running, heartbeat in the past."""
    with session_scope(settings=settings) as s:
        from storage.accounts import principal

        p = principal(s, users["alice"])
        old = utcnow() - dt.timedelta(seconds=age_s)
        job = Job(kind="selftest", params={"steps": 1, "step_s": 0.0, "payload_kb": 1, "fail_at": None, "seed": 0},
                  org_id=p.org_id, user_id=p.user_id, status="running", attempts=attempts,
                  max_attempts=max_attempts, worker="ghost/1/dead", started_at=old, heartbeat_at=old,
                  cancel_requested=cancel)
        s.add(job)
        s.flush()
        return job.id


def test_reaper_requeues_fails_or_cancels_lost_jobs(embedded_settings):
    users = add_users(embedded_settings)
    requeue = _running_job(embedded_settings, users, attempts=1, max_attempts=3)
    give_up = _running_job(embedded_settings, users, attempts=3, max_attempts=3)
    cancel = _running_job(embedded_settings, users, cancel=True)
    fresh = _running_job(embedded_settings, users, age_s=0.0)
    actions = {a["job_id"]: a for a in reap(embedded_settings)}
    assert actions[requeue]["action"] == "requeued"
    assert actions[give_up]["action"] == "failed" and "ghost/1/dead" in actions[give_up]["reason"]
    assert actions[cancel]["action"] == "cancelled"
    assert fresh not in actions
    c = JobClient(embedded_settings)
    try:
        get_embedded(embedded_settings)  # a worker comes up (e.g. the dashboard restarts) and runs it
        view = c.wait(requeue, timeout=60)
        assert view.status == "succeeded" and view.attempts == 2
        failed = c.get(give_up, users["alice"])
        assert failed.status == "failed" and "giving up" in failed.error and "attempt 3 of 3" in failed.error
        assert c.get(cancel, users["alice"]).status == "cancelled"
    finally:
        stop_all()


def test_worker_that_lost_its_row_stops(embedded_settings):
    """If the reaper gave the job away while the old worker was merely slow, the old run
    stops at its next progress report and records nothing."""
    users = add_users(embedded_settings)
    c = JobClient(embedded_settings)
    try:
        job_id = c.submit("selftest", {"steps": 100, "step_s": 0.05}, users["alice"])
        deadline = time.monotonic() + 30
        while c.get(job_id, users["alice"]).progress < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        with session_scope(settings=embedded_settings) as s:  # as if another worker took over
            s.execute(update(Job).where(Job.id == job_id).values(worker="someone-else/2/x"))
        time.sleep(2.0)
        view = c.get(job_id, users["alice"])
        assert view.status == "running" and view.worker == "someone-else/2/x" and view.outputs == {}
        log = (ArtifactStore(embedded_settings.artifacts_dir).run_dir(job_id) / "log.txt").read_text()
        assert "taken over" in log
        c.cancel(job_id, users["alice"])  # the reaper would requeue it once 'someone-else' goes quiet
    finally:
        stop_all()
