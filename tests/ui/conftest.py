"""Fixtures for the dashboard's unit tests: a fresh SQLite deployment per test, users in two
organisations and an admin, a model pair with a small synthetic recipe (no zoo build), and
a fake ``gr.Request`` (handlers only read ``request.username``, which the session auth
dependency sets server-side)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_helpers import make_settings, req  # noqa: F401

from storage import accounts
from storage.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "deploy")


@pytest.fixture
def svc(settings):
    from ui.service import Service
    from workers.client import JobClient

    from ui.uploads import Uploads

    s = Service(settings)
    # the files these tests hand to the upload handlers stand for what the dashboard received:
    # <tmp>/gradio/<request>/<name> (ui_helpers.staged, and the gradio_* helpers of the tests)
    s.uploads = Uploads(settings.data_dir.parent / "gradio", s.max_upload_bytes)
    s.bootstrap()
    s.client = JobClient(settings, run_embedded=False)  # unit tests: jobs stay queued, nothing runs
    return s


@pytest.fixture
def users(svc) -> dict:
    """alice (acme, member), carol (acme, member), bob (globex, member), root (provider, admin)."""
    with svc.session() as s:
        accounts.create_user(s, "acme", "alice", "password123", "member")
        accounts.create_user(s, "acme", "carol", "password123", "member")
        accounts.create_user(s, "globex", "bob", "password123", "member")
        accounts.create_user(s, "provider", "root", "password123", "admin")
    return {n: req(n) for n in ("alice", "carol", "bob", "root")}


@pytest.fixture(scope="session")
def recipes():
    from testkit.synthetic import small_recipes

    return small_recipes()


@pytest.fixture
def pair_id(svc, recipes) -> int:
    from storage.catalog import recipe_fingerprint
    from storage.models import ModelPairRecord

    d = recipes.to_dict()
    with svc.session() as s:
        p = ModelPairRecord(name="syn", tiny_path="/nonexistent/tiny", llm_path="/nonexistent/llm", recipe=d,
                      recipe_fingerprint=recipe_fingerprint(d))
        s.add(p)
        s.flush()
        return p.id


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, recipes) -> Path:
    """A valid peft adapter folder for the synthetic TinyLM recipe."""
    import torch

    from testkit.synthetic import random_factors
    from gtapp.lora.peft_format import write_peft_adapter

    out = tmp_path_factory.mktemp("adapter") / "adapter"
    write_peft_adapter(random_factors(recipes.tiny, generator=torch.Generator().manual_seed(0)), recipes.tiny, out)
    return out
