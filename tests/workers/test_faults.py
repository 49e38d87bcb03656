"""Fault injection with real processes: real Celery worker subprocesses, real Redis, real
PostgreSQL, a real full disk; no mocks.

* A worker SIGKILLed mid fine-tune, mid generation and mid mapper training (whole worker, or
  only its pool process as the OOM killer would): the job is requeued and succeeds exactly
  once on the next worker, or fails readably when it had no attempt left.
* The broker (a private Redis without persistence) restarted while jobs are queued, with no
  worker running and with one running: the lost messages are re-sent and every job runs
  exactly once; duplicate messages are harmless.
* The database (a private PostgreSQL) shut down while a job runs and another's message
  arrives, then started again: both finish, once, on the same worker process.
* The artifact store's disk full mid-write (a 4 MiB tmpfs): the job fails saying so, nothing
  partial is left, and the next job succeeds once space is back.

After each: no job lost, none completed twice, no half-written artifact visible, every
failure readable (what the dashboard shows: the job's ``error``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Optional

import pytest
from jobs_helpers import add_users, make_settings
from sqlalchemy import func, select

from storage import catalog
from storage.accounts import principal
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import TERMINAL, Adapter, Evaluation, Job, MapperVersion
from workers.client import JobClient, JobView
from testkit.services import CeleryWorker, wait_until

pytestmark = pytest.mark.slow  # real worker/broker/database restarts: about 70 s for the module on 2 cores

TASK = "math/add-fruit-easy"
SHADOW = {"tasks": [TASK], "subsets": 2, "subset_size": 16, "steps": 4, "snapshot_steps": [2], "seeds": [0],
          "batch_size": 4, "n_train": 64, "lr": 0.01, "device": "cpu"}
FINETUNE = {"steps": 4, "batch_size": 4, "max_length": 64, "lr": 0.01, "device": "cpu"}
# Imported by each worker before it forks its pool: every killed or new pool process would
# otherwise spend seconds importing torch, transformers and peft again.
PRELOAD = ("gtapp.models", "gtapp.finetune", "gtapp.generate", "gtapp.mapper", "gtapp.evaluate", "gtapp.shadow",
           "transformers.models.llama.modeling_llama")


# ------------------------------------------------------------------------------------------ helpers


def _wait_running(client: JobClient, job_id: int, min_progress: float = 0.0, timeout: float = 120.0,
                  stage: Optional[str] = None) -> JobView:
    """Wait until the job runs with at least ``min_progress`` (and, if given, in a stage
    starting with ``stage``); fails if it finishes first."""
    def ready():
        v = _view(client, job_id)
        assert v.status in ("queued", "running"), (v.status, v.error)
        ok = v.status == "running" and v.progress >= min_progress and (stage is None or v.stage.startswith(stage))
        return v if ok else None

    return wait_until(ready, timeout, f"job {job_id} running at {min_progress:.0%}")


def _view(client: JobClient, job_id: int) -> JobView:
    with session_scope(settings=client.settings) as s:
        return JobView.of(s.get(Job, job_id))


def _objects(store: ArtifactStore) -> set[str]:
    return set(store.iter_objects())


def _tree(store: ArtifactStore, sha: str) -> set[str]:
    """A stored folder's objects: its manifest and every file."""
    return {sha} | {entry["sha256"] for entry in store.manifest(sha).values()}


def _run_log(store: ArtifactStore, job_id: int) -> str:
    return (store.run_dir(job_id) / "log.txt").read_text()


def _executions(store: ArtifactStore, job_id: int) -> list[str]:
    """selftest's one line per execution of the job function."""
    path = store.run_dir(job_id) / "executions.log"
    return path.read_text().splitlines() if path.exists() else []


def _assert_store_clean(store: ArtifactStore) -> None:
    """Every visible object is complete (its content matches its name); no partial write is
    left over, nor any object staged by an attempt that did not succeed."""
    assert store.verify() == []
    assert [p.name for p in store.tmp_dir.iterdir()] == []
    assert store.staged_leftovers() == []


