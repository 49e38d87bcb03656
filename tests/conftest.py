"""Shared fixtures: zoo model pairs built once per test session.

``micro_zoo`` builds in about a second (barely pretrained; for plumbing tests);
``ci_zoo`` builds in well under a minute (pretrained; for tests that need models that
actually learn). Both return the folder holding tiny/, llm/ and recipe.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_collection_modifyitems(config, items):
    """``-m "not slow"`` is the fast loop: a test that needs the ci zoo (built once per session,
    about 20 s on an idle 2-core machine) must be marked slow, or the fast loop pays for it."""
    unmarked = [i.nodeid for i in items if "ci_zoo" in getattr(i, "fixturenames", ()) and not i.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("tests using the ci_zoo fixture must be marked @pytest.mark.slow: " + ", ".join(unmarked))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The models in tests are tiny: on a 2-core machine a second torch thread only contends
    (measured 5-10x slower steps with two threads while other work ran)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def micro_zoo(tmp_path_factory) -> Path:
    from gtapp import zoo

    return zoo.build("micro", tmp_path_factory.mktemp("zoo_micro"), seed=0)


@pytest.fixture(scope="session")
def ci_zoo(tmp_path_factory) -> Path:
    from gtapp import zoo

    return zoo.build("ci", tmp_path_factory.mktemp("zoo_ci"), seed=0)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only copies of public datasets beside the checkout (../shared/datasets)."""
    path = SHARED / "datasets"
    if not path.is_dir():
        pytest.skip(f"shared datasets folder not found at {path}")
    return path
