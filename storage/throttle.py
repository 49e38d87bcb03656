"""The sign-in throttle: growing delays, then a temporary lock, per username and per client
address, from the failed sign-ins recorded in the database (so every dashboard process
applies the same limits, and a restart forgets nothing).

Rule, for each key (the username; the client address): failures older than
``signin_window_s`` are forgotten; after ``free`` failures within the window (``signin_free_failures``
per username, ``signin_free_failures_per_address`` per address), each further failure makes
the next attempt wait ``signin_lock_base_s · 2^(n − free)`` seconds from that failure, at most
``signin_lock_max_s``. While a key waits, every attempt is refused without the password being
checked — the right password too — and the page says when to retry. A successful sign-in
clears its username's failures.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.models import SignInFailure, utcnow

log = logging.getLogger("gtapp.signin")


class SignInLocked(Exception):
    """Too many failed sign-ins for this username or address; ``retry_after_s`` says when."""

    def __init__(self, retry_after_s: float, what: str):
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        super().__init__(f"Too many failed sign-ins for this {what}. Try again in {self.retry_after_s} s.")


def _wait(session: Session, column, value: str, free: int, settings, now: dt.datetime) -> float:
    since = now - dt.timedelta(seconds=settings.signin_window_s)
    n, last = session.execute(select(func.count(), func.max(SignInFailure.at))
                              .where(column == value, SignInFailure.at >= since)).one()
    if not n or n <= free:
        return 0.0
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.timezone.utc)
    delay = min(settings.signin_lock_max_s, settings.signin_lock_base_s * 2 ** (n - free - 1))
    return max(0.0, (last + dt.timedelta(seconds=delay) - now).total_seconds())


def check(session: Session, username: str, address: str, settings, now: Optional[dt.datetime] = None) -> None:
    """Raise :class:`SignInLocked` if this username or address must wait before trying again."""
    now = now or utcnow()
    by_user = _wait(session, SignInFailure.username, username.lower(), settings.signin_free_failures, settings, now)
    by_addr = _wait(session, SignInFailure.address, address, settings.signin_free_failures_per_address, settings, now)
    if by_user or by_addr:
        raise SignInLocked(max(by_user, by_addr), "account" if by_user >= by_addr else "address")


def record_failure(session: Session, username: str, address: str, settings) -> None:
    now = utcnow()
    session.execute(delete(SignInFailure).where(
        SignInFailure.at < now - dt.timedelta(seconds=max(settings.signin_window_s, 86400))))
    session.add(SignInFailure(username=username.lower()[:100], address=address[:64], at=now))
    log.warning("failed sign-in for %r from %s", username[:100], address[:64])


def clear(session: Session, username: str) -> None:
    session.execute(delete(SignInFailure).where(SignInFailure.username == username.lower()))
