"""The reaper: finds jobs whose worker died and requeues or fails them.

A running job whose heartbeat is older than ``heartbeat_stale_s`` has lost its worker
(SIGKILL, OOM, machine gone). If it has attempts left it goes back to ``queued`` and is
dispatched again; otherwise it is failed with the reason. A job asked to cancel is marked
cancelled instead. Every change is a compare-and-set on the row as it was read, so any
number of reapers (one per worker process, plus the embedded one) can run at once.

It also re-sends queued jobs that were never handed to the broker (the submitting process
died between committing the row and sending the message).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Optional

from sqlalchemy import select, update

from storage import ledger
from storage.artifacts import ArtifactStore, atomic_write_json
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.settings import Settings, get_settings

log = logging.getLogger("gtapp.reaper")


def reap(settings: Optional[Settings] = None, now: Optional[dt.datetime] = None) -> list[dict]:
    """One pass; returns what it did: [{job_id, action, reason}]."""
    settings = settings or get_settings()
    now = now or utcnow()
    stale_before = now - dt.timedelta(seconds=settings.heartbeat_stale_s)
    actions: list[dict] = []
    with session_scope(settings=settings) as s:
        stale = [(j.id, j.kind, j.queue, j.worker, j.heartbeat_at, j.attempts, j.max_attempts, j.cancel_requested)
                 for j in s.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < stale_before))]
    for job_id, kind, queue, worker, beat, attempts, max_attempts, cancel in stale:
        since = beat.strftime("%Y-%m-%d %H:%M:%S UTC") if beat else "never"
        lost = f"worker {worker} lost (no heartbeat since {since})"
        if cancel:
            action, values = "cancelled", {"status": "cancelled", "finished_at": now, "error": f"cancelled; {lost}"}
        elif attempts < max_attempts:
            action, values = "requeued", {"status": "queued", "worker": None, "stage": f"requeued: {lost}",
                                          "eta_s": None,
                                          "error": f"attempt {attempts} of {max_attempts}: {lost}; requeued"}
        else:
            action, values = "failed", {"status": "failed", "finished_at": now, "eta_s": None,
                                        "error": f"{lost} on attempt {attempts} of {max_attempts}; giving up"}
        with session_scope(settings=settings) as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker,
                                              Job.heartbeat_at == beat).values(**values))
            if res.rowcount != 1:
                continue  # someone else got there first, or the job came back to life
            if action != "requeued":
                ledger.settle(s, job_id, action, note=values["error"])
        if action != "requeued":
            store = ArtifactStore(settings.artifacts_dir)
            try:
                atomic_write_json(store.run_dir(job_id) / "failure.json", {
                    "job_id": job_id, "status": action, "error": values["error"], "attempt": attempts,
                    "finished_at": now})
            except OSError as e:  # the row is authoritative; the file is a courtesy
                log.warning("could not write failure.json for job %s: %s", job_id, e)
        log.warning("job %s %s: %s", job_id, action, values["error"])
        _append_run_log(settings, job_id, f"reaper: {action}: {values['error']}")
        actions.append({"job_id": job_id, "action": action, "reason": values["error"]})
        if action == "requeued":
            _resend(settings, job_id, kind, queue, actions)

    if not settings.embedded:
        cutoff = now - dt.timedelta(seconds=settings.redispatch_after_s)
        with session_scope(settings=settings) as s:
            lost_msgs = [(j.id, j.kind, j.queue) for j in s.scalars(
                select(Job).where(Job.status == "queued", Job.dispatched_at.is_(None), Job.created_at < cutoff))]
        for job_id, kind, queue in lost_msgs:
            actions.append({"job_id": job_id, "action": "redispatched", "reason": "queued but never sent"})
            _resend(settings, job_id, kind, queue, actions)
    return actions


def _append_run_log(settings: Settings, job_id: int, message: str) -> None:
    try:
        path = ArtifactStore(settings.artifacts_dir).run_dir(job_id) / "log.txt"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{utcnow().strftime('%Y-%m-%dT%H:%M:%S')}Z {message}\n")
    except OSError as e:
        log.warning("could not append to the log of job %s: %s", job_id, e)


_last_sweep = 0.0


def sweep(settings: Settings, every_s: float = 600.0) -> int:
    """Remove partial artifact writes older than the hard time limit (at most every 10 min)."""
    global _last_sweep
    if time.monotonic() - _last_sweep < every_s:
        return 0
    _last_sweep = time.monotonic()
    return ArtifactStore(settings.artifacts_dir).sweep_tmp(older_than_s=settings.job_hard_time_limit_s)


def _resend(settings: Settings, job_id: int, kind: str, queue: str, actions: list[dict]) -> None:
    from workers.dispatch import QueueUnavailable, send

    try:
        send(settings, job_id, kind, queue, run_here=False)  # embedded: any polling worker takes it
    except QueueUnavailable as e:  # stays queued with no message; the next pass tries again
        log.error("%s", e)
        with session_scope(settings=settings) as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=None))
        actions.append({"job_id": job_id, "action": "dispatch_failed", "reason": str(e)})


class ReaperThread(threading.Thread):
    def __init__(self, settings: Optional[Settings] = None, interval: Optional[float] = None):
        super().__init__(name="gtapp-reaper", daemon=True)
        self.settings = settings or get_settings()
        self.interval = interval or self.settings.reaper_interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                reap(self.settings)
                sweep(self.settings)
            except Exception as e:  # keep reaping; a DB blip must not kill the thread
                log.warning("reaper pass failed: %s", e)

    def stop(self) -> None:
        self.stop_event.set()
