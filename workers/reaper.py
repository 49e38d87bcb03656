"""The reaper: finds jobs whose worker died and requeues or fails them.

A running job whose heartbeat is older than ``heartbeat_stale_s`` has lost its worker
(SIGKILL, OOM, machine gone). If it has attempts left it goes back to ``queued`` and is
dispatched again; otherwise it is failed with the reason. A job asked to cancel is marked
cancelled instead. Every change is a compare-and-set on the row as it was read, so any
number of reapers (one per worker process, plus the embedded one) can run at once.

It also re-sends queued jobs whose broker message is missing (the database is the source of
truth; a duplicate message is harmless, as claiming a job is a compare-and-set on its row):

* never sent: the submitting process died between committing the row and sending;
* sent at or before the broker's current epoch (workers.broker.broker_epoch): a Redis
  restart, a FLUSH or an eviction lost the message (the job whose own send started the
  epoch is re-sent too, once: its message may have gone to the broker before the restart);
* unclaimed for ``redispatch_unclaimed_after_s`` after its last send (doubling after each
  re-send): a safety net for a message lost any other way (say, taken by a worker that died
  before claiming the job).

Each re-send first moves the row's ``dispatched_at`` by compare-and-set, so of several
reapers only one sends.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from typing import Optional

from sqlalchemy import select, update

from storage import ledger
from storage.artifacts import ArtifactStore, atomic_write_json
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.settings import Settings, get_settings
from workers.broker import QueueUnavailable, broker_epoch
from workers.dispatch import send

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
                store.drop_staged(job_id)  # the dead attempt's unpublished objects: never to be used
                atomic_write_json(store.run_dir(job_id) / "failure.json", {
                    "job_id": job_id, "status": action, "error": values["error"], "attempt": attempts,
                    "finished_at": now})
            except OSError as e:  # the row is authoritative; the files are a courtesy
                log.warning("could not clean up or write failure.json for job %s: %s", job_id, e)
        log.warning("job %s %s: %s", job_id, action, values["error"])
        _append_run_log(settings, job_id, f"reaper: {action}: {values['error']}")
        actions.append({"job_id": job_id, "action": action, "reason": values["error"]})
        if action == "requeued":
            _resend(settings, job_id, kind, queue, actions)

    if not settings.embedded:
        for job_id, kind, queue, reason in _lost_messages(settings, now):
            actions.append({"job_id": job_id, "action": "redispatched", "reason": reason})
            log.warning("job %s re-sent to the broker: %s", job_id, reason)
            _resend(settings, job_id, kind, queue, actions)
    return actions


def _lost_messages(settings: Settings, now: dt.datetime) -> list[tuple[int, str, str, str]]:
    """Queued jobs whose broker message is (or may be) gone, each taken for re-sending by a
    compare-and-set on ``dispatched_at``: [(job_id, kind, queue, reason)]."""
    never_before = now - dt.timedelta(seconds=settings.redispatch_after_s)
    unclaimed_before = now - dt.timedelta(seconds=settings.redispatch_unclaimed_after_s)
    epoch = _broker_epoch(settings)
    with session_scope(settings=settings) as s:
        q = select(Job.id, Job.kind, Job.queue, Job.dispatched_at, Job.dispatches).where(Job.status == "queued")
        rows = s.execute(q.where(((Job.dispatched_at.is_(None)) & (Job.created_at < never_before))
                                 | (Job.dispatched_at <= max(unclaimed_before, epoch or unclaimed_before)))
                         ).all()
    taken = []
    for job_id, kind, queue, sent_at, sends in rows:
        if sent_at is None:
            reason = "queued but never sent to the broker"
        elif epoch is not None and sent_at <= epoch:
            reason = (f"sent to the broker at {_stamp(sent_at)}, not after the start of the broker's current epoch "
                      f"(it restarted or lost its data since): its message may be gone")
        elif sent_at < now - dt.timedelta(seconds=_unclaimed_wait_s(settings, sends)):
            reason = f"sent at {_stamp(sent_at)} and still not claimed by any worker: its message may be lost"
        else:
            continue
        if _take_for_resend(settings, job_id, sent_at, now):
            taken.append((job_id, kind, queue, reason))
    return taken


def _broker_epoch(settings: Settings) -> Optional[dt.datetime]:
    """Jobs sent at or before this (UTC, broker's clock, as their dispatched_at) may have lost
    their message; None when unknown."""
    try:
        clock = broker_epoch(settings)
    except Exception as e:  # broker down: nothing can be re-sent anyway; try on the next pass
        log.warning("could not read the broker epoch: %s", e)
        return None
    return clock[0] if clock else None


def _unclaimed_wait_s(settings: Settings, sends: Optional[int]) -> float:
    """Seconds after its last send before an unclaimed job is re-sent: doubles with each
    re-send, so a job waiting behind a long backlog gets few duplicates."""
    return settings.redispatch_unclaimed_after_s * 2 ** min(max((sends or 1) - 1, 0), 10)


def _take_for_resend(settings: Settings, job_id: int, sent_at: Optional[dt.datetime], now: dt.datetime) -> bool:
    """Compare-and-set ``dispatched_at`` from what was read to ``now``: True for the one
    reaper that wins (the others skip the job)."""
    same = Job.dispatched_at.is_(None) if sent_at is None else Job.dispatched_at == sent_at
    with session_scope(settings=settings) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued", same).values(dispatched_at=now))
        return res.rowcount == 1


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


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

    try:
        send(settings, job_id, kind, queue)  # embedded: any polling worker takes it
    except QueueUnavailable as e:  # stays queued with no message; the next pass tries again
        log.error("%s", e)
        with session_scope(settings=settings) as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=None))
        actions.append({"job_id": job_id, "action": "dispatch_failed", "reason": str(e)})


# A process forked while this process's reaper thread is mid-pass inherits whatever locks the
# pass holds at that instant (a module it is importing, say alembic on its first database use;
# a connection pool's) with no thread left to release them, and deadlocks on the first one it
# needs. Celery's prefork pool forks a new pool process whenever one dies, while the reaper
# runs in the worker's main process: so a fork waits for the current pass to end. (Hooks run
# in reverse order of registration, so this one runs before logging's: a pass may still log.)
_pass_lock = threading.RLock()


def _before_fork() -> None:
    _pass_lock.acquire()


def _after_fork_in_parent() -> None:
    _pass_lock.release()


def _after_fork_in_child() -> None:
    global _pass_lock
    _pass_lock = threading.RLock()  # the parent's is held by a thread the child does not have


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class ReaperThread(threading.Thread):
    def __init__(self, settings: Optional[Settings] = None, interval: Optional[float] = None):
        super().__init__(name="gtapp-reaper", daemon=True)
        self.settings = settings or get_settings()
        self.interval = interval or self.settings.reaper_interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                with _pass_lock:  # no fork mid-pass (see _pass_lock)
                    reap(self.settings)
                    sweep(self.settings)
            except Exception as e:  # keep reaping; a DB blip must not kill the thread
                log.warning("reaper pass failed: %s", e)

    def stop(self) -> None:
        self.stop_event.set()