def _assert_only_added(store: ArtifactStore, before: set[str], folder_sha: str) -> None:
    """The objects added since ``before`` all belong to the stored folder ``folder_sha`` (the
    job's output); a killed attempt added nothing of its own."""
    assert _objects(store) - before <= _tree(store, folder_sha) <= _objects(store)


def _assert_settled(settings, job_ids: list[int]) -> dict[int, Job]:
    """Every job finished (none lost in queued/running), each failure with a readable error."""
    with session_scope(settings=settings) as s:
        rows = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
        for j in rows.values():
            s.expunge(j)
    assert sorted(rows) == sorted(job_ids)
    for j in rows.values():
        assert j.status in TERMINAL, (j.id, j.status, j.stage)
        if j.status != "succeeded":
            assert j.error and len(j.error) > 20, (j.id, j.error)
            assert j.outputs == {}
    return rows


def _assert_requeued_once(store: ArtifactStore, view: JobView, rescuer: str, doomed: str) -> None:
    """Succeeded on attempt 2 on the rescuer after the reaper requeued attempt 1 (run on the
    doomed worker): two starts, one completion, results from the second attempt."""
    assert view.status == "succeeded" and view.attempts == 2, (view.status, view.attempts, view.error)
    assert view.worker.startswith(rescuer + "@"), view.worker
    log = _run_log(store, view.id)
    assert log.count("=== attempt ") == 2 and f"=== attempt 1/{view.max_attempts}" in log
    assert f"on {doomed}@" in log and "reaper: requeued" in log and "no heartbeat since" in log
    assert log.count(" succeeded in ") == 1  # one completion
    results = json.loads((store.run_dir(view.id) / "results.json").read_text())
    assert results["attempt"] == 2 and results["outputs"]


# ------------------------------------------------------------------------- the micro-zoo model pair


class Lab:
    """A database of its own, users, the micro zoo registered as a model pair, alice's dataset,
    and (made by real jobs on a setup worker) a pair set, a promoted ridge mapper and a TinyLM
    adapter of alice's: what fine-tune, generate and train_mapper jobs need."""

    def __init__(self, settings, micro_zoo: Path, root: Path):
        from gtapp.tasks import make_task

        self.settings, self.root = settings, root
        self.client = JobClient(settings)
        self.store = ArtifactStore(settings.artifacts_dir)
        self.users = add_users(settings)
        with session_scope(settings=settings) as s:
            alice = principal(s, self.users["alice"])
            self.pair_id = catalog.register_pair(s, "micro", micro_zoo).id
            self.dataset_id = catalog.create_dataset(s, self.store, alice.org_id, "alice-sums",
                                                     make_task(TASK, seed=1, n_train=32, n_test=1).train).id
        with self.worker("setup") as worker:
            shadow = self.run("shadow", {"pair_id": self.pair_id, **SHADOW}, worker=worker)
            self.pair_set_id = shadow.outputs["pair_set_id"]
            ridge = self.run("train_mapper", {"pair_set_id": self.pair_set_id, "kind": "ridge", "promote": True},
                             worker=worker)
            self.mapper_id = ridge.outputs["mapper_id"]
            tiny = self.run("finetune", {"pair_id": self.pair_id, "dataset_id": self.dataset_id, **FINETUNE},
                            user="alice", worker=worker)
            self.adapter_id = tiny.outputs["adapter_id"]

    def run(self, kind: str, params: dict, user: str = "root", worker=None) -> JobView:
        view = self.client.wait(self.client.submit(kind, params, self.users[user]), timeout=180)
        assert view.status == "succeeded", (kind, view.error, view.log_tail, worker and worker.log_tail())
        return view

    def submit(self, kind: str, params: dict, user: str = "root", max_attempts: Optional[int] = None) -> int:
        return self.client.submit(kind, params, self.users[user], max_attempts=max_attempts)

    def worker(self, name: str, concurrency: int = 1) -> CeleryWorker:
        return CeleryWorker(self.settings, self.root / f"{name}.log", name=name, concurrency=concurrency,
                            preload=PRELOAD)

    def count(self, model, **where) -> int:
        with session_scope(settings=self.settings) as s:
            q = select(func.count()).select_from(model)
            for key, value in where.items():
                q = q.where(getattr(model, key) == value)
            return s.scalar(q)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, micro_zoo, broker_url, key_prefix, module_pg_url):
    root = tmp_path_factory.mktemp("faults_lab")
    return Lab(make_settings(root, database_url=module_pg_url, broker_url=broker_url, key_prefix=key_prefix + "lab:"),
               micro_zoo, root)


