"""Fixtures for the job system: real Redis (a private key prefix per session), a fresh
PostgreSQL database per session, and real Celery worker subprocesses. For fault injection:
private Redis and PostgreSQL servers a test may restart (never the shared ones), a fresh
database per test, and a small tmpfs to fill.

Services that are down make these tests skip locally; under CI (CI=true or
GTAPP_TEST_REQUIRE_SERVICES=1) they fail instead."""

from __future__ import annotations

import random
import uuid

import pytest

from jobs_helpers import make_settings
from needs import missing
from testkit.services import (
    CeleryWorker,
    MountNotPermitted,
    PostgresServer,
    RedisServer,
    postgres_reachable,
    redis_reachable,
    small_tmpfs,
    temp_postgres_database,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"


@pytest.fixture(scope="session")
def broker_url() -> str:
    if not redis_reachable(REDIS):
        missing("Redis at 127.0.0.1:6379")
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
        missing("PostgreSQL at 127.0.0.1:5432")
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


# --- fault injection ------------------------------------------------------------------------------


def _own_database():
    if not postgres_reachable(PG_ADMIN):
        missing("PostgreSQL at 127.0.0.1:5432")
    return temp_postgres_database(PG_ADMIN, prefix="gtapp_faults")


@pytest.fixture
def fresh_pg_url():
    """A database of its own on the shared PostgreSQL (so no other test's reaper sees its jobs)."""
    with _own_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url():
    """As fresh_pg_url, shared by the tests of one module."""
    with _own_database() as url:
        yield url


@pytest.fixture
def private_redis(tmp_path):
    """A private redis-server without persistence, on a free port: the test may restart it."""
    if not RedisServer.available():
        missing("the redis-server binary")
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def private_postgres():
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free port: the test may restart it."""
    if not PostgresServer.available():
        missing("PostgreSQL server binaries (initdb, pg_ctl)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def tiny_disk():
    """A 4 MiB tmpfs, mounted for the test and unmounted after it (skips where mounting is
    not permitted, e.g. an unprivileged container)."""
    try:
        with small_tmpfs(4096) as where:
            yield where
    except MountNotPermitted as e:
        pytest.skip(f"disk-full test needs a small tmpfs: {e}")
