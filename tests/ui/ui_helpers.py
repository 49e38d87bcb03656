"""Helpers for the dashboard tests (importable as ``ui_helpers``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from storage.settings import Settings

FAST = dict(heartbeat_interval_s=0.5, heartbeat_stale_s=3.0, reaper_interval_s=0.5, progress_min_interval_s=0.2,
            embedded_poll_s=0.2, first_admin_password="admin-password", register_zoo_on_start=False,
            publish_bench_results=False)


def make_settings(root: Path, **kw) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=root, database_url=f"sqlite:///{root / 'gtapp.db'}", broker_url=None,
                    _env_file=None, **{**FAST, **kw})


def req(username: str) -> SimpleNamespace:
    return SimpleNamespace(username=username)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def staged(svc, src, name: str | None = None) -> str:
    """A copy of ``src`` where the dashboard keeps what it received (``svc.uploads``): the only
    place the upload handlers read files from."""
    import shutil
    import uuid

    d = svc.uploads.root / f"staged-{uuid.uuid4().hex[:12]}"
    d.mkdir(parents=True)
    return str(shutil.copyfile(src, d / (name or Path(src).name)))