# ------------------------------------------------------------------------------ 1. worker SIGKILL


def test_worker_sigkilled_mid_finetune(lab):
    """The whole worker (main process and pool) is SIGKILLed mid fine-tune, as when its
    machine dies. The job with attempts left is requeued by the next worker's reaper and
    succeeds there once; the one with max_attempts=1 fails saying why. Only the finished
    adapter's objects appear in the store."""
    before = _objects(lab.store)
    params = {"pair_id": lab.pair_id, "dataset_id": lab.dataset_id, **FINETUNE, "steps": 300}
    doomed = lab.worker("doomed-ft", concurrency=2).start()
    try:
        retried = lab.submit("finetune", {**params, "seed": 11}, user="alice")
        single = lab.submit("finetune", {**params, "seed": 12}, user="alice", max_attempts=1)
        _wait_running(lab.client, retried, min_progress=0.05, stage="finetune")
        _wait_running(lab.client, single, min_progress=0.05, stage="finetune")
    finally:
        doomed.kill()
    with lab.worker("rescuer-ft") as rescuer:
        view = lab.client.wait(retried, timeout=120)
        failed = lab.client.wait(single, timeout=30)
        assert view.status == "succeeded", (view.error, rescuer.log_tail())
    _assert_requeued_once(lab.store, view, "rescuer-ft", "doomed-ft")
    assert failed.status == "failed" and failed.attempts == 1 and failed.outputs == {}
    assert "doomed-ft@" in failed.error and "lost (no heartbeat since" in failed.error
    assert "on attempt 1 of 1; giving up" in failed.error
    assert not (lab.store.run_dir(single) / "results.json").exists()
    _assert_settled(lab.settings, [retried, single])
    # one adapter row, for the job that succeeded; only its objects were added to the store
    assert lab.count(Adapter, job_id=retried) == 1 and lab.count(Adapter, job_id=single) == 0
    _assert_store_clean(lab.store)
    _assert_only_added(lab.store, before, view.outputs["adapter_artifact"])


def test_pool_process_sigkilled_mid_generation(lab):
    """Only the worker's pool process is SIGKILLed (the OOM killer's way) while it generates
    an LLM adapter. The worker forks a new pool process; the reaper requeues the job once
    its heartbeat is stale (the message Celery hands back, if it comes first, finds the row
    still running and is skipped); it then succeeds once, with one adapter and one
    evaluation row. The adapter the killed attempt
    had already stored stayed staged in its work folder: it was never visible."""
    before = _objects(lab.store)
    params = {"adapter_ids": [lab.adapter_id], "evaluate_task": TASK, "n_test": 1500, "limit": None,
              "device": "cpu", "seed": 3}
    with lab.worker("gen") as worker:
        job_id = lab.submit("generate", params, user="alice")
        running = _wait_running(lab.client, job_id, min_progress=0.65, stage="evaluating")
        (victim,) = worker.pool_pids()
        os.kill(victim, signal.SIGKILL)
        # stored by the killed attempt, but only staged: nothing new in the store
        assert lab.store.staged_leftovers(job_id) and _objects(lab.store) == before
        view = lab.client.wait(job_id, timeout=120)
        assert view.status == "succeeded", (view.error, worker.log_tail())
        assert worker.proc.poll() is None  # the worker itself lived on
    assert running.worker.startswith("gen@") and f"/{victim}/" in running.worker
    assert view.attempts == 2 and view.worker.startswith("gen@") and f"/{victim}/" not in view.worker
    log = _run_log(lab.store, job_id)
    assert log.count("=== attempt ") == 2 and log.count(" succeeded in ") == 1 and "reaper: requeued" in log
    assert lab.count(Adapter, job_id=job_id) == 1 and lab.count(Evaluation, job_id=job_id) == 1
    _assert_settled(lab.settings, [job_id])
    _assert_store_clean(lab.store)
    _assert_only_added(lab.store, before, view.outputs["adapter_artifact"])


