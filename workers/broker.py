"""The broker, as gtapp sees it: its names for tasks, passwords kept out of messages, and
broker epochs (since when the broker has held every message sent to it).

A Redis broker without persistence loses every queued message when it restarts (and a
FLUSH or an eviction loses them too), so :func:`broker_epoch` tells the reaper since when
the broker has held everything sent to it: a job still ``queued`` that was sent before then
may have no message left, and is sent again (a duplicate is harmless: claiming is a
compare-and-set on the row). A job's ``dispatched_at`` is read from the broker's clock, as
the epoch is, so the two compare exactly whatever the submitting machine's clock says.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from storage.settings import Settings


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
