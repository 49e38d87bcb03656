"""Sending a queued job to whoever runs it.

The database is the source of truth for jobs; a broker message only says "run a job of
this kind" (workers.fairness picks which). With a broker configured the message goes to
Celery; without one (embedded mode) the database is the queue, and the process that runs an
embedded worker polls it (the job client wakes its own). Either way the row records when and
how often it was sent (``dispatched_at`` on the broker's clock, see workers.broker).
"""

from __future__ import annotations

import logging

from sqlalchemy import update

from storage.db import session_scope
from storage.models import Job, utcnow
from storage.settings import Settings
from workers.broker import QueueUnavailable, broker_epoch, redact, task_name
from workers.celery_config import get_app
from workers.jobs import get_spec

log = logging.getLogger("gtapp.jobs")

__all__ = ["QueueUnavailable", "send"]


def send(settings: Settings, job_id: int, kind: str, queue: str) -> None:
    """Hand job ``job_id`` to the workers. Raises QueueUnavailable when the broker is down.
    Embedded mode (no broker): nothing to send; the row is marked sent."""
    if not settings.embedded:
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
    sent_at = utcnow()
    if not settings.embedded:
        try:  # the broker's clock; after a broker restart, the first send starts the new epoch
            clock = broker_epoch(settings)
            sent_at = clock[1] if clock else sent_at
        except Exception as e:  # the message is sent; the reaper starts the epoch on its next pass
            log.warning("could not read the broker epoch: %s", e)
    with session_scope(settings=settings) as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(dispatches=Job.dispatches + 1, dispatched_at=sent_at))