def test_worker_sigkilled_mid_mapper_training(lab):
    """The whole worker is SIGKILLed while it trains a Gradient Transformer; the next worker
    trains it again from scratch and registers exactly one mapper version."""
    before = _objects(lab.store)
    versions = lab.count(MapperVersion, model_pair_id=lab.pair_id)
    params = {"pair_set_id": lab.pair_set_id, "kind": "gt", "device": "cpu", "seed": 2,
              "config": {"steps": 300, "d_model": 16, "n_enc_layers": 1, "n_dec_layers": 1}}
    doomed = lab.worker("doomed-gt").start()
    try:
        job_id = lab.submit("train_mapper", params)
        _wait_running(lab.client, job_id, min_progress=0.2, stage="train mapper")
    finally:
        doomed.kill()
    with lab.worker("rescuer-gt") as rescuer:
        view = lab.client.wait(job_id, timeout=120)
        assert view.status == "succeeded", (view.error, rescuer.log_tail())
    _assert_requeued_once(lab.store, view, "rescuer-gt", "doomed-gt")
    assert lab.count(MapperVersion, job_id=job_id) == 1
    assert lab.count(MapperVersion, model_pair_id=lab.pair_id) == versions + 1
    _assert_settled(lab.settings, [job_id])
    _assert_store_clean(lab.store)
    _assert_only_added(lab.store, before, view.outputs["mapper_artifact"])


# ------------------------------------------------------------------------- 2. broker restarted


def _selftest_jobs(client: JobClient, user: str, n: int, seed0: int, **params) -> list[int]:
    quick = {"steps": 2, "step_s": 0.05, "payload_kb": 16, **params}
    return [client.submit("selftest", {**quick, "seed": seed0 + i}, user) for i in range(n)]


def _wait_all(client: JobClient, ids: list[int], timeout: float) -> dict[int, JobView]:
    """Each job's final view (each waited for up to ``timeout`` seconds)."""
    return {job_id: client.wait(job_id, timeout=timeout) for job_id in ids}


def _dispatches(settings, ids: list[int]) -> dict[int, int]:
    with session_scope(settings=settings) as s:
        return dict(s.execute(select(Job.id, Job.dispatches).where(Job.id.in_(ids))).all())


