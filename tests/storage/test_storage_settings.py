"""Settings: GTAPP_ prefix, plain DATABASE_URL/BROKER_URL, .env file, derived values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from storage.settings import Settings, get_settings, reset_settings


def test_defaults_give_sqlite_and_embedded(tmp_path, monkeypatch):
    for k in ("DATABASE_URL", "BROKER_URL", "GTAPP_DATABASE_URL", "GTAPP_BROKER_URL", "RESULT_BACKEND"):
        monkeypatch.delenv(k, raising=False)
    s = Settings(data_dir=tmp_path, _env_file=None)
    assert s.db_url == f"sqlite:///{(tmp_path / 'gtapp.db').resolve()}"
    assert s.embedded and s.backend_url is None
    assert s.artifacts_dir == (tmp_path / "artifacts").resolve()
    assert s.visibility_timeout_s > s.job_hard_time_limit_s > s.job_soft_time_limit_s


def test_env_prefix_and_plain_names(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/gt")
    monkeypatch.setenv("BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GTAPP_MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("GTAPP_HEARTBEAT_STALE_S", "30")
    s = Settings(_env_file=None)
    assert s.db_url == "postgresql+psycopg://u:p@db:5432/gt"
    assert s.broker_url == "redis://redis:6379/0" and s.backend_url == "redis://redis:6379/0" and not s.embedded
    assert s.max_upload_mb == 7 and s.heartbeat_stale_s == 30
    monkeypatch.setenv("GTAPP_DATABASE_URL", "sqlite:////tmp/other.db")  # the prefixed name wins
    assert Settings(_env_file=None).db_url == "sqlite:////tmp/other.db"


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    for k in ("DATABASE_URL", "BROKER_URL", "GTAPP_DATABASE_URL", "GTAPP_BROKER_URL", "GTAPP_ARTIFACT_ROOT"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / ".env").write_text("GTAPP_ARTIFACT_ROOT=/srv/artifacts\nBROKER_URL=redis://localhost:6399/3\n")
    monkeypatch.chdir(tmp_path)
    reset_settings()
    try:
        s = get_settings()
        assert str(s.artifacts_dir) == "/srv/artifacts"
        assert s.broker_url == "redis://localhost:6399/3"
    finally:
        reset_settings()


def test_inconsistent_limits_are_refused():
    with pytest.raises(ValidationError, match="hard_time_limit"):
        Settings(job_soft_time_limit_s=100, job_hard_time_limit_s=50, _env_file=None)
    with pytest.raises(ValidationError, match="heartbeat_stale_s"):
        Settings(heartbeat_interval_s=10, heartbeat_stale_s=5, _env_file=None)
