"""The Celery worker's entry point: the app (workers/celery_config.py) and the worker
process hooks. Start a worker from the repository root (or anywhere gtapp is installed)::

    celery -A workers.celery_app worker -Q cpu,gpu -c 1 --pool prefork -l info

Each worker process also runs the reaper (workers/reaper.py), which requeues jobs of dead
workers and re-sends messages the broker lost.
"""

from __future__ import annotations

import logging

from celery import signals

# Import the gtapp package (light: no torch) while `celery -A` still has the working
# directory on sys.path; job functions import its sub-modules lazily, in the pool process.
import gtapp  # noqa: F401,E402

from storage.db import dispose_all, get_engine
from storage.settings import get_settings
from workers.celery_config import get_app, make_celery  # noqa: F401 (get_app: for callers of this module)
from workers.reaper import ReaperThread

log = logging.getLogger("gtapp.jobs")


# --- worker process hooks ------------------------------------------------------------------

_reaper = None


@signals.worker_init.connect
def _prepare_before_fork(sender=None, **_):
    """Open (and migrate) the database in the main process before the pool forks: pool
    processes then inherit that it is migrated instead of each importing alembic to check,
    and the reaper's passes skip those slow first-use imports (a replacement pool process
    forked meanwhile must wait for the pass to end: see workers.reaper._pass_lock)."""
    settings = getattr(getattr(sender, "app", None), "gtapp_settings", None) or get_settings()
    try:  # (workers.reaper, imported above, registered its fork guard before any fork)
        get_engine(settings=settings)
    except Exception as e:  # the database may come up later: pool processes and the reaper retry
        log.warning("could not open the database before starting the pool: %s", e)


@signals.worker_process_init.connect
def _after_fork(**_):
    """Pool processes must not reuse the parent's DB connections."""
    dispose_all()


@signals.worker_ready.connect
def _start_reaper(sender=None, **_):
    global _reaper
    settings = getattr(getattr(sender, "app", None), "gtapp_settings", None) or get_settings()
    if settings.reaper_in_worker and _reaper is None:
        _reaper = ReaperThread(settings)
        _reaper.start()
        log.info("reaper started (every %ss, stale after %ss)", _reaper.interval, settings.heartbeat_stale_s)


@signals.worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper is not None:
        _reaper.stop()


app = make_celery()
