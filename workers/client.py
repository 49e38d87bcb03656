"""The job API used by the CLI, the dashboard and tests alike.

    from workers import client
    job_id = client.submit("selftest", {"steps": 5}, user="alice")
    view = client.wait(job_id, timeout=60)
    client.get(job_id, user="alice"); client.list(user="alice"); client.cancel(job_id, user="alice")

``user`` is a username, a user id, a ``storage.models.User`` or a
``storage.accounts.Principal``. Tenancy is enforced here: a member sees and cancels only
their organisation's jobs and cannot submit admin kinds (shadow, train_mapper, bench);
an admin sees everything. Unknown and foreign jobs both read as "not found".

Submitting checks the kind and its parameters, reserves privacy budget for DP jobs (a job
that would exceed its dataset's budget is refused before anything is queued), records the
row as ``queued`` and hands it to the broker; if the broker is unreachable the row is
marked failed with the reason, the reservation is released, and ``QueueUnavailable`` is
raised. With no broker configured, jobs run in an embedded in-process worker.
"""

from __future__ import annotations

import builtins
import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from sqlalchemy import select, update

from storage import ledger
from storage.accounts import Principal, UserRef, ensure_first_admin, principal
from storage.db import read_scope, session_scope
from storage.models import TERMINAL, Job, utcnow
from storage.settings import Settings, get_settings
from storage.tenancy import NotFound, owned, visible
from workers.dispatch import QueueUnavailable, send
from workers.embedded import get_embedded
from workers.jobs import REGISTRY, JobNotAvailable, get_spec

__all__ = ["JobClient", "JobView", "JobNotFound", "JobLimit", "QueueUnavailable", "JobNotAvailable", "submit", "get", "list",
           "cancel", "retry", "wait", "kinds", "default_client"]


class JobNotFound(NotFound):
    pass


class JobLimit(ValueError):
    """A job was refused because its organisation or user has too many, or it asks too much."""


@dataclass(frozen=True)
class JobView:
    """A detached snapshot of a job row."""

    id: int
    kind: str
    queue: str
    status: str
    progress: float
    stage: str
    eta_s: Optional[float]
    attempts: int
    max_attempts: int
    worker: Optional[str]
    error: Optional[str]
    log_tail: str
    params: dict
    outputs: dict
    cancel_requested: bool
    org_id: int
    user_id: Optional[int]
    run_dir: Optional[str]
    created_at: dt.datetime
    started_at: Optional[dt.datetime] = None
    finished_at: Optional[dt.datetime] = None
    heartbeat_at: Optional[dt.datetime] = None
    extra: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def elapsed_s(self) -> Optional[float]:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, dt.datetime):
                d[k] = v.isoformat()
        d["elapsed_s"] = self.elapsed_s
        return d

    @classmethod
    def of(cls, j: Job) -> "JobView":
        return cls(id=j.id, kind=j.kind, queue=j.queue, status=j.status, progress=j.progress, stage=j.stage,
                   eta_s=j.eta_s, attempts=j.attempts, max_attempts=j.max_attempts, worker=j.worker, error=j.error,
                   log_tail=j.log_tail or "", params=dict(j.params or {}), outputs=dict(j.outputs or {}),
                   cancel_requested=j.cancel_requested, org_id=j.org_id, user_id=j.user_id, run_dir=j.run_dir,
                   created_at=j.created_at, started_at=j.started_at, finished_at=j.finished_at,
                   heartbeat_at=j.heartbeat_at)


