"""Runs one job: claim its row, run its function with a context, record the outcome.

Shared by the Celery task (workers/celery_tasks.py) and the embedded in-process worker
(workers/embedded.py), so both behave the same.

* Claim: a compare-and-set ``queued -> running`` (attempts + 1). A duplicate delivery, a
  job already running elsewhere, or a finished job is skipped, so a job runs at most once
  per requeue and its outcome is recorded exactly once.
* While it runs, a heartbeat thread touches the row every ``heartbeat_interval_s`` and
  picks up ``cancel_requested``; the job's progress callback then raises
  ``gtapp.progress.Cancelled``. If the row was taken away (the reaper judged this worker
  dead), the job is stopped and its result discarded.
* Objects the job stores wait in its attempt's work folder (storage.artifacts.StagedStore).
* Success: the staged objects are published into the store, ``results.json`` is written
  atomically, then one transaction marks the row succeeded, stores ``outputs`` and registers
  the job's rows (adapters, evaluations...).
  Failure / cancel: the row gets a readable error, ``failure.json`` is written, the staged
  objects are dropped and nothing produced is registered; inputs are untouched. A killed
  attempt's staged objects go with its work folder when the job is next attempted.
* Faults: a database that is briefly unreachable (restart, failover) does not fail the job:
  progress writes are skipped until it is back, and the claim and the outcome are retried
  for up to ``db_retry_s`` (the heartbeat keeps beating until the outcome is recorded). A
  log file that cannot be written (disk full) never stops the outcome being recorded; a
  full disk fails the job with an error that says so.
* Progress: monotone, with the whole job's pace as its ETA (gtapp.progress.job_eta); what was
  reported is kept in the run folder (``progress.json``) beside the live curve (``curve.json``).

A little over 500 lines, on purpose: claim, context, heartbeat and outcome are one protocol
whose parts share the row's ownership rules; split apart, each would reach into the others.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
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
from gtapp.files import atomic_write_text
from gtapp.progress import job_eta
from storage.artifacts import ArtifactStore, StagedStore, atomic_write_json
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.settings import Settings, get_settings
from workers.jobs import JobNotAvailable, get_spec
from workers.redact import redact

TRACEBACK_FILE = "traceback.txt"  # in the run folder: for admins (the Jobs tab), never a member
CURVE_FILE = "curve.json"  # in the run folder: the live loss curve the Jobs tab plots
CURVE_POINTS = 2000
PROGRESS_FILE = "progress.json"  # in the run folder: the progress and ETA as reported, with the end time

log = logging.getLogger("gtapp.jobs")


class LostOwnership(Exception):
    """The job row no longer belongs to this run (the reaper requeued or failed it)."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def db_unavailable(e: BaseException) -> bool:
    """True for errors that mean "the database cannot be reached right now" (server down or
    restarting, connection dropped), as opposed to errors in what was asked of it."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return True
    return isinstance(e, (OperationalError, InterfaceError))


def retry_db(settings: Settings, what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, retried while the database is unreachable, for up to ``settings.db_retry_s``
    seconds (waits 0.2 s, doubling to 2 s); other errors, and the last one, propagate.
    ``fn`` must be a whole transaction, so a retry redoes all of it."""
    deadline = time.monotonic() + settings.db_retry_s
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as e:
            if not db_unavailable(e) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying in %.1fs", what, _first_line(e), delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


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
        self.worker = worker
        self.run_dir: Path = store.run_dir(job.id)
        self.work_dir: Path = store.fresh_work_dir(job.id)
        # What this attempt stores is visible to others only once it succeeded (publish). One
        # folder per attempt: a presumed-dead attempt that still runs never publishes into, or
        # has its objects published by, the attempt that replaced it.
        self.store = StagedStore(store.root, store.staging_dir(job.id, job.attempts))
        self.cancel_event = threading.Event()
        self.lost_event = threading.Event()
        self._success_hooks: list[Callable[[Any, Job], Optional[dict]]] = []
        self._privacy: Optional[tuple[Optional[float], dict]] = None
        self.steps_taken: Optional[int] = None  # training steps on private data (see training_steps)
        self._curve: dict[str, list[list[float]]] = {}
        self._curve_written = 0.0
        self._tail: collections.deque[str] = collections.deque(maxlen=settings.log_tail_lines)
        self._tail_dirty = False
        self._log_fh: Optional[Any] = open(self.run_dir / "log.txt", "a", buffering=1, encoding="utf-8")
        self._log_broken = False
        self._closed = False
        self._db_down_since: Optional[float] = None
        self._last_write = 0.0
        self._last_stage: Optional[str] = None
        self.last_fraction = 0.0
        self._t0 = time.monotonic()
        self._trace: list[list[float]] = []  # [elapsed s, fraction, ETA s or -1] as written (progress.json)
        self._ended_s: Optional[float] = None
        self._lock = threading.Lock()

    # --- for job functions ------------------------------------------------------------------
    def log(self, message: str) -> None:
        """A line in the run folder's log.txt and in the row's log tail (which members see:
        without server paths, workers.redact). Never raises: a log that cannot be written (disk
        full) must not stop the job's outcome being recorded."""
        line = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')}Z {message}"
        with self._lock:
            self._tail.append(redact(line)[:500])
            self._tail_dirty = True
            self._append_log_file(line)

    def _append_log_file(self, line: str) -> None:
        """Append to log.txt (re-opened after a failed write: space may have been freed since)."""
        if self._closed:  # a late line from the heartbeat thread: the tail has it
            return
        try:
            if self._log_fh is None:
                self._log_fh = open(self.run_dir / "log.txt", "a", buffering=1, encoding="utf-8")
            self._log_fh.write(line + "\n")
            self._log_broken = False
        except (OSError, ValueError) as e:
            with contextlib.suppress(Exception):
                self._log_fh.close()
            self._log_fh = None
            if not self._log_broken:  # once per outage, not once per line
                log.warning("job %s: cannot write its log file (%s); the log tail in the database goes on",
                            self.job_id, e)
            self._log_broken = True

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
        # monotone: a job's progress never goes back (a retried or re-planned step reports less)
        fraction = max(min(max(float(fraction), 0.0), 1.0), self.last_fraction)
        self.last_fraction = fraction
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < self.settings.progress_min_interval_s:
            return
        eta_s = job_eta(fraction, now - self._t0, eta_s)
        self._trace.append([round(now - self._t0, 3), round(fraction, 5), -1.0 if eta_s is None else round(eta_s, 2)])
        if len(self._trace) > CURVE_POINTS:
            del self._trace[1::2]
        if stage != self._last_stage:
            self.log(f"stage: {stage}")
        if message:
            self.log(message)
        self._last_stage, self._last_write = stage, now
        try:
            self._write(progress=fraction, stage=stage[:200], eta_s=eta_s)
        except Exception as e:
            if not db_unavailable(e):
                raise
            # The job goes on: the next write (or the heartbeat) catches up once the database
            # is back, and the reaper tolerates heartbeat_stale_s of silence.
            self.database_unreachable(e)

    def progress_fn(self, p) -> None:
        """A gtapp.progress.ProgressFn; its metrics become the job's live curve (curve.json)."""
        if getattr(p, "metrics", None) and p.step is not None:
            self.curve_point(p.stage, p.step, p.metrics)
        self.progress(p.fraction, p.stage, p.eta_s, getattr(p, "message", ""))

    def curve_point(self, stage: str, step: int, metrics: dict) -> None:
        """Add a point to the live curve (``run_dir/curve.json``: {series: [[step, value], ...]},
        series named '<stage>: <metric>'); written at most once a second, and at the end."""
        for name, value in metrics.items():
            series = self._curve.setdefault(f"{stage}: {name}", [])
            if not series or series[-1][0] != step:
                series.append([int(step), float(value)])
            if len(series) > CURVE_POINTS:  # keep it small: every other point
                del series[::2]
        if time.monotonic() - self._curve_written >= 1.0:
            self.write_curve()

    def write_curve(self) -> None:
        if not self._curve:
            return
        self._curve_written = time.monotonic()
        try:
            atomic_write_json(self.run_dir / CURVE_FILE, self._curve)
        except OSError:
            pass  # a curve that cannot be written (disk full) never stops the job

    def run_here(self, job_id: int) -> str:
        """Run another queued job in this process now (a job working through its own fanned-out
        children when no other worker has taken them); 'skipped' if another worker claimed it."""
        return run_job(job_id, worker=f"{self.worker}/child", settings=self.settings)

    def on_success(self, hook: Callable[[Any, Job], Optional[dict]]) -> None:
        """``hook(session, job_row)`` runs in the transaction that marks the job succeeded;
        a dict it returns is merged into the job's outputs."""
        self._success_hooks.append(hook)

    def privacy_spent(self, epsilon: Optional[float], mechanism: Optional[dict] = None) -> None:
        """The ε (and mechanism) the accountant reported; settled in the ledger on success."""
        self._privacy = (epsilon, mechanism or {})

    def training_steps(self, steps: int) -> None:
        """Optimizer steps taken on the job's private data so far (0 before the first). A job
        that stops is charged in the privacy ledger for these; never called: unknown (charged
        in full)."""
        self.steps_taken = max(int(steps), self.steps_taken or 0)

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
        if self._db_down_since is not None:
            self.log(f"database reachable again after {time.monotonic() - self._db_down_since:.1f}s")
            self._db_down_since = None
        if row is None:
            self.lost_event.set()
        elif row[0]:
            self.cancel_event.set()

    def database_unreachable(self, e: BaseException) -> None:
        """Note (once per outage) that a write to the job's row failed for want of a database."""
        with self._lock:
            first = self._db_down_since is None
            if first:
                self._db_down_since = time.monotonic()
        if first:
            self.log(f"database unreachable ({_first_line(e)}); the job goes on and its state is written "
                     f"once the database is back")

    def write_trace(self) -> None:
        """The progress this attempt reported, and when its work ended (``run_dir/progress.json``:
        what a test of the ETA's honesty reads). Written before the outcome is recorded, so it is
        there once the row says the job finished; the end is the first call's."""
        if self._ended_s is None:
            self._ended_s = round(time.monotonic() - self._t0, 3)
        try:
            atomic_write_json(self.run_dir / PROGRESS_FILE, {"attempt": self.attempt, "samples": self._trace,
                                                            "ended_s": self._ended_s})
        except OSError:
            pass  # never stops the job

    def close(self) -> None:
        self.write_curve()
        self.write_trace()
        with self._lock:
            self._closed = True
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
                log.warning("heartbeat of job %s failed: %s", self.ctx.job_id, _first_line(e))
                if db_unavailable(e):
                    self.ctx.database_unreachable(e)
            if self.ctx.lost_event.is_set():
                return


