"""Helpers shared by the job-system tests (settings with fast liveness, users in two orgs, the
micro zoo registered as a model pair)."""

from __future__ import annotations

import uuid
from pathlib import Path

from storage import accounts
from storage.db import session_scope
from storage.settings import Settings

# Fast liveness for tests: heartbeats every 0.5 s, a worker presumed dead after 3 s silent.
# These tests drive the queue's mechanics with many jobs from one member; the per-organisation and
# per-user caps are a deployment's policy, tested on their own (tests/workers/test_fair_share.py).
FAST = dict(heartbeat_interval_s=0.5, heartbeat_stale_s=3.0, reaper_interval_s=0.5, progress_min_interval_s=0.2,
            embedded_poll_s=0.2, first_admin_password="admin-password", max_active_jobs_per_org=10_000,
            max_active_jobs_per_user=10_000)


def make_settings(root: Path, database_url: str | None = None, broker_url: str | None = None,
                  key_prefix: str = "", **kw) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=root, database_url=database_url or f"sqlite:///{root / 'gtapp.db'}",
                    broker_url=broker_url, broker_key_prefix=key_prefix, _env_file=None, **{**FAST, **kw})


def add_users(settings: Settings) -> dict[str, str]:
    """alice (member, org acme), bob (member, org globex), root (admin, org provider)."""
    tag = uuid.uuid4().hex[:6]
    names = {"alice": f"alice{tag}", "bob": f"bob{tag}", "root": f"root{tag}"}
    with session_scope(settings=settings) as s:
        accounts.create_user(s, f"acme{tag}", names["alice"], "password123", "member")
        accounts.create_user(s, f"globex{tag}", names["bob"], "password123", "member")
        accounts.create_user(s, f"provider{tag}", names["root"], "password123", "admin")
    return names


class MicroDeployment:
    """A deployment to run jobs on: settings, a job client (the embedded worker unless a broker
    is configured), the artifact store, users in two organisations and the admin (``users``;
    ``alice`` and ``bob`` as principals), and the micro zoo registered as a model pair."""

    def __init__(self, settings: Settings, micro_zoo: Path):
        from storage import catalog
        from storage.accounts import principal
        from storage.artifacts import ArtifactStore
        from workers.client import JobClient

        self.settings = settings
        self.client = JobClient(settings)
        self.store = ArtifactStore(settings.artifacts_dir)
        self.users = add_users(settings)
        with session_scope(settings=settings) as s:
            self.alice = principal(s, self.users["alice"])
            self.bob = principal(s, self.users["bob"])
            self.pair_id = catalog.register_pair(s, f"micro-{self.users['alice']}", micro_zoo).id
