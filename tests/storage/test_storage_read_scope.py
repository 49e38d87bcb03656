"""Reads that never wait for a writer: ``read_scope`` begins deferred on SQLite (WAL), so a
page's queries go on while a job holds the write lock; it sees committed rows only, and what
is written in it is not kept. ``session_scope`` keeps BEGIN IMMEDIATE for every write."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import select, text

from storage.db import read_scope, session_scope
from storage.models import Organisation


def test_reads_go_on_while_a_writer_holds_the_lock_and_see_committed_rows_only(settings):
    name = f"org-{uuid.uuid4().hex[:8]}"
    with session_scope(settings=settings) as s:
        s.add(Organisation(name=name))
    holding, release = threading.Event(), threading.Event()

    def writer():
        with session_scope(settings=settings) as s:  # BEGIN IMMEDIATE on SQLite: the write lock
            s.add(Organisation(name=name + "-uncommitted"))
            s.flush()
            holding.set()
            release.wait(20)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(20)
        t0 = time.monotonic()
        with read_scope(settings=settings) as s:
            names = set(s.scalars(select(Organisation.name).where(Organisation.name.startswith(name))))
        waited = time.monotonic() - t0
        assert names == {name}, names  # the writer's row is not committed yet
        assert waited < 2.0, f"a read waited {waited:.1f} s for the writer"
    finally:
        release.set()
        t.join(20)
    with read_scope(settings=settings) as s:
        assert set(s.scalars(select(Organisation.name).where(Organisation.name.startswith(name)))) == \
            {name, name + "-uncommitted"}


def test_nothing_written_in_a_read_scope_stays(settings):
    name = f"org-{uuid.uuid4().hex[:8]}"
    with read_scope(settings=settings) as s:
        s.add(Organisation(name=name))
        s.flush()
    with session_scope(settings=settings) as s:
        assert s.scalars(select(Organisation).where(Organisation.name == name)).first() is None
        assert s.execute(text("SELECT 1")).scalar() == 1