def test_broker_restart_loses_no_queued_job(private_redis, fresh_pg_url, tmp_path):
    """A Redis without persistence forgets every queued message when it restarts. The
    database knows which jobs are still queued: the reaper re-sends those sent before the
    broker's current epoch, with no worker running at the restart and with one running, and
    (a slower safety net) those left unclaimed too long. Every job runs exactly once;
    duplicate messages are skipped by the claim."""
    import redis

    from workers.reaper import reap

    def broker_settings(**kw):
        return make_settings(tmp_path / "broker", database_url=fresh_pg_url, broker_url=private_redis.url,
                             key_prefix="faults:", **kw)

    settings = broker_settings()
    users = add_users(settings)
    alice = users["alice"]
    client = JobClient(settings)
    store = ArtifactStore(settings.artifacts_dir)
    r = redis.Redis.from_url(private_redis.url)

    # No worker: four messages wait in Redis; the restart loses them (the rows stay queued).
    lost = _selftest_jobs(client, alice, 4, seed0=0)
    assert r.llen("faults:cpu") == 4
    private_redis.restart()
    assert r.dbsize() == 0
    # A reaper pass (any worker's, or the dashboard's) starts the new epoch and re-sends them.
    actions = reap(settings)
    assert sorted(a["job_id"] for a in actions if a["action"] == "redispatched") == sorted(lost), actions
    assert all("not after the start of the broker's current epoch" in a["reason"] for a in actions)
    assert r.llen("faults:cpu") == 4 and reap(settings) == []  # once
    # The messages vanish again without a restart (as an eviction would): only the
    # unclaimed-too-long rule can find them; its wait doubles with each re-send (here 0.5 s
    # after the first send, so 1 s after this second one).
    assert r.delete("faults:cpu") == 1
    time.sleep(1.1)
    impatient = broker_settings(redispatch_unclaimed_after_s=0.5)
    actions = reap(impatient)
    assert sorted(a["job_id"] for a in actions) == sorted(lost), actions
    assert all("still not claimed by any worker" in a["reason"] for a in actions)
    assert r.llen("faults:cpu") == 4 and reap(impatient) == []  # now 2 s until the next one

    with CeleryWorker(settings, tmp_path / "worker.log", name="steady") as worker:
        first = _wait_all(client, lost, timeout=60)
        # A worker running a long job while the broker restarts, four jobs queued behind it:
        # the running job goes on (its state is in the database); the worker reconnects and
        # its own reaper re-sends the four lost messages.
        long = client.submit("selftest", {"steps": 30, "step_s": 0.1, "payload_kb": 64, "seed": 100}, alice)
        _wait_running(client, long, min_progress=0.1)
        behind = _selftest_jobs(client, alice, 4, seed0=200)
        private_redis.restart()
        second = _wait_all(client, [long] + behind, timeout=90)
        # Duplicate messages: two more copies of a job's message run it once.
        from workers.dispatch import send

        dup = _selftest_jobs(client, alice, 1, seed0=300, steps=10)[0]
        send(settings, dup, "selftest", "cpu")
        send(settings, dup, "selftest", "cpu")
        third = _wait_all(client, [dup], timeout=60)
        wait_until(lambda: worker.log_tail(20000).count(f"job {dup} not claimed") == 2, 20, "both duplicates")
        log = worker.log_tail(200000)

    views = {**first, **second, **third}
    ids = list(views)
    assert all(v.status == "succeeded" and v.attempts == 1 for v in views.values()), \
        [(v.id, v.status, v.error) for v in views.values()]
    for job_id in ids:  # each job's function ran exactly once
        assert len(_executions(store, job_id)) == 1, (job_id, _executions(store, job_id))
    sends = _dispatches(settings, ids)
    assert all(sends[j] == 3 for j in lost) and all(sends[j] == 2 for j in behind), sends
    assert sends[long] == 1  # running, not queued: never re-sent
    assert sends[dup] == 3
    assert log.count("re-sent to the broker") >= len(behind) and "Connection to broker lost" in log
    _assert_settled(settings, ids)
    _assert_store_clean(store)
    assert _objects(store) == {v.outputs["artifact"] for v in views.values()}


# ----------------------------------------------------------------------- 3. database restarted


def test_database_restart_while_jobs_run(private_postgres, broker_url, key_prefix, tmp_path):
    """PostgreSQL is shut down (every connection dropped) while one job runs, and a message
    for another queued job reaches the worker during the outage; it comes back a few seconds
    later. The running job goes on without writing its progress and waits for the database
    to record its result; the delivered one waits for the database to claim it. Both finish
    on their first attempt on the same worker process, which then takes new jobs."""
    from workers.celery_app import get_app
    from workers.broker import task_name

    settings = make_settings(tmp_path / "db", database_url=private_postgres.url(), broker_url=broker_url,
                             key_prefix=key_prefix + "dbrestart:", heartbeat_stale_s=30.0, db_retry_s=60.0)
    users = add_users(settings)
    alice = users["alice"]
    client = JobClient(settings)
    store = ArtifactStore(settings.artifacts_dir)
    # A queued row whose message goes to a queue no worker reads: the test delivers it later.
    parked_client = JobClient(settings.model_copy(update={"broker_key_prefix": key_prefix + "parked:"}))
    with CeleryWorker(settings, tmp_path / "worker.log", name="survivor", concurrency=2) as worker:
        main_pid, pool = worker.proc.pid, sorted(worker.pool_pids())
        running = client.submit("selftest", {"steps": 20, "step_s": 0.1, "payload_kb": 256, "seed": 1}, alice)
        parked = parked_client.submit("selftest", {"steps": 3, "step_s": 0.05, "payload_kb": 16, "seed": 2}, alice)
        _wait_running(client, running, min_progress=0.25)
        private_postgres.stop("fast")
        get_app(settings).send_task(task_name("selftest"), args=[parked], queue="cpu",
                                    task_id=f"gtapp-job-{parked}-during-outage")
        time.sleep(4.0)  # the running job finishes its steps meanwhile
        private_postgres.start()
        views = _wait_all(client, [running, parked], timeout=90)
        views.update(_wait_all(client, _selftest_jobs(client, alice, 2, seed0=3), timeout=60))
        assert worker.proc.poll() is None and worker.proc.pid == main_pid
        assert sorted(worker.pool_pids()) == pool  # not even a pool process was replaced
        log = worker.log_tail(200000)
    for v in views.values():
        assert v.status == "succeeded" and v.attempts == 1, (v.id, v.status, v.error, log[-3000:])
        assert v.worker.startswith("survivor@")
        assert len(_executions(store, v.id)) == 1
        assert _run_log(store, v.id).count(" succeeded in ") == 1
    run_log = _run_log(store, running)
    assert "database unreachable" in run_log and "database reachable again" in run_log
    # the message delivered during the outage is the one that ran it, after waiting to claim it
    assert f"claiming job {parked}: database unreachable" in log
    assert f"[gtapp-job-{parked}-during-outage] succeeded in" in log and _dispatches(settings, [parked])[parked] == 1
    _assert_settled(settings, list(views))
    _assert_store_clean(store)
    assert _objects(store) == {v.outputs["artifact"] for v in views.values()}


