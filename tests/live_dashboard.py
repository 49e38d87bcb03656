"""The real dashboard as a process: ``python app.py`` on a free port, with a temporary data
dir, SQLite and the embedded worker, configured through GTAPP_* environment variables — what
the browser tests (tests/e2e) and the attacker tests (tests/security) talk to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from testkit.services import REPO_ROOT, free_port

ADMIN_PASSWORD = "admin-password-e2e"


class Dashboard:
    def __init__(self, root: Path, zoo_dir: Path, **env: str):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.data_dir = root / "data"
        self.log_path = root / "dashboard.log"
        self.env = {**os.environ, "GTAPP_DATA_DIR": str(self.data_dir), "GTAPP_ZOO_DIR": str(zoo_dir),
                    "GTAPP_FIRST_ADMIN_PASSWORD": ADMIN_PASSWORD, "GTAPP_DASHBOARD_PORT": str(self.port),
                    "GTAPP_DASHBOARD_HOST": "127.0.0.1", "GTAPP_SECRET_KEY": "e2e-secret",
                    "GTAPP_HEARTBEAT_INTERVAL_S": "0.5", "GTAPP_PROGRESS_MIN_INTERVAL_S": "0.2",
                    "GTAPP_EMBEDDED_POLL_S": "0.2", "GTAPP_EMBEDDED_WORKERS": "2", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                    "GRADIO_ANALYTICS_ENABLED": "False"}
        self.env.update(env)
        for k in ("GTAPP_DATABASE_URL", "DATABASE_URL", "GTAPP_BROKER_URL", "BROKER_URL", "GTAPP_ARTIFACT_ROOT"):
            self.env.pop(k, None)
        self.proc = None
        self.admin_password = ADMIN_PASSWORD

    def start(self, timeout: float = 120) -> "Dashboard":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"dashboard did not start in {timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
