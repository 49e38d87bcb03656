"""Runs one job: claim its row, run its function with a context, record the outcome.

Shared by the Celery task (workers/tasks.py) and the embedded in-process worker
(workers/embedded.py), so both behave the same.

* Claim: a compare-and-set ``queued -> running`` (attempts + 1). A duplicate delivery, a
  job already running elsewhere, or a finished job is skipped, so a job runs at most once
  per requeue and its outcome is recorded exactly once.
* While it runs, a heartbeat thread touches the row every ``heartbeat_interval_s`` and
  picks up ``cancel_requested``; the job's progress callback then raises
  ``gtapp.progress.Cancelled``. If the row was taken away (the reaper judged this worker
  dead), the job is stopped and its result discarded.
* Success: ``results.json`` is written atomically, then one transaction marks the row
  succeeded, stores ``outputs`` and registers the job's rows (adapters, evaluations...).
  Failure / cancel: the row gets a readable error, ``failure.json`` is written, nothing
  produced is registered, and inputs are untouched.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import select, update

from storage import ledger
from storage.artifacts import ArtifactStore, atomic_write_json
from storage.db import session_scope
from storage.models import TERMINAL, Job, utcnow
from storage.settings import Settings, get_settings

log = logging.getLogger("gtapp.jobs")


class LostOwnership(Exception):
    """The job row no longer belongs to this run (the reaper requeued or failed it)."""


def worker_name(prefix: Optional[str] = None) -> str:
    """Unique per run: node, pid and a random token."""
    return f"{prefix or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class JobContext:
    def __init__(self, job: Job, settings: Settings, store: ArtifactStore, worker: str):
        self.job_id: int = job.id
        self.kind: str = job.kind
        self.params: dict = dict(job.params or {})
        self.seed: int = int(self.params.get("seed", 0))
        self.attempt: int = job.attempts
        self.org_id: int = job.org_id
        self.user_id: Optional[int] = job.user_id
        self.settings = settings
        self.store = store
        self.worker = worker
        self.run_dir: Path = store.run_dir(job.id)
        self.work_dir: Path = store.fresh_work_dir(job.id)
        self.cancel_event = threading.Event()
        self.lost_event = threading.Event()
        self._success_hooks: list[Callable[[Any, Job], Optional[dict]]] = []
        self._privacy: Optional[tuple[Optional[float], dict]] = None
        self._tail: collections.deque[str] = collections.deque(maxlen=settings.log_tail_lines)
        self._tail_dirty = False
        self._log_fh = open(self.run_dir / "log.txt", "a", buffering=1, encoding="utf-8")
        self._last_write = 0.0
        self._last_stage: Optional[str] = None
        self.last_fraction = 0.0
        self._lock = threading.Lock()

    # --- for job functions ------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')}Z {message}"
        with self._lock:
            self._log_fh.write(line + "\n")
            self._tail.append(line[:500])
            self._tail_dirty = True

    def session(self):
        return session_scope(settings=self.settings)

    def check_cancel(self) -> None:
        if self.lost_event.is_set():
            raise LostOwnership(f"job {self.job_id} was taken over (this worker was presumed dead)")
        if self.cancel_event.is_set():
            from gtapp.progress import Cancelled
            raise Cancelled(f"job {self.job_id} was cancelled")

    def progress(self, fraction: float, stage: str, eta_s: Optional[float] = None, message: str = "") -> None:
        """Report progress; raises Cancelled when the job was asked to stop."""
        self.check_cancel()
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.last_fraction = fraction
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < self.settings.progress_min_interval_s:
            return
        if stage != self._last_stage:
            self.log(f"stage: {stage}")
        if message:
            self.log(message)
        self._last_stage, self._last_write = stage, now
        self._write(progress=fraction, stage=stage[:200], eta_s=eta_s)

    def progress_fn(self, p) -> None:
        """A gtapp.progress.ProgressFn."""
        self.progress(p.fraction, p.stage, p.eta_s, getattr(p, "message", ""))

    def on_success(self, hook: Callable[[Any, Job], Optional[dict]]) -> None:
        """``hook(session, job_row)`` runs in the transaction that marks the job succeeded;
        a dict it returns is merged into the job's outputs."""
        self._success_hooks.append(hook)

    def privacy_spent(self, epsilon: Optional[float], mechanism: Optional[dict] = None) -> None:
        """The ε (and mechanism) the accountant reported; settled in the ledger on success."""
        self._privacy = (epsilon, mechanism or {})

    # --- internals ----------------------------------------------------------------------------
    def _tail_text(self) -> str:
        with self._lock:
            self._tail_dirty = False
            return "\n".join(self._tail)[-8000:]

    def _write(self, **values) -> None:
        """Update our row (heartbeat included) if we still own it; pick up cancel requests."""
        values["heartbeat_at"] = utcnow()
        if self._tail_dirty:
            values["log_tail"] = self._tail_text()
        with session_scope(settings=self.settings) as s:
            row = s.execute(update(Job).where(Job.id == self.job_id, Job.status == "running",
                                              Job.worker == self.worker)
                            .values(**values).returning(Job.cancel_requested)).first()
        if row is None:
            self.lost_event.set()
        elif row[0]:
            self.cancel_event.set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._log_fh.close()


