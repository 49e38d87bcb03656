"""Schema rules the database itself enforces, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from storage import accounts, catalog
from storage.db import session_scope
from storage.models import Job, MapperVersion, ModelPairRecord


def _pair(s) -> ModelPairRecord:
    recipe = {"format": 1, "tiny": {}, "llm": {}}
    p = ModelPairRecord(name=f"pair{uuid.uuid4().hex[:8]}", tiny_path="/x/tiny", llm_path="/x/llm", recipe=recipe,
                  recipe_fingerprint=catalog.recipe_fingerprint(recipe))
    s.add(p)
    s.flush()
    return p


def test_one_promoted_mapper_per_pair(settings):
    with session_scope(settings=settings) as s:
        pair = _pair(s)
        mvs = [MapperVersion(model_pair_id=pair.id, version=v, kind="ridge", artifact="0" * 64) for v in (1, 2)]
        s.add_all(mvs)
        s.flush()
        catalog.promote_mapper(s, mvs[0].id)
        catalog.promote_mapper(s, mvs[1].id)
        assert catalog.promoted_mapper(s, pair.id).id == mvs[1].id
        ids = [m.id for m in mvs]
    with pytest.raises(IntegrityError):  # the partial unique index refuses a second promoted row
        with session_scope(settings=settings) as s:
            s.get(MapperVersion, ids[0]).promoted = True
            s.flush()


def test_job_constraints_and_aware_timestamps(settings):
    with session_scope(settings=settings) as s:
        u = accounts.create_user(s, f"org{uuid.uuid4().hex[:6]}", f"u{uuid.uuid4().hex[:6]}", "password123")
        j = Job(kind="selftest", params={"seed": 3, "nested": {"a": [1, 2]}}, org_id=u.org_id, user_id=u.id)
        s.add(j)
        s.flush()
        jid, org_id = j.id, u.org_id
    with session_scope(settings=settings) as s:
        j = s.get(Job, jid)
        assert j.status == "queued" and j.progress == 0.0 and j.attempts == 0 and j.max_attempts == 3
        assert j.created_at.tzinfo is not None
        assert abs(j.created_at - dt.datetime.now(dt.timezone.utc)).total_seconds() < 60
        assert j.params == {"seed": 3, "nested": {"a": [1, 2]}}
    for bad in ({"status": "exploded"}, {"progress": 1.5}):
        with pytest.raises(IntegrityError):
            with session_scope(settings=settings) as s:
                s.add(Job(kind="selftest", params={}, org_id=org_id, **bad))
                s.flush()
