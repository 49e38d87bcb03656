"""gtapp's one settings module: every deployment knob, read from the environment and an
optional ``.env`` file. Nothing else in the code base reads ``os.environ``.

Names: each field reads ``GTAPP_<FIELD>`` (e.g. ``GTAPP_ARTIFACT_ROOT``); the three
connection strings also accept the conventional plain names ``DATABASE_URL``,
``BROKER_URL`` and ``RESULT_BACKEND``.

Defaults give a working single machine with nothing else running: SQLite under
``data_dir`` and no broker (jobs run in an embedded in-process worker).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GTAPP_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True)

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="root for the default SQLite DB and artifacts")
    database_url: Optional[str] = Field(
        None, validation_alias=AliasChoices("GTAPP_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; default sqlite:///<data_dir>/gtapp.db")
    artifact_root: Optional[Path] = Field(None, description="content-addressed store; default <data_dir>/artifacts")
    auto_migrate: bool = Field(True, description="run Alembic upgrade head on first use of a database")

    # --- job queue ------------------------------------------------------------------------
    broker_url: Optional[str] = Field(
        None, validation_alias=AliasChoices("GTAPP_BROKER_URL", "BROKER_URL", "broker_url"),
        description="Celery broker (redis://...); unset = embedded in-process worker")
    result_backend: Optional[str] = Field(
        None, validation_alias=AliasChoices("GTAPP_RESULT_BACKEND", "RESULT_BACKEND", "result_backend"),
        description="Celery result backend; default = broker_url")
    broker_key_prefix: str = Field("", description="prefix for every broker key (isolates deployments sharing a Redis)")
    broker_connect_timeout_s: float = 3.0
    embedded_workers: int = Field(1, ge=1, le=64, description="threads of the embedded worker")
    embedded_poll_s: float = Field(0.5, gt=0)

    # --- job limits and liveness ---------------------------------------------------------------
    job_soft_time_limit_s: int = Field(6 * 3600, gt=0, description="a job is asked to stop after this")
    job_hard_time_limit_s: int = Field(6 * 3600 + 600, gt=0, description="a job's process is killed after this")
    job_max_attempts: int = Field(3, ge=1, le=20, description="runs of one job before the reaper fails it")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="how often a running job touches its row")
    heartbeat_stale_s: float = Field(60.0, gt=0, description="a running job silent this long has lost its worker")
    progress_min_interval_s: float = Field(0.5, ge=0, description="throttle for progress writes to the DB")
    reaper_interval_s: float = Field(15.0, gt=0)
    reaper_in_worker: bool = Field(True, description="each worker process runs a reaper thread")
    redispatch_after_s: float = Field(120.0, gt=0, description="re-send a queued job whose message may be lost")
    redispatch_unclaimed_after_s: float = Field(
        3600.0, gt=0, description="re-send a queued job that no worker has claimed this many seconds after its "
                                  "last send (the wait doubles after each re-send): a safety net for a broker "
                                  "message lost without a broker restart")
    max_active_jobs_per_org: int = Field(8, ge=1, description="queued + running jobs one organisation may have")
    max_active_jobs_per_user: int = Field(4, ge=1, description="queued + running jobs one user may have")
    max_job_steps: int = Field(20_000, ge=1, description="the most training steps a member's job may ask for "
                                                        "(admins: the job kind's own bound)")
    db_retry_s: float = Field(120.0, ge=0, description="how long a worker retries a database it cannot reach "
                                                       "before giving up claiming a job or recording its outcome")

    # --- uploads / misc ----------------------------------------------------------------------
    max_upload_mb: int = Field(512, gt=0)
    max_concurrent_uploads: int = Field(2, ge=1, le=64, description="uploads one sign-in may send at once")
    max_concurrent_validations: int = Field(1, ge=1, le=64, description="adapter validations (a child process "
                                                                        "each) one user may run at once")
    log_tail_lines: int = Field(40, ge=1)

    # --- accounts ---------------------------------------------------------------------------
    first_admin_org: str = "provider"
    first_admin_username: str = "admin"
    first_admin_password: Optional[str] = Field(
        None, description="unset: the first admin cannot log in until a password is set")
    cli_user: Optional[str] = Field(None, description="username the CLI acts as; default: the first admin")
    secret_key: Optional[str] = Field(None, description="dashboard session signing key")
    signin_window_s: float = Field(900.0, gt=0, description="failed sign-ins older than this are forgotten")
    signin_free_failures: int = Field(5, ge=1, description="failed sign-ins per username before delays start")
    signin_free_failures_per_address: int = Field(20, ge=1, description="failed sign-ins per client address "
                                                                       "before delays start")
    signin_lock_base_s: float = Field(2.0, gt=0, description="the first delay; it doubles with each further failure")
    signin_lock_max_s: float = Field(900.0, gt=0, description="the longest a username or address is locked")

    # --- dashboard (python app.py) ------------------------------------------------------------
    dashboard_host: str = Field("127.0.0.1", description="address the dashboard listens on")
    dashboard_port: int = Field(7860, ge=1, le=65535)
    session_ttl_s: int = Field(12 * 3600, gt=0, description="a dashboard sign-in lasts this long")
    cookie_secure: bool = Field(False, description="send the session cookie over HTTPS only (behind TLS)")
    allowed_origins: list[str] = Field(default_factory=list, description="other origins (scheme://host:port) "
                                       "allowed to send state-changing and CORS requests; the dashboard's own "
                                       "origin always is")
    zoo_dir: Optional[Path] = Field(None, description="folder of zoo model pairs (each with tiny/, llm/, "
                                                      "recipe.json) admins can register; default <data_dir>/zoo")
    register_zoo_on_start: bool = Field(True, description="the dashboard registers every zoo folder under "
                                                          "zoo_dir that is not registered yet when it starts")
    # Gradio's queue keeps this many past events and summarises them (pandas, percentiles) every
    # so many events, for its monitoring page; its defaults (10,000, every event) were a quarter
    # of the dashboard's CPU under load. Gradio's own variable names are accepted too.
    queue_analytics_events: int = Field(1000, ge=1, validation_alias=AliasChoices(
        "GTAPP_QUEUE_ANALYTICS_EVENTS", "GRADIO_ANALYTICS_MAX_EVENTS", "queue_analytics_events"))
    queue_analytics_every: int = Field(500, ge=1, validation_alias=AliasChoices(
        "GTAPP_QUEUE_ANALYTICS_EVERY", "GRADIO_ANALYTICS_CACHE_FREQUENCY", "queue_analytics_every"))
    publish_bench_results: bool = Field(True, description="the dashboard offers the benchmark results committed "
                                        "under bench/results in every user's Compare tab")

    @model_validator(mode="after")
    def _derived(self) -> "Settings":
        if self.job_hard_time_limit_s <= self.job_soft_time_limit_s:
            raise ValueError("job_hard_time_limit_s must be greater than job_soft_time_limit_s")
        if self.heartbeat_stale_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_stale_s must be greater than heartbeat_interval_s")
        return self

    # --- derived values ---------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Heroku-style postgres:// and plain postgresql:// -> the psycopg 3 driver.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://"):]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        # a relative data_dir resolves against the working directory of the moment
        return _sqlite_url(self.data_dir, None if self.data_dir.is_absolute() else os.getcwd())

    @property
    def artifacts_dir(self) -> Path:
        return (self.artifact_root or (self.data_dir / "artifacts")).resolve()

    @property
    def zoo_root(self) -> Path:
        return (self.zoo_dir or (self.data_dir / "zoo")).resolve()

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in an in-process worker."""
        return not self.broker_url

    @property
    def backend_url(self) -> Optional[str]:
        return self.result_backend or self.broker_url

    @property
    def visibility_timeout_s(self) -> int:
        """Broker redelivery timeout: longer than the longest job, so a slow job is never
        delivered twice; lost workers are handled by the reaper instead."""
        return int(self.job_hard_time_limit_s + 3600)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (after the environment changed, e.g. in tests)."""
    get_settings.cache_clear()


@lru_cache(maxsize=64)
def _sqlite_url(data_dir: Path, cwd: Optional[str]) -> str:
    """The embedded default database of ``data_dir`` (resolved once: every session asks)."""
    return f"sqlite:///{(data_dir / 'gtapp.db').resolve()}"


def child_environment(overrides: Optional[dict] = None, drop_prefix: Optional[str] = None) -> dict[str, str]:
    """The environment for a child process this one starts (a dashboard under test, a benchmark
    run, apt-get): this process's, less the variables starting with ``drop_prefix``, plus
    ``overrides``. Here, beside the settings, so that one module reads ``os.environ``."""
    env = {k: v for k, v in os.environ.items() if not (drop_prefix and k.startswith(drop_prefix))}
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env
