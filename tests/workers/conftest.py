"""Fixtures for the job system: real Redis (a private key prefix per session), a fresh
PostgreSQL database per session, and real Celery worker subprocesses.

Services that are down make these tests skip locally; under CI (CI=true or
GTAPP_TEST_REQUIRE_SERVICES=1) they fail instead."""

from __future__ import annotations

import os
import random
import uuid

import pytest

from jobs_helpers import make_settings
from workers.testing import CeleryWorker, postgres_reachable, redis_reachable, temp_postgres_database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"


def _service_missing(what: str):
    if os.environ.get("CI") == "true" or os.environ.get("GTAPP_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here but not reachable")
    pytest.skip(f"{what} not reachable")


@pytest.fixture(scope="session")
def broker_url() -> str:
    if not redis_reachable(REDIS):
        _service_missing("Redis at 127.0.0.1:6379")
    return f"{REDIS}/{random.randint(1, 15)}"


@pytest.fixture(scope="session")
def key_prefix(broker_url):
    """A private prefix for every broker/result key of this session; removed afterwards."""
    prefix = f"gtapp-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    import redis

    r = redis.Redis.from_url(broker_url)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="session")
def pg_url():
    if not postgres_reachable(PG_ADMIN):
        _service_missing("PostgreSQL at 127.0.0.1:5432")
    with temp_postgres_database(PG_ADMIN, prefix="gtapp_workers") as url:
        yield url


@pytest.fixture
def embedded_settings(tmp_path):
    return make_settings(tmp_path / "embedded")


@pytest.fixture(scope="session")
def celery_sqlite(tmp_path_factory, broker_url, key_prefix):
    """(settings, worker) on SQLite, one worker for the session."""
    root = tmp_path_factory.mktemp("celery_sqlite")
    settings = make_settings(root, broker_url=broker_url, key_prefix=key_prefix + "sqlite:")
    with CeleryWorker(settings, root / "worker.log", name="sqlite") as w:
        yield settings, w


@pytest.fixture(scope="session")
def celery_pg(tmp_path_factory, broker_url, key_prefix, pg_url):
    """(settings, worker) on the session's fresh PostgreSQL database."""
    root = tmp_path_factory.mktemp("celery_pg")
    settings = make_settings(root, database_url=pg_url, broker_url=broker_url, key_prefix=key_prefix + "pg:")
    with CeleryWorker(settings, root / "worker.log", name="pg") as w:
        yield settings, w


@pytest.fixture(params=["sqlite", "postgres"])
def celery_backend(request):
    return request.getfixturevalue("celery_sqlite" if request.param == "sqlite" else "celery_pg")
