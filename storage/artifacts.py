"""The artifact store: content-addressed files under one root, and per-job run folders.

Layout under ``root``::

    objects/ab/abcdef...   file whose sha256 is abcdef... (immutable, read-only)
    tmp/                   partial writes (never referenced; swept by ``sweep_tmp``)
    runs/<job_id>/         a job's self-describing run folder:
        config.json        kind, params, seed, owner, gtapp version
        log.txt            the job's log (every attempt)
        results.json       written last, atomically, only when the job succeeded
        failure.json       written when the job failed or was cancelled
        work/              scratch space of the current attempt (cleared on every attempt)
            .objects-attempt<n>/   objects attempt n stored, until it succeeds (StagedStore)

Every write goes to a temp file in ``tmp/``, is fsynced, then renamed into place, so a
reader (or a worker killed mid-write) never sees a half-written object. A write that runs
out of disk space discards its temp file and raises :class:`ArtifactStoreFull`. A folder
(e.g. a LoRA adapter) is stored as its files plus a JSON *manifest* object listing them; the
manifest's hash names the folder. Look-ups are by hash or job id only: nothing here takes
a user-supplied path, and every resolved path is checked to lie under the root.

A job writes through a :class:`StagedStore`: its objects wait in its attempt's work folder
and enter ``objects/`` only when the job succeeds (``publish``), so an attempt that fails,
is cancelled or is killed leaves no object of its own behind, complete or not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from gtapp.files import _fsync_dir, atomic_write_bytes, atomic_write_json  # noqa: F401 (re-exported)

_SHA = re.compile(r"^[0-9a-f]{64}$")
_RELNAME = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")
MANIFEST_FORMAT = "gtapp-tree/1"
CHUNK = 1 << 20


class ArtifactError(ValueError):
    """A bad hash, a missing object, or a path that would escape the store."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ArtifactStoreFull(OSError):
    """The store's disk ran out of space mid-write; the partial object was discarded."""

    def __init__(self, root: Path, written: int, cause: OSError):
        super().__init__(cause.errno, f"the artifact store at {root} is out of disk space "
                                      f"({cause.strerror or cause}) after {written / 2**20:.1f} MiB of an object; "
                                      f"the partial object was discarded and nothing was stored", str(root))

    def __str__(self) -> str:  # OSError's default adds "[Errno 28]" and the file name again
        return self.strerror


