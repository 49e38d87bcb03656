"""Fixtures for storage tests: a fresh PostgreSQL database per session (real server), and
settings for each backend. Services that are down make these tests skip, except under CI
(CI=true or GTAPP_TEST_REQUIRE_SERVICES=1), where they fail."""

from __future__ import annotations

import pytest
from needs import missing

from storage.settings import Settings
from testkit.services import postgres_reachable, temp_postgres_database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_url():
    if not postgres_reachable(PG_ADMIN):
        missing("PostgreSQL at 127.0.0.1:5432")
    with temp_postgres_database(PG_ADMIN, prefix="gtapp_storage") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path) -> Settings:
    """Settings on a fresh SQLite file, or on the session's PostgreSQL database."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'gtapp.db'}"
    return Settings(data_dir=tmp_path, database_url=url, broker_url=None, _env_file=None)