def _error_text(e: BaseException) -> str:
    name = type(e).__name__
    if name == "SoftTimeLimitExceeded":
        return "time limit exceeded: the job ran longer than its soft time limit and was stopped"
    msg = str(e).strip() or repr(e)
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
        return f"disk full: {msg} [{name}]. Free space there, then retry the job."[:4000]
    return f"{name}: {msg}"[:4000]


def _claim(job_id: int, worker: str, settings: Settings) -> Optional[Job]:
    """CAS queued -> running(by us), retried while the database is unreachable. None when the
    job is not ours to run (duplicate delivery, running elsewhere, finished)."""
    def attempt() -> Optional[Job]:
        now = utcnow()
        with session_scope(settings=settings) as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                            .values(status="running", attempts=Job.attempts + 1, worker=worker, started_at=now,
                                    heartbeat_at=now, stage="starting", progress=0.0, eta_s=None, error=None,
                                    run_dir=f"runs/{job_id}"))
            job = s.get(Job, job_id)
            # A retry after a commit whose reply was lost finds the row already ours (worker
            # names are unique per run).
            if job is None or (res.rowcount != 1 and not (job.status == "running" and job.worker == worker)):
                return None
            s.expunge(job)
        return job

    return retry_db(settings, f"claiming job {job_id}", attempt)


