"""What a test does when a real service or tool it needs is absent: skip on a developer's
machine; fail under CI (CI=true or GTAPP_TEST_REQUIRE_SERVICES=1), where everything must run."""

from __future__ import annotations

import os

import pytest


def missing(what: str) -> None:
    """Skip (locally) or fail (under CI) because ``what`` is not available."""
    if os.environ.get("CI") == "true" or os.environ.get("GTAPP_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here but not available")
    pytest.skip(f"{what} not available")
