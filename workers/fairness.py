"""Fair share between organisations: which queued job a free worker runs next.

A free worker takes a job from the organisation with the fewest jobs running now; among
equals, the one served least recently (its latest job started longest ago, or never);
within an organisation, the oldest queued job first. So six long fine-tunes from one
member do not hold back another organisation's job: it runs as soon as any worker frees up
(round-robin across organisations), while each organisation's own jobs keep their order.

Both the embedded worker and the Celery workers use it: a broker message says "run a job
of this kind", and the job it names is only the default; the worker claims the fairest
queued job of that kind instead (kind, so that the message's queue and time limits fit the
job), and if another worker claimed that one first, the next fairest. Every queued job
still has a message of its own, and every message claims a job while one is queued, so
every job runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Job

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SCAN = 2000  # queued jobs looked at per pick (oldest first)


def next_job(session: Session, kind: Optional[str] = None, exclude: Iterable[int] = ()) -> Optional[int]:
    """The id of the queued job (of ``kind``, if given; not in ``exclude``) a free worker should
    run next, or None."""
    q = select(Job.id, Job.org_id).where(Job.status == "queued").order_by(Job.id).limit(_SCAN)
    if kind is not None:
        q = q.where(Job.kind == kind)
    exclude = list(exclude)
    if exclude:
        q = q.where(Job.id.not_in(exclude))
    queued = session.execute(q).all()
    if not queued:
        return None
    orgs = {org for _, org in queued}
    if len(orgs) == 1:
        return queued[0][0]
    running = dict(session.execute(select(Job.org_id, func.count()).where(
        Job.status == "running", Job.org_id.in_(orgs)).group_by(Job.org_id)).all())
    last = dict(session.execute(select(Job.org_id, func.max(Job.started_at)).where(
        Job.org_id.in_(orgs), Job.started_at.is_not(None)).group_by(Job.org_id)).all())
    first: dict[int, int] = {}
    for job_id, org in queued:
        first.setdefault(org, job_id)

    def key(org: int):
        t = last.get(org) or _EPOCH
        if isinstance(t, str):  # SQLite's max() of a timestamp column comes back as text
            t = dt.datetime.fromisoformat(t)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return running.get(org, 0), t, first[org]
    return first[min(orgs, key=key)]