class Heartbeat(threading.Thread):
    def __init__(self, ctx: JobContext, interval: float):
        super().__init__(name=f"heartbeat-job-{ctx.job_id}", daemon=True)
        self.ctx, self.interval, self.stop_event = ctx, interval, threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.ctx._write()
            except Exception as e:  # DB hiccup: try again next beat; the reaper tolerates a few misses
                log.warning("heartbeat of job %s failed: %s", self.ctx.job_id, e)
            if self.ctx.lost_event.is_set():
                return


def _error_text(e: BaseException) -> str:
    name = type(e).__name__
    if name == "SoftTimeLimitExceeded":
        return "time limit exceeded: the job ran longer than its soft time limit and was stopped"
    msg = str(e).strip() or repr(e)
    return f"{name}: {msg}"[:4000]


def _claim(job_id: int, worker: str, settings: Settings) -> Optional[Job]:
    now = utcnow()
    with session_scope(settings=settings) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="running", attempts=Job.attempts + 1, worker=worker, started_at=now,
                                heartbeat_at=now, stage="starting", progress=0.0, eta_s=None, error=None,
                                run_dir=f"runs/{job_id}"))
        if res.rowcount != 1:
            return None
        job = s.get(Job, job_id)
        s.expunge(job)
    return job


def _finish(job_id: int, worker: str, settings: Settings, status: str, **values) -> bool:
    """CAS running(by us) -> terminal. Returns False if the row was no longer ours."""
    with session_scope(settings=settings) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker)
                        .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), **values))
        if res.rowcount != 1:
            return False
        ledger.settle(s, job_id, status, note=values.get("error") or "")
    return True


def run_job(job_id: int, worker: Optional[str] = None, settings: Optional[Settings] = None,
            expected_kind: Optional[str] = None) -> str:
    """Run job ``job_id`` if it is queued. Returns the final status, or 'skipped' / 'lost'."""
    from workers.jobs import JobNotAvailable, get_spec

    settings = settings or get_settings()
    worker = worker or worker_name()
    job = _claim(job_id, worker, settings)
    if job is None:
        with session_scope(settings=settings) as s:
            row = s.get(Job, job_id)
            state = row.status if row is not None else "missing"
        log.info("job %s not claimed (status %s): duplicate delivery or already handled", job_id, state)
        return "skipped"
    try:
        store = ArtifactStore(settings.artifacts_dir)
        ctx = JobContext(job, settings, store, worker)
        for stale in ("results.json", "failure.json"):
            with contextlib.suppress(FileNotFoundError):
                (ctx.run_dir / stale).unlink()
        atomic_write_json(ctx.run_dir / "config.json", {
            "job_id": job.id, "kind": job.kind, "params": job.params, "seed": ctx.seed, "org_id": job.org_id,
            "user_id": job.user_id, "attempt": job.attempts, "max_attempts": job.max_attempts, "worker": worker,
            "created_at": job.created_at, "started_at": job.started_at, "gtapp_version": _gtapp_version()})
    except Exception as e:  # e.g. the artifact volume is full or read-only: fail now, readably
        error = f"could not prepare the job's run folder: {_error_text(e)}"
        log.error("job %s: %s", job_id, error)
        _finish(job_id, worker, settings, "failed", error=error, eta_s=None)
        return "failed"
    ctx.log(f"=== attempt {job.attempts}/{job.max_attempts} of job {job.id} ({job.kind}) on {worker} ===")
    heartbeat = Heartbeat(ctx, settings.heartbeat_interval_s)
    heartbeat.start()
    t0 = time.monotonic()
    try:
        if expected_kind is not None and expected_kind != job.kind:
            raise RuntimeError(f"job {job.id} is a '{job.kind}' job but was routed to the '{expected_kind}' task")
        spec = get_spec(job.kind)
        ok, why = spec.available()
        if not ok:
            raise JobNotAvailable(why)
        outputs = spec.fn(dict(job.params or {}), ctx) or {}
        ctx.check_cancel()
    except BaseException as e:  # noqa: BLE001 — every outcome must be recorded
        heartbeat.stop_event.set()
        return _record_failure(ctx, e, t0)
    finally:
        heartbeat.stop_event.set()
    return _record_success(ctx, outputs, t0)


