"""The database schema (SQLAlchemy 2 declarative). Migrations live in storage/migrations;
change a model here, then add an Alembic revision.

Timestamps are stored as UTC and always returned timezone-aware.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer,
                        MetaData, String, Text, TypeDecorator, UniqueConstraint, text)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("member", "admin")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ADAPTER_ORIGINS = ("uploaded", "produced", "generated")  # generated: an LLM adapter made by a generate job
LEDGER_STATUSES = ("reserved", "spent", "released")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC; returns aware UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use storage.models.utcnow()")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[dt.datetime], dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


JSONType = JSON().with_variant(JSONB(), "postgresql")
Sha = String(64)


def _enum_check(column: str, values: tuple[str, ...]) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"{column}_valid")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    users: Mapped[list["User"]] = relationship(back_populates="org")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (_enum_check("role", ROLES),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[Optional[str]] = mapped_column(String(255))  # None: cannot log in
    role: Mapped[str] = mapped_column(String(16), default="member")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    org: Mapped[Organisation] = relationship(back_populates="users")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class RevokedSession(Base):
    """A signed-out session token (by its nonce), refused by every dashboard process until it
    would have expired anyway; rows past ``expires_at`` are purged on the next sign-out."""

    __tablename__ = "revoked_sessions"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class BenchmarkRecord(Base):
    """A benchmark results JSON an admin keeps for every user's Compare tab (the rows live in
    the artifact store)."""

    __tablename__ = "benchmarks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    artifact: Mapped[str] = mapped_column(String(64))
    n_rows: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SignInFailure(Base):
    """A failed sign-in (wrong password, unknown or disabled user), kept for the throttle
    (``storage.throttle``) and as a record; a successful sign-in clears its username's."""

    __tablename__ = "sign_in_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)