def _finish(job_id: int, worker: str, settings: Settings, status: str, steps_taken: Optional[int] = None,
            **values) -> bool:
    """CAS running(by us) -> terminal, retried while the database is unreachable. Returns
    False if the row was no longer ours. ``steps_taken``: training steps the job ran on its
    private data (the privacy ledger charges those), None if unknown."""
    def attempt() -> bool:
        with session_scope(settings=settings) as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker)
                            .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), **values))
            if res.rowcount != 1:  # ours already, if a retried commit went through after all
                row = s.get(Job, job_id)
                return row is not None and row.status == status and row.worker == worker
            ledger.settle(s, job_id, status, note=values.get("error") or "", steps_taken=steps_taken)
        return True

    return retry_db(settings, f"recording the outcome of job {job_id}", attempt)


def run_job(job_id: int, worker: Optional[str] = None, settings: Optional[Settings] = None,
            expected_kind: Optional[str] = None) -> str:
    """Run job ``job_id`` if it is queued. Returns the final status, or 'skipped' / 'lost'."""

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
    # The heartbeat beats until the outcome is recorded: recording may wait for a database
    # that is coming back, and the reaper must not take the job away meanwhile.
    heartbeat = Heartbeat(ctx, settings.heartbeat_interval_s)
    heartbeat.start()
    t0 = time.monotonic()
    try:
        try:
            if expected_kind is not None and expected_kind != job.kind:
                raise RuntimeError(f"job {job.id} is a '{job.kind}' job but was routed to the "
                                   f"'{expected_kind}' task")
            spec = get_spec(job.kind)
            ok, why = spec.available()
            if not ok:
                raise JobNotAvailable(why)
            outputs = spec.fn(dict(job.params or {}), ctx) or {}
            ctx.check_cancel()
        except BaseException as e:  # noqa: BLE001 — every outcome must be recorded
            return _record_failure(ctx, e, t0)
        return _record_success(ctx, outputs, t0)
    finally:
        heartbeat.stop_event.set()


