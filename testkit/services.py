"""Test support: real services for tests that claim to use them (no mocks).

* :func:`temp_postgres_database` creates a fresh PostgreSQL database and drops it after.
* :func:`redis_reachable` says whether a Redis answers at a URL.
* :class:`CeleryWorker` starts a real ``celery -A workers.celery_app worker`` subprocess with
  the given settings (passed as ``GTAPP_*`` environment variables), waits until it is
  ready, and stops (or SIGKILLs) its whole process group.
* :func:`settings_env` turns a Settings object into the environment a subprocess needs to
  see the same configuration.
* :class:`RedisServer`, :class:`PostgresServer`: private servers (own port, own temp folder)
  that a fault-injection test may stop, kill and restart without touching shared services.
* :func:`small_tmpfs`: a size-limited tmpfs mount, to run out of disk space on purpose.
* :func:`wait_until`: poll a condition with a deadline.

Used by tests/storage and tests/workers; usable by any other test that needs a worker.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    """A real Celery worker subprocess for ``settings`` (must have a broker_url).

    ``preload``: modules the worker's main process imports before it forks its pool, so each
    pool process starts with them loaded (tests that start many workers skip the seconds of
    importing torch and transformers in every new pool process)."""

    def __init__(self, settings: Settings, log_path: Path, name: Optional[str] = None,
                 queues: str = "cpu,gpu", concurrency: int = 1, preload: tuple[str, ...] = ()):
        if not settings.broker_url:
            raise ValueError("a Celery worker needs settings.broker_url")
        self.settings = settings
        self.log_path = Path(log_path)
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.queues, self.concurrency, self.preload = queues, concurrency, tuple(preload)
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> "CeleryWorker":
        # A clean environment (nothing inherited): the worker sees exactly these settings.
        env = {"PATH": os.defpath, "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8", **settings_env(self.settings)}
        cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", self.queues,
               "-c", str(self.concurrency), "--pool", "prefork", "-l", "info", "-n", f"{self.name}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.preload:
            cmd += ["--include", ",".join(self.preload)]
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


# --- private servers for fault injection ---------------------------------------------------------


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


class RedisServer:
    """A private ``redis-server`` on a free port in its own folder, with persistence off (no
    RDB snapshots, no AOF): a restart loses every key, queued broker messages included, as
    a broker without persistence does when it crashes or is restarted."""

    def __init__(self, workdir: Path, port: Optional[int] = None, binary: Optional[str] = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server"))

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), "--daemonize", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or redis_reachable(self.url), timeout, "redis-server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
        return self

    def stop(self, hard: bool = False) -> None:
        """SIGTERM (or SIGKILL when ``hard``) and wait; without persistence both lose every key."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self, down_s: float = 0.0, hard: bool = False) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port (empty)."""
        self.stop(hard=hard)
        time.sleep(down_s)
        self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def find_pg_bin(name: str) -> Optional[str]:
    """A PostgreSQL server binary (initdb, pg_ctl) on PATH or under /usr/lib/postgresql."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A private PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free port, in a fresh
    folder under the system temp dir, listening on 127.0.0.1 with trust authentication.

    PostgreSQL refuses to run as root: when this process is root, the server runs as the
    ``postgres`` system user (its folder is handed to that user)."""

    def __init__(self, port: Optional[int] = None, os_user: str = "postgres"):
        self.port = port or free_port()
        self.initdb, self.pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        self.os_user = os_user if os.geteuid() == 0 else None
        self.root: Optional[Path] = None

    @staticmethod
    def available() -> bool:
        """The server binaries exist (and, as root, the user the server must run as)."""
        if not (find_pg_bin("initdb") and find_pg_bin("pg_ctl")):
            return False
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return False
        return True

    def url(self, database: str = "gtapp") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, args: list[str], timeout: float = 60.0) -> None:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, user=self.os_user,
                             cwd=self.root, env={"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stdout}{out.stderr}"
                               f"\n{self.log_tail()}")

    def start(self) -> "PostgresServer":
        """initdb (first time only), start, and create the ``gtapp`` database."""
        if self.root is None:
            # Not under pytest's tmp_path: that is root-only (0700), and the server is not root.
            self.root = Path(tempfile.mkdtemp(prefix="gtapp-pg-"))
            if self.os_user:
                shutil.chown(self.root, user=self.os_user)
            self._run([self.initdb, "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions"])
            fresh = True
        else:
            fresh = False
        # fsync off: nothing here must survive a machine crash, only a server restart (a clean
        # shutdown writes everything anyway). The socket goes in our folder, not /var/run.
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=60")
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-o", opts,
                   "-w", "-t", "60", "start"])
        if fresh:
            import psycopg

            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
                c.execute('CREATE DATABASE "gtapp"')
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: disconnect every client and shut down cleanly; ``immediate``: a crash."""
        if self.root is not None and (self.data_dir / "postmaster.pid").exists():
            self._run([self.pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"])

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:] if self.root else ""
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop (if running) and remove the cluster's folder."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc) -> None:
        from storage.db import dispose_all

        dispose_all()  # this process's pooled connections to a server that is going away
        self.destroy()


class MountNotPermitted(RuntimeError):
    """This process may not mount a tmpfs (not root, or no CAP_SYS_ADMIN in a container)."""


@contextlib.contextmanager
def small_tmpfs(size_kb: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size_kb`` KiB mounted on a new temp folder; unmounted and removed
    afterwards. Raises MountNotPermitted when mounting is not allowed here."""
    where = Path(tempfile.mkdtemp(prefix="gtapp-tmpfs-"))
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_kb)}k,mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True)
        why = (out.stderr or out.stdout).strip() if out.returncode != 0 else ""
    except OSError as e:  # no mount command here
        why = str(e)
    if why:
        where.rmdir()
        raise MountNotPermitted(f"cannot mount a tmpfs on {where}: {why}")
    try:
        yield where
    finally:
        done = subprocess.run(["umount", str(where)], capture_output=True)
        if done.returncode != 0:  # something still has a file open there: detach it lazily
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()