class JobClient:
    """``run_embedded``: with no broker configured, run submitted jobs on this process's
    embedded worker (the dashboard, tests); False leaves them queued in the database for
    whichever process runs a worker (``gtapp jobs worker``)."""

    def __init__(self, settings: Optional[Settings] = None, run_embedded: bool = True):
        self.settings = settings or get_settings()
        self.run_embedded = run_embedded

    # --- helpers ------------------------------------------------------------------------------
    def _session(self):
        return session_scope(settings=self.settings)

    def _reading(self):
        """Reads only (storage.db.read_scope): a job list never waits for the write lock."""
        return read_scope(settings=self.settings)

    def _visible(self, s, job_id: int, who: Principal) -> Job:
        return visible(s, Job, job_id, who, "job", error=JobNotFound)

    def principal(self, user: UserRef) -> Principal:
        with self._session() as s:
            return principal(s, user)

    def ensure_ready(self) -> None:
        """Create the first admin on an empty database; start the embedded worker if no broker."""
        with self._session() as s:
            ensure_first_admin(s, self.settings)
        if self.settings.embedded:
            get_embedded(self.settings)

    # --- the API --------------------------------------------------------------------------------
    def submit(self, kind: str, params: Optional[dict], user: UserRef, max_attempts: Optional[int] = None) -> int:
        spec = get_spec(kind)
        ok, why = spec.available()
        if not ok:
            raise JobNotAvailable(why)
        if spec.admin_only:  # refused before its parameters are even looked at
            with self._session() as s:
                if not principal(s, user).is_admin:
                    raise PermissionError(f"job kind '{kind}' is for admins only")
        clean = spec.check_params(params)
        attempts = max_attempts or self.settings.job_max_attempts
        if not 1 <= attempts <= 20:
            raise ValueError("max_attempts must be in 1..20")
        with self._session() as s:
            who = principal(s, user)
            if spec.admin_only and not who.is_admin:
                raise PermissionError(f"job kind '{kind}' is for admins only")
            _check_references(s, clean, who)
            if spec.precheck is not None:
                spec.precheck(clean, s, who)
            _check_share(s, clean, who, self.settings)
            job = Job(kind=kind, queue=spec.queue, params=clean, status="queued", progress=0.0, stage="queued",
                      max_attempts=attempts, org_id=who.org_id, user_id=who.user_id, created_at=utcnow())
            s.add(job)
            s.flush()
            request = spec.privacy(clean, s) if spec.privacy else None
            if request is not None:
                ledger.record(s, request, org_id=who.org_id, job_id=job.id)  # a refusal rolls back
            job_id = job.id
        try:
            send(self.settings, job_id, kind, spec.queue)
            if self.settings.embedded and self.run_embedded:
                get_embedded(self.settings).wake()  # this process runs jobs: start on it now
        except QueueUnavailable as e:
            with self._session() as s:
                job = s.get(Job, job_id)
                if job.status == "queued":
                    job.status, job.stage, job.error, job.finished_at = "failed", "not queued", str(e), utcnow()
                    ledger.settle(s, job_id, "not_started", note="released: the job could not be queued")
            raise
        return job_id

    def get(self, job_id: int, user: UserRef) -> JobView:
        with self._reading() as s:
            return JobView.of(self._visible(s, job_id, principal(s, user)))

    def queue_place(self, job_id: int, user: UserRef) -> Optional[str]:
        """Where a queued job stands, in words (None once it is not queued): its organisation's
        jobs ahead of it (they run in order), how many other organisations' jobs are queued
        (served fairly, workers.fairness: only a count, never whose), and what it waits for."""
        from sqlalchemy import func

        with self._reading() as s:
            job = self._visible(s, job_id, principal(s, user))
            if job.status != "queued":
                return None

            def count(*where) -> int:
                return int(s.scalar(select(func.count()).select_from(Job).where(*where)) or 0)

            own = count(Job.status == "queued", Job.org_id == job.org_id, Job.id < job.id)
            others = count(Job.status == "queued", Job.org_id != job.org_id)
            running = count(Job.status == "running", Job.queue == job.queue)
            queue = job.queue
        ahead = "next of your organisation's jobs" if own == 0 else f"{own} of your organisation's jobs ahead of it"
        return (f"queued: {ahead}; {others} other organisations' job(s) queued (workers serve organisations in "
                f"turn); waiting for a free worker on the '{queue}' queue ({running} running there now)")

    def list(self, user: UserRef, status: Optional[str] = None, kind: Optional[str] = None,
             limit: int = 100, offset: int = 0) -> builtins.list[JobView]:
        with self._reading() as s:
            who = principal(s, user)
            q = owned(select(Job).order_by(Job.id.desc()).limit(max(1, min(limit, 1000))).offset(max(offset, 0)),
                      Job, who)
            if status:
                q = q.where(Job.status == status)
            if kind:
                q = q.where(Job.kind == kind)
            return [JobView.of(j) for j in s.scalars(q)]

    def cancel(self, job_id: int, user: UserRef) -> JobView:
        """A queued job is cancelled at once; a running one is asked to stop (it stops at
        its next progress report, within a few seconds). Finished jobs are left as they are."""
        with self._session() as s:
            job = self._visible(s, job_id, principal(s, user))
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
                status="cancelled", stage="cancelled before it started", finished_at=utcnow(),
                cancel_requested=True, error="cancelled by request before it started"))
            if res.rowcount == 1:
                ledger.settle(s, job_id, "not_started", note="released: cancelled before it started")
            else:  # running (ask it to stop) or already finished (nothing to do)
                s.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True))
            s.flush()
            s.refresh(job)
            return JobView.of(job)

    def retry(self, job_id: int, user: UserRef) -> int:
        """A new job with the same kind and parameters as a failed or cancelled one."""
        with self._session() as s:
            job = self._visible(s, job_id, principal(s, user))
            if job.status not in ("failed", "cancelled"):
                raise ValueError(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
            kind, params = job.kind, dict(job.params or {})
        return self.submit(kind, params, user)

    def wait(self, job_id: int, timeout: float = 600.0, user: Optional[UserRef] = None, poll: float = 0.2) -> JobView:
        """Block until the job finishes; raises TimeoutError (the job keeps running)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    raise JobNotFound(f"job {job_id} not found")
                if user is not None:
                    job = self._visible(s, job_id, principal(s, user))
                view = JobView.of(job)
            if view.finished:
                return view
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {view.status} after {timeout:g}s "
                                   f"({view.progress:.0%}, {view.stage})")
            time.sleep(poll)

    def kinds(self, user: Optional[UserRef] = None) -> builtins.list[dict]:
        who = self.principal(user) if user is not None else None
        out = []
        for kind, spec in sorted(REGISTRY.items()):
            ok, why = spec.available()
            out.append({"kind": kind, "queue": spec.queue, "admin_only": spec.admin_only, "available": ok,
                        "why_not": why, "defaults": spec.defaults, "description": spec.description,
                        "allowed": who is None or who.is_admin or not spec.admin_only})
        return out


def _check_references(s, params: dict, who: Principal) -> None:
    """Rows a job names must exist, and datasets/adapters must be the submitter's
    organisation's (admins included: an organisation's private data is its own)."""
    from storage.models import Adapter, Dataset, MapperVersion, ModelPairRecord

    def ids(value) -> builtins.list[int]:
        if value is None:
            return []
        values = value if isinstance(value, builtins.list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"expected integer ids, got {value!r}")
        return values

    for key, model, tenant in (("dataset_id", Dataset, True), ("refine_prompts_dataset_id", Dataset, True),
                               ("adapter_id", Adapter, True),
                               ("adapter_ids", Adapter, True), ("pair_id", ModelPairRecord, False),
                               ("mapper_id", MapperVersion, False)):
        label = key.removesuffix("_ids").removesuffix("_id")
        for ref in ids(params.get(key)):
            if tenant:
                visible(s, model, ref, who, label, admins_see_all=False, error=JobNotFound)
            elif s.get(model, ref) is None:
                raise JobNotFound(f"{label} {ref} not found")


def _check_share(s, params: dict, who: Principal, settings: Settings) -> None:
    """One organisation or user cannot fill the queue: caps on queued + running jobs per
    organisation and per user, and a bound on a member job's training steps (the fair order of
    what is queued is workers.fairness's)."""
    from sqlalchemy import func

    active = (Job.status.in_(("queued", "running")))
    n_org = s.scalar(select(func.count()).select_from(Job).where(active, Job.org_id == who.org_id))
    if n_org >= settings.max_active_jobs_per_org:
        raise JobLimit(f"your organisation already has {n_org} jobs queued or running (the limit is "
                       f"{settings.max_active_jobs_per_org}); wait for one to finish, or cancel one")
    n_user = s.scalar(select(func.count()).select_from(Job).where(active, Job.user_id == who.user_id))
    if n_user >= settings.max_active_jobs_per_user:
        raise JobLimit(f"you already have {n_user} jobs queued or running (the limit is "
                       f"{settings.max_active_jobs_per_user}); wait for one to finish, or cancel one")
    steps = params.get("steps")
    if not who.is_admin and isinstance(steps, int) and steps > settings.max_job_steps:
        raise JobLimit(f"{steps} training steps asked for; a job may run at most {settings.max_job_steps} "
                       "steps here (ask an admin for a longer run)")


_default: dict[str, JobClient] = {}


def default_client() -> JobClient:
    settings = get_settings()
    key = settings.model_dump_json()
    if key not in _default:
        _default.clear()
        _default[key] = JobClient(settings)
    return _default[key]


def submit(kind: str, params: Optional[dict], user: UserRef, max_attempts: Optional[int] = None) -> int:
    return default_client().submit(kind, params, user, max_attempts)


def get(job_id: int, user: UserRef) -> JobView:
    return default_client().get(job_id, user)


def list(user: UserRef, status: Optional[str] = None, kind: Optional[str] = None,  # noqa: A001
         limit: int = 100) -> builtins.list[JobView]:
    return default_client().list(user, status=status, kind=kind, limit=limit)


def cancel(job_id: int, user: UserRef) -> JobView:
    return default_client().cancel(job_id, user)


def retry(job_id: int, user: UserRef) -> int:
    return default_client().retry(job_id, user)


def wait(job_id: int, timeout: float = 600.0, user: Optional[UserRef] = None) -> JobView:
    return default_client().wait(job_id, timeout, user)


def kinds(user: Optional[UserRef] = None) -> builtins.list[dict]:
    return default_client().kinds(user)