class Dataset(Base):
    """An organisation's dataset: examples as a JSONL artifact, plus its privacy budget."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[Optional[str]] = mapped_column(String(100))  # task family / metric hint
    artifact: Mapped[Optional[str]] = mapped_column(Sha)  # sha256 of the examples JSONL
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)
    epsilon_budget: Mapped[Optional[float]] = mapped_column(Float)  # None: no DP budget set
    delta: Mapped[float] = mapped_column(Float, default=1e-5)
    # the organisation's explicit choice that this budgeted dataset may be trained on without DP
    no_dp_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    no_dp_marked_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    no_dp_marked_at: Mapped[Optional[dt.datetime]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelPairRecord(Base):
    """A TinyLM/LLM pair of one family with its recipe (gtapp.lora.recipe.RecipePair as JSON)."""

    __tablename__ = "model_pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    tiny_path: Mapped[str] = mapped_column(String(1000))
    llm_path: Mapped[str] = mapped_column(String(1000))
    recipe: Mapped[dict[str, Any]] = mapped_column()
    recipe_fingerprint: Mapped[str] = mapped_column(Sha)  # sha256 of the canonical recipe JSON
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Adapter(Base):
    """A LoRA adapter folder (stored as an artifact tree), uploaded or produced by a job."""

    __tablename__ = "adapters"
    __table_args__ = (_enum_check("origin", ADAPTER_ORIGINS),
                      CheckConstraint("model IN ('tiny', 'llm')", name="model_valid"))
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    model_pair_id: Mapped[int] = mapped_column(ForeignKey("model_pairs.id", ondelete="RESTRICT"))
    model: Mapped[str] = mapped_column(String(8))  # tiny | llm
    origin: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    artifact: Mapped[str] = mapped_column(Sha)  # tree manifest hash
    dataset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PairSetRecord(Base):
    """Shadow (ΔTiny, ΔLLM) pairs produced by a shadow job."""

    __tablename__ = "pair_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_pair_id: Mapped[int] = mapped_column(ForeignKey("model_pairs.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    n_pairs: Mapped[int] = mapped_column(Integer, default=0)
    artifact: Mapped[str] = mapped_column(Sha)
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MapperVersion(Base):
    """A trained mapper for one model pair; at most one per pair is promoted."""

    __tablename__ = "mapper_versions"
    __table_args__ = (
        UniqueConstraint("model_pair_id", "version"),
        # at most one promoted version per model pair
        Index("uq_mapper_versions_promoted", "model_pair_id", unique=True,
              sqlite_where=text("promoted"), postgresql_where=text("promoted")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    model_pair_id: Mapped[int] = mapped_column(ForeignKey("model_pairs.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(50))  # gt | ridge | mean | ...
    artifact: Mapped[str] = mapped_column(Sha)
    pair_set_id: Mapped[Optional[int]] = mapped_column(ForeignKey("pair_sets.id", ondelete="SET NULL"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        _enum_check("status", JOB_STATUSES),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_jobs_org_created", "org_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    queue: Mapped[str] = mapped_column(String(20), default="cpu")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(200), default="queued")
    eta_s: Mapped[Optional[float]] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    dispatches: Mapped[int] = mapped_column(Integer, default=0)  # messages sent to the broker
    worker: Mapped[Optional[str]] = mapped_column(String(255))
    error: Mapped[Optional[str]] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[Optional[dt.datetime]] = mapped_column()
    started_at: Mapped[Optional[dt.datetime]] = mapped_column()
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column()
    heartbeat_at: Mapped[Optional[dt.datetime]] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_dir: Mapped[Optional[str]] = mapped_column(String(300))  # relative to the artifact root

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    model_pair_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_pairs.id", ondelete="SET NULL"))
    adapter_id: Mapped[Optional[int]] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(100))  # gt, base_llm, oracle, ridge, ...
    task: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(50))
    value: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[Optional[float]] = mapped_column(Float)
    n_clients: Mapped[Optional[int]] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PrivacyLedgerEntry(Base):
    """One DP job's spend on one dataset. ``total_epsilon`` is the composed spend of the
    dataset after this entry, by ``accountant`` ('rdp' or 'basic')."""

    __tablename__ = "privacy_ledger"
    __table_args__ = (_enum_check("status", LEDGER_STATUSES), Index("ix_privacy_ledger_dataset", "dataset_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    mechanism: Mapped[dict[str, Any]] = mapped_column(default=dict)  # noise_multiplier, sample_rate, steps, ...
    status: Mapped[str] = mapped_column(String(16), default="reserved")
    total_epsilon: Mapped[float] = mapped_column(Float)
    accountant: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


COLLAB_STATUSES = ("open", "running", "done", "failed")
MEMBER_STATES = ("invited", "accepted", "declined", "withdrawn")


class Collaboration(Base):
    """Several organisations pooling TinyLM updates into one LLM adapter (storage.collaborations).
    ``organisation`` and ``method`` are gtapp.combine's; ``weighting`` data_size | equal | given."""

    __tablename__ = "collaborations"
    __table_args__ = (_enum_check("status", COLLAB_STATUSES),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model_pair_id: Mapped[int] = mapped_column(ForeignKey("model_pairs.id", ondelete="RESTRICT"))
    mapper_id: Mapped[Optional[int]] = mapped_column(ForeignKey("mapper_versions.id", ondelete="SET NULL"))
    organisation: Mapped[str] = mapped_column(String(32), default="average_then_map")
    method: Mapped[str] = mapped_column(String(32), default="mean")
    weighting: Mapped[str] = mapped_column(String(32), default="data_size")
    created_by_org: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    created_by_user: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what every member may see of the run
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CollaborationMember(Base):
    """One organisation in a collaboration: its consent and (only for the worker) its contribution."""

    __tablename__ = "collaboration_members"
    __table_args__ = (UniqueConstraint("collaboration_id", "org_id"), _enum_check("state", MEMBER_STATES))
    id: Mapped[int] = mapped_column(primary_key=True)
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("collaborations.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="invited")
    adapter_id: Mapped[Optional[int]] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    weight: Mapped[Optional[float]] = mapped_column(Float)  # for weighting 'given'
    result_adapter_id: Mapped[Optional[int]] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CollaborationEvent(Base):
    """The audit log every member of a collaboration can read."""

    __tablename__ = "collaboration_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("collaborations.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organisations.id", ondelete="SET NULL"))
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(50))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
