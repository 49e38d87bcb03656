"""Files the dashboard received: the only files an event handler may ever open.

A Gradio File input sends the server a *path* (``{"path": ..., "meta": {"_type":
"gradio.FileData"}}``), and a client can put any path there. So the dashboard receives
uploads itself (``POST /gradio_api/upload``, answered by :meth:`Uploads.receive`) into a
folder of the signed-in session's own, under a random name per request:

    <data_dir>/dashboard/incoming/<owner>/<random>/<content hash>/<file name>

``owner`` names one sign-in (user id + a keyed digest of the session cookie's nonce), so
another session's or another organisation's upload is as foreign as ``/etc/passwd``. The
gate (``ui.gate``) refuses every request whose payload names a path that
:meth:`Uploads.owned` does not accept, before Gradio or a handler touches it; handlers
open files only through :func:`open_upload` (a regular file under the incoming folder,
never a link, device or pipe), so a path that got past the gate still opens nothing else.

This folder is also Gradio's cache folder for the Blocks (``GRADIO_CACHE``), so Gradio uses
these files in place instead of copying them, and its ``delete_cache`` sweep removes any
that were never submitted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import anyio

MiB = 2**20
MAX_AGE_S = 3600.0  # an upload not submitted within this long is removed
SWEEP_EVERY_S = 600.0


class UploadError(ValueError):
    """An upload was refused; the message says why in words."""


class UploadRefused(ValueError):
    """The upload itself was refused (too big, too many at once, not multipart)."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


class Uploads:
    def __init__(self, root: Path, max_bytes: int, per_owner: int = 2):
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.per_owner = int(per_owner)
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()
        self._swept = 0.0

    # ------------------------------------------------------------------ receiving
    @contextmanager
    def _slot(self, owner: str):
        """At most ``per_owner`` uploads of one sign-in are received at once (one member's
        parallel uploads must not take the disk and memory of everyone else's)."""
        with self._lock:
            if self._active.get(owner, 0) >= self.per_owner:
                raise UploadRefused(f"{self.per_owner} uploads of yours are already in progress; wait for them "
                                    "to finish", status_code=429)
            self._active[owner] = self._active.get(owner, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._active[owner] -= 1
                if not self._active[owner]:
                    del self._active[owner]

    async def receive(self, request, owner: str, upload_id: Optional[str] = None) -> list[str]:
        """Stream one multipart upload (field ``files``) into a fresh folder of ``owner``'s;
        returns the server paths, as Gradio's own upload route does. The body is parsed by
        Gradio's streaming parser with the size limit applied while it arrives; ``upload_id``
        feeds the page's progress bar (Gradio's ``upload_progress`` route)."""
        from gradio.route_utils import MultiPartException, upload_fn
        from gradio.routes import file_upload_statuses

        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes + MiB:
            raise UploadRefused(f"the upload is {int(declared) / MiB:.1f} MiB; uploads are limited to "
                                f"{self.max_bytes // MiB} MiB", status_code=413)
        if time.monotonic() - self._swept > SWEEP_EVERY_S:
            self._swept = time.monotonic()
            await anyio.to_thread.run_sync(self.sweep)
        with self._slot(owner):
            folder = self.folder(owner) / secrets.token_hex(16)
            folder.mkdir(parents=True, mode=0o700)
            try:
                paths, _, _ = await upload_fn(request, str(folder), self.max_bytes, upload_id, force_move=True,
                                              upload_progress=file_upload_statuses if upload_id else None)
            except MultiPartException as e:
                shutil.rmtree(folder, ignore_errors=True)
                code = 413 if "maximum allowed size" in e.message else 400
                raise UploadRefused(e.message, status_code=code) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return [str(p) for p in paths]

    def sweep(self, max_age_s: float = MAX_AGE_S) -> int:
        """Remove request folders older than ``max_age_s`` (uploads never submitted, or left by
        a handler that died); returns how many."""
        n, cutoff = 0, time.time() - max_age_s
        for owner_dir in list(self.root.iterdir()):
            for req in list(owner_dir.iterdir()) if owner_dir.is_dir() else []:
                try:
                    if req.lstat().st_mtime < cutoff:
                        shutil.rmtree(req, ignore_errors=True)
                        n += 1
                except OSError:
                    pass
            try:
                owner_dir.rmdir()
            except OSError:
                pass
        return n

    # ------------------------------------------------------------------ checking
    def folder(self, owner: str) -> Path:
        if not owner or not all(c.isalnum() or c == "-" for c in owner):
            raise ValueError("bad upload owner")
        return self.root / owner

    def owned(self, owner: Optional[str], path: object) -> bool:
        """Whether ``path`` is a file ``owner`` uploaded and has not yet been used. Decided
        by the path's text first (nothing outside the owner's folder is ever looked at, so
        the answer says nothing about what exists elsewhere), then: a regular file, no link."""
        if not owner or not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
            return False
        base = str(self.folder(owner)) + os.sep
        if not os.path.isabs(path) or not os.path.normpath(path).startswith(base):
            return False
        real = os.path.realpath(path)
        if real != os.path.normpath(path) or not real.startswith(base):
            return False  # a link somewhere on the way
        try:
            return stat.S_ISREG(os.lstat(real).st_mode)
        except OSError:
            return False

    def inside(self, path: object) -> bool:
        """Whether ``path`` lies under the incoming folder at all (any owner): the handlers'
        own check, under the gate's."""
        if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path:
            return False
        norm = os.path.normpath(path)
        parent = os.path.dirname(norm)  # the file itself may be a link: open_upload refuses that, saying so
        return norm.startswith(str(self.root) + os.sep) and os.path.realpath(parent) == parent

    def discard(self, paths) -> None:
        """Delete used uploads and their request folders (so nothing of them is left to serve)."""
        for p in paths or []:
            if not self.inside(p):
                continue
            try:
                os.unlink(p)
            except OSError:
                pass
            d = Path(p).parent
            while len(d.relative_to(self.root).parts) > 1:  # up to, not including, root/<owner>
                try:
                    d.rmdir()  # only when empty
                except OSError:
                    break
                d = d.parent


def open_upload(path: str, uploads: Optional[Uploads], limit: int, label: str):
    """Open an uploaded file for reading: under the incoming folder (when ``uploads`` is
    given), a regular file and not a link (a link, device or pipe could point at server
    files or never end), and at most ``limit`` bytes. Returns a binary file object."""
    if uploads is not None and not uploads.inside(path):
        raise UploadError(f"{label}: not a file uploaded in this session; upload it again")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        if os.path.islink(path):
            raise UploadError(f"{label}: the upload is a link, not a file; upload the file itself")
        fd = os.open(path, flags)
    except OSError:
        raise UploadError(f"{label}: the upload could not be read; upload it again") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UploadError(f"{label}: the upload is not a regular file; upload the file itself")
        if st.st_size > limit:
            raise UploadError(f"{label} is {st.st_size / MiB:.1f} MiB; uploads are limited to {limit // MiB} MiB")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def copy_upload(path: str, dest: Path, uploads: Optional[Uploads], limit: int, label: str) -> int:
    """Copy an upload to ``dest`` (see :func:`open_upload`), never more than ``limit`` bytes
    however big the file grows while it is read. Returns the number of bytes."""
    total = 0
    with open_upload(path, uploads, limit, label) as src, open(dest, "xb") as out:
        while chunk := src.read(MiB):
            total += len(chunk)
            if total > limit:
                raise UploadError(f"{label} is over {limit // MiB} MiB; uploads are limited to {limit // MiB} MiB")
            out.write(chunk)
    return total
