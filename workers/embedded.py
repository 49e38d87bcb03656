"""The embedded worker: with no broker configured, jobs run on threads of the current
process (the dashboard, or ``gtapp jobs worker``, or a CLI ``--wait``), with the database as
the queue. Same job code, same claim/heartbeat/reaper rules as the Celery workers, so a
fresh machine works with nothing else running; several processes can share one database
safely (the claim is a compare-and-set).
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from storage.db import session_scope
from storage.settings import Settings, get_settings
from workers.fairness import next_job
from workers.reaper import ReaperThread
from workers.runner import run_job, worker_name

log = logging.getLogger("gtapp.jobs")

_lock = threading.Lock()
_instances: dict[tuple, "EmbeddedWorker"] = {}


class EmbeddedWorker:
    def __init__(self, settings: Settings, threads: Optional[int] = None):
        self.settings = settings
        self.n = threads or settings.embedded_workers
        self._wake = threading.Condition()
        self._pending = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reaper: Optional[ReaperThread] = None

    def start(self) -> "EmbeddedWorker":
        if self._threads:
            return self
        self._stop.clear()
        for i in range(self.n):
            t = threading.Thread(target=self._loop, name=f"gtapp-embedded-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._reaper = ReaperThread(self.settings)
        self._reaper.start()
        return self

    def wake(self) -> None:
        with self._wake:
            self._pending += 1
            self._wake.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        if self._reaper:
            self._reaper.stop()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def _next_job(self) -> Optional[int]:
        with session_scope(settings=self.settings) as s:
            return next_job(s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._next_job()
            except Exception as e:
                log.warning("embedded worker could not read the queue: %s", e)
                job_id = None
            if job_id is None:
                with self._wake:
                    if self._pending == 0:
                        self._wake.wait(self.settings.embedded_poll_s)
                    self._pending = 0
                continue
            try:
                run_job(job_id, worker=worker_name("embedded"), settings=self.settings)
            except Exception:
                log.exception("embedded worker: job %s raised outside its own handling", job_id)


def get_embedded(settings: Optional[Settings] = None, start: bool = True) -> EmbeddedWorker:
    """The process's embedded worker for these settings' database (started on first use)."""
    settings = settings or get_settings()
    key = (settings.db_url, str(settings.artifacts_dir))
    with _lock:
        w = _instances.get(key)
        if w is None:
            w = _instances[key] = EmbeddedWorker(settings)
        if start:
            w.start()
    return w


def stop_all() -> None:
    with _lock:
        items = list(_instances.items())
        _instances.clear()
    for _, w in items:
        w.stop()