def _record_failure(ctx: JobContext, e: BaseException, t0: float) -> str:
    from gtapp.progress import Cancelled

    try:
        if isinstance(e, LostOwnership):
            ctx.log(f"stopped: {e}")
            ctx.store.discard()
            return "lost"
        if not isinstance(e, Exception) and not isinstance(e, Cancelled):
            # KeyboardInterrupt / SystemExit: the worker is going away. Leave the row running;
            # the reaper requeues it once the heartbeat is stale.
            ctx.log(f"worker interrupted ({type(e).__name__}); the job will be requeued")
            raise e
        status = "cancelled" if isinstance(e, Cancelled) else "failed"
        raw = "cancelled by request" if status == "cancelled" else _error_text(e)
        error = redact(raw)  # what the organisation sees; the traceback is for admins
        if status == "failed":
            ctx.log("error: " + error)
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            log.warning("job %s failed: %s", ctx.job_id, tb[-4000:])
            try:
                atomic_write_text(ctx.run_dir / TRACEBACK_FILE, tb)
            except OSError:
                pass
        else:
            ctx.log("cancelled")
        dropped = ctx.store.discard()
        if dropped:
            ctx.log(f"dropped {dropped} object(s) this attempt had stored")
        try:
            atomic_write_json(ctx.run_dir / "failure.json", {
                "job_id": ctx.job_id, "status": status, "error": raw, "attempt": ctx.attempt,
                "wall_s": round(time.monotonic() - t0, 3), "finished_at": utcnow()})
        except OSError as write_error:  # e.g. the disk is full: the row is what counts
            log.warning("job %s: could not write failure.json: %s", ctx.job_id, write_error)
        ctx.write_curve()
        ctx.write_trace()
        done = _finish(ctx.job_id, ctx.worker, ctx.settings, status, error=error, eta_s=None,
                       progress=ctx.last_fraction, log_tail=ctx._tail_text(), steps_taken=ctx.steps_taken)
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
        ctx.store.publish()  # before the row names them: a reader never meets a missing object
        ctx.log(f"succeeded in {wall}s")
        atomic_write_json(results, {"job_id": ctx.job_id, "kind": ctx.kind, "status": "succeeded",
                                    "params": ctx.params, "seed": ctx.seed, "attempt": ctx.attempt,
                                    "wall_s": wall, "outputs": outputs, "finished_at": utcnow()})
        ctx.write_curve()
        ctx.write_trace()
        retry_db(ctx.settings, f"recording the result of job {ctx.job_id}", lambda: _commit_success(ctx, outputs))
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


def _commit_success(ctx: JobContext, outputs: dict) -> None:
    """The one transaction that marks the row succeeded and registers what the job made."""
    with session_scope(settings=ctx.settings) as s:
        job = s.scalars(select(Job).where(Job.id == ctx.job_id, Job.status == "running",
                                          Job.worker == ctx.worker)).one_or_none()
        if job is None:
            row = s.get(Job, ctx.job_id)
            if row is not None and row.status == "succeeded" and row.worker == ctx.worker:
                return  # a retry after a commit whose reply was lost: recorded already
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


def _gtapp_version() -> str:
    try:
        from gtapp import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"
