"""The `zoo` job: an admin builds a TinyLM/LLM pair on a worker and it becomes a model pair."""

from __future__ import annotations

import pytest
from jobs_helpers import add_users, make_settings
from sqlalchemy import select

from storage.db import session_scope
from storage.models import ModelPairRecord
from workers.client import JobClient
from workers.embedded import stop_all
from workers.jobs import ZOO_PRESETS


def test_zoo_job_builds_and_registers_a_pair(tmp_path):
    from gtapp.models import ModelPair as Pair
    from gtapp.zoo import PRESETS

    assert set(ZOO_PRESETS) == set(PRESETS)
    settings = make_settings(tmp_path / "data")
    users = add_users(settings)
    client = JobClient(settings)
    try:
        with pytest.raises(PermissionError):
            client.submit("zoo", {"preset": "micro"}, users["alice"])
        with pytest.raises(ValueError, match="preset must be one of"):
            client.submit("zoo", {"preset": "huge"}, users["root"])
        with pytest.raises(ValueError, match="name:"):
            client.submit("zoo", {"preset": "micro", "name": "../escape"}, users["root"])
        view = client.wait(client.submit("zoo", {"preset": "micro", "name": "m1", "seed": 3}, users["root"]), timeout=120)
        assert view.status == "succeeded", (view.error, view.log_tail)
        folder = settings.zoo_root / "m1"
        pair = Pair.from_dir(folder)  # tiny/, llm/, recipe.json, loadable as a pair
        assert pair.recipes.tiny.init_seed == 3
        with session_scope(settings=settings) as s:
            row = s.scalars(select(ModelPairRecord).where(ModelPairRecord.id == view.outputs["pair_id"])).one()
            assert row.tiny_path == str(folder.resolve() / "tiny")
        again = client.wait(client.submit("zoo", {"preset": "micro", "name": "m1"}, users["root"]), timeout=60)
        assert again.status == "failed" and "already exists" in again.error
    finally:
        stop_all()
