"""The service's shared part: settings, store, sessions, uploads; names, numbers and messages."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from gtapp.choices import DATASET_FORMATS
from storage.artifacts import ArtifactStore
from storage.db import read_scope, session_scope
from storage.settings import Settings, get_settings
from storage.tenancy import NotFound
from ui.uploads import UploadError, Uploads, open_upload
from workers.client import JobClient

log = logging.getLogger("gtapp.dashboard")

MiB = 1 << 20
KNOWN_FORMATS = DATASET_FORMATS
USER_FORMAT = "prompt/answer (JSONL, JSON or CSV)"
PREVIEW_ROWS = 10
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_OK = re.compile(r"^[^\x00-\x1f/\\]{1,200}$")

__all__ = ["NotFound", "UploadError", "ServiceBase", "safe_filename", "clean_name", "user_message", "MiB",
           "KNOWN_FORMATS", "USER_FORMAT", "PREVIEW_ROWS"]


def safe_filename(name: Optional[str], default: str = "upload") -> str:
    """A file name made only of [A-Za-z0-9._-], without leading dots, at most 100 chars.
    Used for files the server writes into its own fresh folders; it keeps the suffix so
    the validators can name the file in their messages."""
    base = os.path.basename(str(name or "")).strip()
    base = _SAFE_CHARS.sub("_", base).lstrip("._")[-100:]
    return base or default


def clean_name(name: Optional[str], what: str, fallback: str) -> str:
    name = (name or "").strip() or fallback
    if not _NAME_OK.match(name):
        raise UploadError(f"{what} must be 1-200 characters without control characters or slashes")
    return name


def _iso(t: Optional[dt.datetime]) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def user_message(e: BaseException) -> str:
    """What to show for an exception raised by a handler: the message of the errors users
    cause, and a generic line for anything else (logged with its traceback)."""
    from workers.client import JobNotAvailable, QueueUnavailable

    if isinstance(e, (ValueError, LookupError, PermissionError, JobNotAvailable, QueueUnavailable)):
        msg = str(e)
        if isinstance(e, KeyError) and msg.startswith("'"):
            msg = msg.strip("'")
        return msg or type(e).__name__
    log.exception("dashboard handler failed", exc_info=e)
    return f"internal error ({type(e).__name__}); it was logged"


class ServiceBase:
    """What every area of the service shares: one deployment's settings, its artifact store,
    database sessions and the uploads the dashboard received."""

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = settings or get_settings()
        self.client = JobClient(self.settings)
        self._store: Optional[ArtifactStore] = None
        self._validating: dict[int, int] = {}
        self._validating_lock = threading.Lock()
        self._validations = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        # the only files handlers open as uploads (ui.uploads; the gate checks whose they are)
        self.uploads = Uploads(self.dashboard_dir / "incoming", self.max_upload_bytes,
                               per_owner=self.settings.max_concurrent_uploads)

    @staticmethod
    def require_admin(who) -> None:
        if not who.is_admin:
            raise PermissionError("this needs an admin account")

    # ------------------------------------------------------------------ plumbing
    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.settings.artifacts_dir)
        return self._store

    def session(self):
        return session_scope(settings=self.settings)

    def reading(self):
        """A session for reads only (storage.db.read_scope): never waits for the write lock."""
        return read_scope(settings=self.settings)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb) * MiB

    @property
    def dashboard_dir(self) -> Path:
        d = self.settings.data_dir.resolve() / "dashboard"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def upload_tmp(self) -> Path:
        """A fresh private folder for one upload (removed by the caller)."""
        root = self.dashboard_dir / "uploads"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="up-", dir=root))

    # ------------------------------------------------------------------ uploads
    def _check_upload_size(self, path: str, label: str) -> int:
        with open_upload(path, self.uploads, self.max_upload_bytes, label) as fh:
            return os.fstat(fh.fileno()).st_size

    def discard_upload(self, paths: Iterable[Optional[str]]) -> None:
        """Delete used uploads (so nothing of them is left to serve)."""
        self.uploads.discard([p for p in paths if p])

    def read_upload(self, path: str, label: str) -> bytes:
        """The bytes of an upload of this dashboard's (see ``ui.uploads.open_upload``)."""
        with open_upload(path, self.uploads, self.max_upload_bytes, label) as fh:
            data = fh.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise UploadError(f"{label} is over {self.settings.max_upload_mb} MiB; uploads are limited to "
                              f"{self.settings.max_upload_mb} MiB")
        return data