# ------------------------------------------------------------------------------ 4. disk full


def test_disk_full_while_storing_an_artifact(tiny_disk, fresh_pg_url, broker_url, key_prefix, tmp_path):
    """The artifact store lives on a 4 MiB disk. A job that stores 8 MiB fails, saying the
    disk is full and where; its partial object is gone and its space is back. A disk too full
    to even write a job's run folder fails that job readably too. Once space is freed, the
    next job succeeds."""
    import shutil

    settings = make_settings(tmp_path / "disk", database_url=fresh_pg_url, broker_url=broker_url,
                             key_prefix=key_prefix + "disk:", artifact_root=tiny_disk)
    users = add_users(settings)
    alice = users["alice"]
    client = JobClient(settings)
    store = ArtifactStore(settings.artifacts_dir)
    empty = shutil.disk_usage(tiny_disk).used
    with CeleryWorker(settings, tmp_path / "worker.log", name="disk") as worker:
        big = client.wait(client.submit("selftest", {"steps": 8, "step_s": 0.0, "payload_kb": 8192}, alice), 60)
        assert big.status == "failed" and big.attempts == 1, (big.status, big.error, worker.log_tail())
        assert big.error.startswith("disk full: the artifact store at ") and tiny_disk.name in big.error
        assert str(tiny_disk) not in big.error  # the store is named, its server path is not shown
        assert "No space left on device" in big.error and "nothing was stored" in big.error
        assert "error: disk full" in big.log_tail  # the log the dashboard shows says so too
        assert not (store.run_dir(big.id) / "results.json").exists()
        # the run folder's failure record (operators only) keeps the unredacted error
        failure = json.loads((store.run_dir(big.id) / "failure.json").read_text())["error"]
        assert str(tiny_disk) in failure and failure.replace(str(tiny_disk.parent), "<server path>") == big.error
        assert _objects(store) == set() and shutil.disk_usage(tiny_disk).used < empty + 256 * 1024

        # Full before a job can even write its run folder.
        filler = tiny_disk / "filler"
        with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError, match="No space left"):
            while True:  # unbuffered: nothing left to flush when the file is closed
                fh.write(b"\0" * 65536)
        starved = client.wait(client.submit("selftest", {"steps": 1, "payload_kb": 1}, alice), 60)
        assert starved.status == "failed" and starved.attempts == 1
        assert starved.error.startswith("could not prepare the job's run folder: disk full: "), starved.error
        assert "No space left on device" in starved.error

        filler.unlink()
        small = client.wait(client.submit("selftest", {"steps": 2, "payload_kb": 512}, alice), 60)
        assert small.status == "succeeded", (small.error, worker.log_tail())
    _assert_settled(settings, [big.id, starved.id, small.id])
    _assert_store_clean(store)
    assert _objects(store) == {small.outputs["artifact"]}
    assert store.size(small.outputs["artifact"]) == 512 * 1024