def _record_failure(ctx: JobContext, e: BaseException, t0: float) -> str:
    from gtapp.progress import Cancelled

    try:
        if isinstance(e, LostOwnership):
            ctx.log(f"stopped: {e}")
            return "lost"
        if not isinstance(e, Exception) and not isinstance(e, Cancelled):
            # KeyboardInterrupt / SystemExit: the worker is going away. Leave the row running;
            # the reaper requeues it once the heartbeat is stale.
            ctx.log(f"worker interrupted ({type(e).__name__}); the job will be requeued")
            raise e
        status = "cancelled" if isinstance(e, Cancelled) else "failed"
        error = "cancelled by request" if status == "cancelled" else _error_text(e)
        if status == "failed":
            ctx.log("error: " + error)
            for line in traceback.format_exception(type(e), e, e.__traceback__)[-12:]:
                for sub in line.rstrip().splitlines():
                    ctx.log("  " + sub)
        else:
            ctx.log("cancelled")
        atomic_write_json(ctx.run_dir / "failure.json", {
            "job_id": ctx.job_id, "status": status, "error": error, "attempt": ctx.attempt,
            "wall_s": round(time.monotonic() - t0, 3), "finished_at": utcnow()})
        done = _finish(ctx.job_id, ctx.worker, ctx.settings, status, error=error, eta_s=None,
                       progress=ctx.last_fraction, log_tail=ctx._tail_text())
        if not done:
            ctx.log("row was taken over meanwhile; outcome not recorded")
            return "lost"
        return status
    finally:
        ctx.close()


def _record_success(ctx: JobContext, outputs: dict, t0: float) -> str:
    results = ctx.run_dir / "results.json"
    try:
        wall = round(time.monotonic() - t0, 3)
        ctx.log(f"succeeded in {wall}s")
        atomic_write_json(results, {"job_id": ctx.job_id, "kind": ctx.kind, "status": "succeeded",
                                    "params": ctx.params, "seed": ctx.seed, "attempt": ctx.attempt,
                                    "wall_s": wall, "outputs": outputs, "finished_at": utcnow()})
        with session_scope(settings=ctx.settings) as s:
            job = s.scalars(select(Job).where(Job.id == ctx.job_id, Job.status == "running",
                                              Job.worker == ctx.worker)).one_or_none()
            if job is None:
                raise LostOwnership("row taken over before the result was recorded")
            final = dict(outputs)
            for hook in ctx._success_hooks:
                final.update(hook(s, job) or {})
            job.status, job.progress, job.stage, job.eta_s = "succeeded", 1.0, "done", 0.0
            job.outputs, job.finished_at, job.heartbeat_at = final, utcnow(), utcnow()
            job.log_tail = ctx._tail_text()
            s.flush()
            if ctx._privacy is not None:
                ledger.settle(s, ctx.job_id, "succeeded", epsilon=ctx._privacy[0], mechanism=ctx._privacy[1])
            else:
                ledger.settle(s, ctx.job_id, "succeeded")
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # everything kept is in the store by now
        return "succeeded"
    except LostOwnership as e:
        results.unlink(missing_ok=True)
        ctx.log(f"result discarded: {e}")
        return "lost"
    except Exception as e:
        results.unlink(missing_ok=True)
        ctx.log(f"recording the result failed: {e}")
        return _record_failure(ctx, e, t0)
    finally:
        ctx.close()


def _gtapp_version() -> str:
    try:
        from gtapp import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def is_terminal(status: str) -> bool:
    return status in TERMINAL