class ObjectWriter:
    """Streams bytes into the store; ``commit()`` returns their sha256. Used as a context
    manager, an exception (or a crash) leaves nothing but a temp file in ``tmp/``."""

    def __init__(self, store: "ArtifactStore"):
        self.store = store
        self._h = hashlib.sha256()
        fd, self._tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="obj.", suffix=".part")
        self._fh: IO[bytes] = os.fdopen(fd, "wb")
        self.size = 0
        self.sha: Optional[str] = None

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self.size += len(data)
        try:
            return self._fh.write(data)
        except OSError as e:
            raise self._failed(e)

    def _failed(self, e: OSError) -> OSError:
        """Discard the temp file; a full disk becomes ArtifactStoreFull (to raise)."""
        self.abort()
        if e.errno in DISK_FULL_ERRNOS:
            return ArtifactStoreFull(self.store.root, self.size, e)
        return e

    def commit(self) -> str:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as e:
            raise self._failed(e)
        sha = self._h.hexdigest()
        self.store._place(self._tmp, sha)
        self.sha = sha
        return sha

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> "ObjectWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self.sha is None:
            self.commit()


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.runs_dir = self.root / "runs"
        for d in (self.objects_dir, self.tmp_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)

    # --- confinement --------------------------------------------------------------------
    def _confined(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ArtifactError("path escapes the artifact store")
        return resolved

    @staticmethod
    def check_sha(sha: str) -> str:
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise ArtifactError(f"not an artifact id (64 hex digits): {str(sha)[:80]!r}")
        return sha

    def _object_path(self, sha: str) -> Path:
        self.check_sha(sha)
        return self._confined(self.objects_dir / sha[:2] / sha)

    def _place(self, tmp: str, sha: str) -> None:
        """Move a complete, fsynced temp file into place as object ``sha`` (or drop it, if
        the store has that object already)."""
        dest = self._object_path(sha)
        if dest.exists():
            os.unlink(tmp)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)

    # --- objects ------------------------------------------------------------------------------
    def writer(self) -> ObjectWriter:
        return ObjectWriter(self)

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def put_json(self, obj: Any) -> str:
        return self.put_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())

    def put_file(self, path: str | Path) -> str:
        """Copy a local file (one the server made, never a user-named path) into the store."""
        with open(path, "rb") as src, self.writer() as w:
            while chunk := src.read(CHUNK):
                w.write(chunk)
            return w.commit()

    def has(self, sha: str) -> bool:
        return self._object_path(sha).is_file()

    def path(self, sha: str) -> Path:
        """The stored object's path (read-only file). Raises if absent."""
        p = self._object_path(sha)
        if not p.is_file():
            raise ArtifactError(f"artifact {sha[:12]} not found")
        return p

    def open(self, sha: str) -> IO[bytes]:
        return open(self.path(sha), "rb")

    def read_bytes(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()

    def read_json(self, sha: str) -> Any:
        return json.loads(self.read_bytes(sha))

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    # --- folders --------------------------------------------------------------------------------
    def put_tree(self, folder: str | Path) -> str:
        """Store every regular file under ``folder``; returns the manifest's hash.
        Symlinks and special files are refused."""
        folder = Path(folder)
        files: dict[str, dict] = {}
        for p in sorted(folder.rglob("*")):
            if p.is_symlink():
                raise ArtifactError(f"refusing to store a symlink: {p.relative_to(folder)}")
            if p.is_dir():
                continue
            if not p.is_file():
                raise ArtifactError(f"refusing to store a special file: {p.relative_to(folder)}")
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"sha256": self.put_file(p), "size": p.stat().st_size}
        return self.put_json({"format": MANIFEST_FORMAT, "files": files})

    def manifest(self, sha: str) -> dict[str, dict]:
        m = self.read_json(sha)
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or not isinstance(m.get("files"), dict):
            raise ArtifactError(f"artifact {sha[:12]} is not a folder manifest")
        for rel, entry in m["files"].items():
            if not _RELNAME.match(rel) or ".." in rel.split("/"):
                raise ArtifactError(f"manifest {sha[:12]} has an unsafe file name {rel!r}")
            self.check_sha(entry.get("sha256", ""))
        return m["files"]

    def materialize(self, sha: str, dest: str | Path) -> Path:
        """Copy a stored folder to ``dest`` (a server-chosen folder, created)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for rel, entry in self.manifest(sha).items():
            target = (dest / rel).resolve()
            if root not in target.parents:
                raise ArtifactError(f"manifest entry {rel!r} escapes its folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path(entry["sha256"]), target)
        return dest

    # --- integrity ------------------------------------------------------------------------
    def iter_objects(self) -> Iterator[str]:
        for sub in sorted(self.objects_dir.iterdir()):
            if sub.is_dir():
                for p in sorted(sub.iterdir()):
                    if _SHA.match(p.name):
                        yield p.name

    def verify(self, sha: Optional[str] = None) -> list[str]:
        """Hashes whose content does not match their name (should always be empty)."""
        bad = []
        for s in ([sha] if sha else self.iter_objects()):
            h = hashlib.sha256()
            with self.open(s) as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
            if h.hexdigest() != s:
                bad.append(s)
        return bad

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        """Delete partial writes left by crashed writers; returns how many."""
        n, cutoff = 0, time.time() - older_than_s
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
        return n

    # --- run folders ------------------------------------------------------------------------
    def run_dir(self, job_id: int) -> Path:
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
            raise ArtifactError(f"bad job id {job_id!r}")
        d = self._confined(self.runs_dir / str(job_id))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def run_file(self, job_id: int, name: str) -> Path:
        """A file in a job's run folder by its plain name (config.json, log.txt, ...)."""
        if name not in {"config.json", "log.txt", "results.json", "failure.json"}:
            raise ArtifactError(f"not a run-folder file: {name!r}")
        return self.run_dir(job_id) / name

    def fresh_work_dir(self, job_id: int) -> Path:
        """An empty scratch folder for this attempt (a previous attempt's is removed)."""
        work = self.run_dir(job_id) / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        return work

    def staging_dir(self, job_id: int, attempt: int) -> Path:
        """Where attempt ``attempt`` of job ``job_id`` keeps the objects it stores until it
        succeeds (one folder per attempt, inside the attempt's work folder)."""
        return self.run_dir(job_id) / "work" / f".objects-attempt{int(attempt)}"

    def staged_leftovers(self, job_id: Optional[int] = None) -> list[Path]:
        """Objects staged by attempts that never published them (of one job, or of all)."""
        runs = [self.run_dir(job_id)] if job_id is not None else sorted(self.runs_dir.iterdir())
        return sorted(p for run in runs for p in run.glob("work/.objects-attempt*/*"))

    def drop_staged(self, job_id: int) -> int:
        """Remove what the job's attempts staged and never published (the job is over);
        returns how many objects."""
        n = 0
        for folder in (self.run_dir(job_id) / "work").glob(".objects-attempt*"):
            n += sum(1 for p in folder.iterdir() if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
        return n


class StagedStore(ArtifactStore):
    """The store as one job attempt sees it: objects it writes wait in ``staging`` (a folder
    under the store's root, so on the same disk) and become visible to everyone else only
    by ``publish()``; until then it reads its own staged objects, then the store's."""

    def __init__(self, root: str | Path, staging: str | Path):
        super().__init__(root)
        self.staging = self._confined(Path(staging))
        self.staging.mkdir(parents=True, exist_ok=True)

    def _staged_path(self, sha: str) -> Path:
        return self.staging / self.check_sha(sha)

    def _place(self, tmp: str, sha: str) -> None:
        if self._object_path(sha).exists() or self._staged_path(sha).exists():
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, self._staged_path(sha))

    def has(self, sha: str) -> bool:
        return self._staged_path(sha).is_file() or super().has(sha)

    def path(self, sha: str) -> Path:
        staged = self._staged_path(sha)
        return staged if staged.is_file() else super().path(sha)

    def staged(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir() if _SHA.match(p.name))

    def publish(self) -> list[str]:
        """Move every staged object into the store (each rename is atomic); returns them."""
        shas = self.staged()
        touched = set()
        for sha in shas:
            dest = self._object_path(sha)
            if dest.exists():  # another job stored the same bytes meanwhile
                os.unlink(self._staged_path(sha))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged_path(sha), dest)
            touched.add(dest.parent)
        for folder in touched:
            _fsync_dir(folder)
        return shas

    def discard(self) -> int:
        """Drop every staged object (the attempt failed); frees their space now. Returns how many."""
        n = 0
        if not self.staging.is_dir():  # removed with its work folder already
            return 0
        for p in list(self.staging.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n


def store_from_settings(settings=None) -> ArtifactStore:
    from storage.settings import get_settings

    return ArtifactStore((settings or get_settings()).artifacts_dir)
