"""The Celery application's configuration: Redis broker and result backend from settings,
``cpu`` and ``gpu`` queues, one task per job kind (workers/celery_tasks.py).

Reliability settings: late acks plus ``task_reject_on_worker_lost`` (a message is only
acknowledged once its job has finished, and requeued if the pool process dies), prefetch 1
(a worker never holds jobs it is not running), a broker visibility timeout longer than the
longest job (a slow job is never delivered twice), soft and hard time limits, running jobs
kept through a broker reconnect.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

from celery import Celery
from kombu import Exchange, Queue

from storage.settings import Settings, get_settings
from workers.celery_tasks import register_tasks


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
    register_tasks(app, settings)
    return app


@lru_cache(maxsize=8)
def _app_for(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json), with_backend=False)


def get_app(settings: Optional[Settings] = None) -> Celery:
    """A cached send-only app for these settings (the job API sends tasks with it)."""
    settings = settings or get_settings()
    return _app_for(settings.model_dump_json(by_alias=False))
