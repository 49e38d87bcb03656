"""Sending a queued job to whoever runs it: the Celery broker, or the embedded worker."""

from __future__ import annotations

import logging
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import update

from storage.db import session_scope
from storage.models import Job, utcnow
from storage.settings import Settings

log = logging.getLogger("gtapp.jobs")


class QueueUnavailable(RuntimeError):
    """The job broker could not be reached; the job was not queued."""


def redact(url: Optional[str]) -> str:
    """A URL without its password, for messages."""
    if not url:
        return "(none)"
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def task_name(kind: str) -> str:
    return f"gtapp.job.{kind}"


def send(settings: Settings, job_id: int, kind: str, queue: str, run_here: bool = True) -> None:
    """Hand job ``job_id`` to the workers. Raises QueueUnavailable when the broker is down.

    Embedded mode (no broker): the database is the queue; ``run_here`` starts (or wakes)
    this process's embedded worker, otherwise the job waits for a process that runs one.
    """
    if settings.embedded:
        if run_here:
            from workers.embedded import get_embedded

            get_embedded(settings).wake()
    else:
        from workers.celery_app import get_app
        from workers.jobs import get_spec

        spec = get_spec(kind)
        soft = spec.soft_time_limit_s or settings.job_soft_time_limit_s
        hard = soft + (settings.job_hard_time_limit_s - settings.job_soft_time_limit_s)
        with session_scope(settings=settings) as s:
            n = (s.get(Job, job_id).dispatches or 0) + 1
        try:
            get_app(settings).send_task(
                task_name(kind), args=[job_id], queue=queue, task_id=f"gtapp-job-{job_id}-{n}",
                soft_time_limit=soft, time_limit=hard, retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5})
        except Exception as e:  # kombu.exceptions.OperationalError, redis ConnectionError, ...
            raise QueueUnavailable(
                f"could not queue job {job_id}: the job broker at {redact(settings.broker_url)} is unreachable "
                f"({type(e).__name__}: {e}). Start Redis, or unset BROKER_URL to run jobs in-process.") from e
    with session_scope(settings=settings) as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(dispatches=Job.dispatches + 1, dispatched_at=utcnow()))
