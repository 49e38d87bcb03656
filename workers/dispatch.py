"""Sending a queued job to whoever runs it: the Celery broker, or the embedded worker.

The database is the source of truth for jobs; a broker message only says "run job N". A
Redis broker without persistence loses every queued message when it restarts (and a FLUSH
or an eviction loses them too), so :func:`broker_epoch` tells the reaper since when the
broker has held everything sent to it: a job still ``queued`` that was sent before then may
have no message left, and is sent again (a duplicate is harmless: claiming is a
compare-and-set on the row). A job's ``dispatched_at`` is read from the broker's clock, as
the epoch is, so the two compare exactly whatever the submitting machine's clock says.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any, Optional
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


# --- broker epochs: since when has the broker held every message sent to it? -------------------

# The epoch key holds "<broker clock, seconds.micros>|<Redis run_id>". It is (re)written when
# missing (a restart without persistence, a FLUSH, an eviction) or when it names another
# run_id (a restart that restored it from a snapshot older than the last messages, or a
# failover): either way, messages sent before now may be gone. Atomic, so racing callers
# agree; returns {the key's value, the broker's clock now}.
_EPOCH_SCRIPT = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and string.sub(v, sep + 1) == run then return {v, now} end
end
v = now .. '|' .. run
redis.call('SET', KEYS[1], v)
return {v, now}
"""
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _redis_client(settings: Settings):
    """A cached redis-py client for the broker (None when the broker is not Redis)."""
    url = settings.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            import redis

            timeout = settings.broker_connect_timeout_s
            client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=timeout,
                                                          socket_timeout=max(timeout, 5.0))
        return client


def epoch_key(settings: Settings) -> str:
    return f"{settings.broker_key_prefix}gtapp:broker-epoch"


def broker_epoch(settings: Settings) -> Optional[tuple[dt.datetime, dt.datetime]]:
    """(epoch, now), both UTC on the broker's clock: since when the broker has kept every
    message sent to it, starting a new epoch if it restarted or lost data since the last call
    (see _EPOCH_SCRIPT); a job still queued that was sent at or before the epoch may have no
    message left. None when the broker is not Redis; raises when it cannot be reached."""
    client = _redis_client(settings)
    if client is None:
        return None
    value, now = (x.decode() if isinstance(x, bytes) else x
                  for x in client.eval(_EPOCH_SCRIPT, 1, epoch_key(settings)))
    return _utc(value.split("|", 1)[0]), _utc(now)


def _utc(seconds: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(seconds), tz=dt.timezone.utc)
