"""Browser tests: the real dashboard (``python app.py`` as a subprocess on a free port, with a
temporary data dir, SQLite and the embedded worker, configured through GTAPP_* environment
variables) driven by headless Debian Chromium through the ``playwright`` wheel
(``executable_path=/usr/bin/chromium``; ``playwright install`` is never run).

Missing Chromium or playwright skip these tests locally; under CI (CI=true or
GTAPP_TEST_REQUIRE_SERVICES=1) they fail instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from live_dashboard import Dashboard
from needs import missing

from testkit.services import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


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
