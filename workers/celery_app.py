"""The Celery application: Redis broker and result backend from settings, ``cpu`` and ``gpu``
queues, one task per job kind (workers/tasks.py).

Start a worker from the repository root (or anywhere gtapp is installed)::

    celery -A workers.celery_app worker -Q cpu,gpu -c 1 --pool prefork -l info

Reliability settings: late acks plus ``task_reject_on_worker_lost`` (a message is only
acknowledged once its job has finished, and requeued if the pool process dies), prefetch 1
(a worker never holds jobs it is not running), a broker visibility timeout longer than the
longest job (a slow job is never delivered twice), soft and hard time limits, running jobs
kept through a broker reconnect. Each worker process also runs the reaper
(workers/reaper.py), which requeues jobs of dead workers and re-sends messages the broker lost.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Optional

from celery import Celery, signals
from kombu import Exchange, Queue

# Import the gtapp package (light: no torch) while `celery -A` still has the working
# directory on sys.path; job functions import its sub-modules lazily, in the pool process.
import gtapp  # noqa: F401,E402

from storage.settings import Settings, get_settings

log = logging.getLogger("gtapp.jobs")


def make_celery(settings: Optional[Settings] = None, with_backend: bool = True) -> Celery:
    """The app. ``with_backend=False`` gives a send-only app (the job API's): it never
    subscribes to results, so a broker outage fails a submission fast and leaves nothing
    broken behind; the job's outcome lives in the database anyway."""
    settings = settings or get_settings()
    app = Celery("gtapp", broker=settings.broker_url or "memory://",
                 backend=settings.backend_url if with_backend else "disabled://")
    transport = {"visibility_timeout": settings.visibility_timeout_s,
                 "socket_connect_timeout": settings.broker_connect_timeout_s,
                 "socket_timeout": max(settings.broker_connect_timeout_s, 10.0)}
    backend_transport = {"socket_connect_timeout": settings.broker_connect_timeout_s}
    if settings.broker_key_prefix:
        transport["global_keyprefix"] = settings.broker_key_prefix
        backend_transport["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        task_queues=(Queue("cpu", Exchange("cpu"), routing_key="cpu"),
                     Queue("gpu", Exchange("gpu"), routing_key="gpu")),
        task_default_queue="cpu",
        task_default_exchange="cpu",
        task_default_routing_key="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_hard_time_limit_s,
        broker_transport_options=transport,
        result_backend_transport_options=backend_transport,
        broker_connection_timeout=settings.broker_connect_timeout_s,
        broker_connection_retry_on_startup=True,
        # A broker restart must not stop running jobs (Celery 6 would cancel them by default):
        # their state lives in the database, their outcome is recorded there, and a message
        # the restart lost is re-sent by the reaper.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        task_track_started=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    app.gtapp_settings = settings
    from workers.tasks import register_tasks

    register_tasks(app, settings)
    return app


@lru_cache(maxsize=8)
def _app_for(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json), with_backend=False)


def get_app(settings: Optional[Settings] = None) -> Celery:
    """A cached send-only app for these settings (the job API sends tasks with it)."""
    settings = settings or get_settings()
    return _app_for(settings.model_dump_json(by_alias=False))


# --- worker process hooks ------------------------------------------------------------------

_reaper = None


@signals.worker_init.connect
def _prepare_before_fork(sender=None, **_):
    """Open (and migrate) the database in the main process before the pool forks: pool
    processes then inherit that it is migrated instead of each importing alembic to check,
    and the reaper's passes skip those slow first-use imports (a replacement pool process
    forked meanwhile must wait for the pass to end: see workers.reaper._pass_lock)."""
    settings = getattr(getattr(sender, "app", None), "gtapp_settings", None) or get_settings()
    try:
        from storage.db import get_engine
        from workers import reaper  # noqa: F401 — its fork guard is registered before any fork

        get_engine(settings=settings)
    except Exception as e:  # the database may come up later: pool processes and the reaper retry
        log.warning("could not open the database before starting the pool: %s", e)


@signals.worker_process_init.connect
def _after_fork(**_):
    """Pool processes must not reuse the parent's DB connections."""
    from storage.db import dispose_all

    dispose_all()


@signals.worker_ready.connect
def _start_reaper(sender=None, **_):
    global _reaper
    settings = getattr(getattr(sender, "app", None), "gtapp_settings", None) or get_settings()
    if settings.reaper_in_worker and _reaper is None:
        from workers.reaper import ReaperThread

        _reaper = ReaperThread(settings)
        _reaper.start()
        log.info("reaper started (every %ss, stale after %ss)", _reaper.interval, settings.heartbeat_stale_s)


@signals.worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper is not None:
        _reaper.stop()


app = make_celery()
