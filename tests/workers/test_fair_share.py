"""One member cannot starve the other organisations (security finding: six 1,000,000-step
fine-tunes from one member held every worker): caps on queued + running jobs per
organisation and per user, a bound on a member job's steps, and round-robin across
organisations when a worker frees up — in the embedded worker and in real Celery workers."""

from __future__ import annotations

import time

import pytest
from jobs_helpers import add_users, make_settings
from sqlalchemy import select

from storage.db import session_scope
from storage.models import Job
from workers.client import JobClient, JobLimit
from testkit.services import CeleryWorker

QUICK = {"steps": 2, "step_s": 0.05, "payload_kb": 1}


def _start_order(settings, ids: list[int]) -> list[int]:
    with session_scope(settings=settings) as s:
        rows = s.execute(select(Job.id, Job.started_at).where(Job.id.in_(ids))).all()
    return [i for i, _ in sorted(rows, key=lambda r: r[1])]


def _wait(client: JobClient, ids: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for i in ids:
        assert client.wait(i, timeout=max(1.0, deadline - time.monotonic())).status == "succeeded"


def test_caps_per_user_per_organisation_and_on_steps(tmp_path):
    settings = make_settings(tmp_path / "d", max_active_jobs_per_user=3, max_active_jobs_per_org=5,
                             max_job_steps=500)
    users = add_users(settings)
    client = JobClient(settings, run_embedded=False)  # nothing runs: every job stays queued
    for i in range(3):
        client.submit("selftest", {**QUICK, "seed": i}, users["alice"])
    with pytest.raises(JobLimit, match=r"you already have 3 jobs queued or running \(the limit is 3\)"):
        client.submit("selftest", QUICK, users["alice"])
    # a colleague in the same organisation fills the organisation's share, then hits its cap
    from storage import accounts
    from storage.models import Organisation

    with session_scope(settings=settings) as s:
        org = s.get(Organisation, accounts.principal(s, users["alice"]).org_id).name
        accounts.create_user(s, org, "carol-fair", "password123", "member")
    for i in range(2):
        client.submit("selftest", {**QUICK, "seed": 10 + i}, "carol-fair")
    with pytest.raises(JobLimit, match=r"your organisation already has 5 jobs queued or running"):
        client.submit("selftest", QUICK, "carol-fair")
    # another organisation is not held back by them
    bob_job = client.submit("selftest", QUICK, users["bob"])
    # a member's job may not ask for more steps than the bound; an admin's may
    with pytest.raises(JobLimit, match=r"600 training steps asked for; a job may run at most 500"):
        client.submit("selftest", {**QUICK, "steps": 600}, users["bob"])
    client.submit("selftest", {**QUICK, "steps": 600}, users["root"])
    # a cancelled job frees its place in the share
    client.cancel(bob_job, users["bob"])
    with session_scope(settings=settings) as s:
        n = s.query(Job).filter(Job.status == "queued").count()
    assert n == 6


def test_embedded_worker_serves_organisations_round_robin(tmp_path):
    from workers.embedded import EmbeddedWorker

    settings = make_settings(tmp_path / "d", embedded_workers=1)
    users = add_users(settings)
    client = JobClient(settings, run_embedded=False)
    alice = [client.submit("selftest", {**QUICK, "seed": i}, users["alice"]) for i in range(5)]
    bob = [client.submit("selftest", {**QUICK, "seed": 9}, users["bob"])]
    worker = EmbeddedWorker(settings).start()
    try:
        _wait(client, alice + bob)
    finally:
        worker.stop()
    order = _start_order(settings, alice + bob)
    # FIFO would run bob's job sixth; fair share runs it as soon as alice's first job ends
    assert order[:3] == [alice[0], bob[0], alice[1]], order


@pytest.mark.slow
def test_celery_workers_serve_organisations_round_robin(tmp_path, broker_url, key_prefix):
    settings = make_settings(tmp_path / "d", broker_url=broker_url, key_prefix=key_prefix + "fair:")
    users = add_users(settings)
    client = JobClient(settings)
    # queued before any worker runs, as when every worker is busy with something else
    alice = [client.submit("selftest", {**QUICK, "seed": i}, users["alice"]) for i in range(5)]
    bob = [client.submit("selftest", {**QUICK, "seed": 9}, users["bob"]),
           client.submit("selftest", {**QUICK, "seed": 8}, users["bob"])]
    with CeleryWorker(settings, tmp_path / "worker.log", name="fair", concurrency=1) as w:
        try:
            _wait(client, alice + bob)
        except AssertionError:
            raise AssertionError(w.log_tail())
    order = _start_order(settings, alice + bob)
    assert order[:4] == [alice[0], bob[0], alice[1], bob[1]], order
    assert sorted(order) == sorted(alice + bob)  # every job ran, once each
