"""Engines, sessions and schema migrations.

One engine per database URL per process (re-created after a fork). SQLite runs in WAL mode
with a busy timeout so a worker process and the dashboard can share one file; PostgreSQL
is used through psycopg 3. ``upgrade(url)`` runs Alembic's ``upgrade head`` under a lock
(an advisory lock on PostgreSQL, a file lock on SQLite), so several processes starting at
once migrate exactly once. PostgreSQL connections are checked before use, so a restarted
server costs a reconnect, not a failed statement.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATE_LOCK = 724_518_001  # arbitrary advisory lock key

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_makers: dict[tuple[int, str], sessionmaker] = {}
_read_makers: dict[tuple[int, str], sessionmaker] = {}
READ_ONLY = "gtapp_read_only"  # an execution option: this connection's transactions only read
_migrated: set[str] = set()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _new_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so a
        # read-then-write transaction takes the write lock up front (no upgrade deadlocks).
        # A read-only session (read_scope) begins deferred: in WAL mode it then never waits for
        # a writer, nor makes one wait (under load the dashboard's reads queued behind every
        # progress write for the write lock they never needed).
        @event.listens_for(engine, "connect")
        def _no_pysqlite_txn(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")
        return engine
    # pool_pre_ping: a pooled connection that died with a server restart is replaced on checkout
    # instead of failing the next statement. connect_timeout (seconds): an unreachable server
    # fails a connect in bounded time, so callers can retry (workers.runner.retry_db).
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                         connect_args={"connect_timeout": 10})


def get_engine(url: Optional[str] = None, settings: Optional[Settings] = None) -> Engine:
    """The process's engine for ``url`` (default: the settings' database), migrated when
    ``auto_migrate`` is on."""
    settings = settings or get_settings()
    url = url or settings.db_url
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _new_engine(url)
            _makers[key] = sessionmaker(engine, expire_on_commit=False)
            _read_makers[key] = sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
    if settings.auto_migrate and url not in _migrated:
        upgrade(url)
    return engine


def sessionmaker_for(url: Optional[str] = None, settings: Optional[Settings] = None) -> sessionmaker:
    settings = settings or get_settings()
    url = url or settings.db_url
    get_engine(url, settings)
    return _makers[(os.getpid(), url)]


@contextlib.contextmanager
def session_scope(url: Optional[str] = None, settings: Optional[Settings] = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker_for(url, settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextlib.contextmanager
def read_scope(url: Optional[str] = None, settings: Optional[Settings] = None) -> Iterator[Session]:
    """A session for reads only (on SQLite its transaction begins deferred, see _new_engine);
    it is rolled back at the end, so nothing written in it would stay."""
    settings = settings or get_settings()
    url = url or settings.db_url
    get_engine(url, settings)
    session = _read_makers[(os.getpid(), url)]()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def dispose_all() -> None:
    """Drop every pooled connection of this process (after fork, or at the end of tests)."""
    with _lock:
        for (pid, url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
            else:
                engine.dispose(close=False)  # inherited from the parent: never close its sockets
            _engines.pop((pid, url), None)
            _makers.pop((pid, url), None)
            _read_makers.pop((pid, url), None)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: Optional[str] = None, revision: str = "head") -> None:
    """Alembic upgrade to ``revision``, serialised across processes."""
    from alembic import command

    url = url or get_settings().db_url
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database or ":memory:"
        if db == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db}.migrate.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
                conn.commit()
                try:
                    cfg = alembic_config(url)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    conn.commit()
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATE_LOCK})
                    conn.commit()
        finally:
            engine.dispose()
    if revision == "head":
        _migrated.add(url)


def current_revision(url: Optional[str] = None) -> Optional[str]:
    from alembic.runtime.migration import MigrationContext

    url = url or get_settings().db_url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
