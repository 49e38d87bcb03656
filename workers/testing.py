"""Test support: real services for tests that claim to use them (no mocks).

* :func:`temp_postgres_database` creates a fresh PostgreSQL database and drops it after.
* :func:`redis_reachable` says whether a Redis answers at a URL.
* :class:`CeleryWorker` starts a real ``celery -A workers.celery_app worker`` subprocess with
  the given settings (passed as ``GTAPP_*`` environment variables), waits until it is
  ready, and stops (or SIGKILLs) its whole process group.
* :func:`settings_env` turns a Settings object into the environment a subprocess needs to
  see the same configuration.

Used by tests/storage and tests/workers; usable by any other test that needs a worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit

from storage.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """``GTAPP_<FIELD>`` for every field that is set, so a subprocess reads the same settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"GTAPP_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def postgres_reachable(admin_url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=2):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def temp_postgres_database(admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                           prefix: str = "gtapp_test") -> Iterator[str]:
    """Create ``<prefix>_<random>``; yields its SQLAlchemy URL; drops it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = f"postgresql+psycopg://{parts.netloc}/{name}"
    try:
        yield url
    finally:
        from storage.db import dispose_all

        dispose_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class CeleryWorker:
    """A real Celery worker subprocess for ``settings`` (must have a broker_url)."""

    def __init__(self, settings: Settings, log_path: Path, name: Optional[str] = None,
                 queues: str = "cpu,gpu", concurrency: int = 1):
        if not settings.broker_url:
            raise ValueError("a Celery worker needs settings.broker_url")
        self.settings = settings
        self.log_path = Path(log_path)
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.queues, self.concurrency = queues, concurrency
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> "CeleryWorker":
        # A clean environment (nothing inherited): the worker sees exactly these settings.
        env = {"PATH": os.defpath, "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8", **settings_env(self.settings)}
        cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", self.queues,
               "-c", str(self.concurrency), "--pool", "prefork", "-l", "info", "-n", f"{self.name}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.log_path.parent, env=env,  # cwd: no stray .env
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"celery worker not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def pool_pids(self) -> list[int]:
        """Pids of the worker's pool processes (children of the main process)."""
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool): a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._log.close()

    def __enter__(self) -> "CeleryWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
