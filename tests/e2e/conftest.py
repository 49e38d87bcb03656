"""Browser tests: the real dashboard (``python app.py`` as a subprocess on a free port, with a
temporary data dir, SQLite and the embedded worker, configured through GTAPP_* environment
variables) driven by headless Debian Chromium through the ``playwright`` wheel
(``executable_path=/usr/bin/chromium``; ``playwright install`` is never run).

Missing Chromium or playwright skip these tests locally; under CI (CI=true or
GTAPP_TEST_REQUIRE_SERVICES=1) they fail instead."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from needs import missing

from workers.testing import REPO_ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
ADMIN_PASSWORD = "admin-password-e2e"


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package (requirements-dev.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Dashboard:
    def __init__(self, root: Path, zoo_dir: Path):
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


@pytest.fixture(scope="module")
def e2e_zoo(micro_zoo, tmp_path_factory) -> Path:
    """A zoo_dir holding the micro zoo as 'micro' (registered by the dashboard at start)."""
    zoo_dir = tmp_path_factory.mktemp("e2e_zoo")
    shutil.copytree(micro_zoo, zoo_dir / "micro")
    return zoo_dir


@pytest.fixture(scope="module")
def dashboard(e2e_zoo, tmp_path_factory):
    d = Dashboard(tmp_path_factory.mktemp("e2e_dashboard"), e2e_zoo).start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
