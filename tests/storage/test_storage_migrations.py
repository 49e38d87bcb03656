"""Alembic: upgrade an empty SQLite and PostgreSQL database to head; the result matches the
models exactly; downgrade and upgrade again; the alembic.ini CLI path works too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from storage import db
from storage.models import Base
from testkit.services import REPO_ROOT, temp_postgres_database

HEAD = "0007"  # the newest revision in storage/migrations/versions
TABLES = {"organisations", "users", "datasets", "model_pairs", "adapters", "benchmarks", "pair_sets",
          "mapper_versions", "jobs", "evaluations", "privacy_ledger", "revoked_sessions", "sign_in_failures",
          "collaborations", "collaboration_members", "collaboration_events",
          "alembic_version"}


def _check_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        engine.dispose()


def test_upgrade_empty_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert db.current_revision(url) is None
    db.upgrade(url)
    assert db.current_revision(url) == HEAD
    _check_schema(url)
    db.upgrade(url)  # idempotent
    from alembic import command

    command.downgrade(db.alembic_config(url), "base")
    assert set(inspect(create_engine(url)).get_table_names()) == {"alembic_version"}
    db.upgrade(url)
    _check_schema(url)


def test_upgrade_empty_postgres(pg_url):
    with temp_postgres_database(prefix="gtapp_migr") as url:  # an empty one, not the shared session DB
        assert db.current_revision(url) is None
        db.upgrade(url)
        assert db.current_revision(url) == HEAD
        _check_schema(url)


def test_alembic_cli_uses_alembic_ini(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GTAPP_")}, "GTAPP_DATABASE_URL": url,
           "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert db.current_revision(url) == HEAD
    assert Path(REPO_ROOT / "storage" / "migrations" / "versions").is_dir()
