"""bench/dashboard_load.py end to end on a short run: it starts the real dashboard, signs in
sessions of several organisations, browses, uploads, submits fine-tunes and polls through
the same HTTP calls a browser makes, and reports latencies with zero errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testkit.services import REPO_ROOT


@pytest.mark.slow  # a live dashboard for a 15 s load run plus its start: about 26 s idle, more under load
def test_dashboard_load_bench_smoke(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "dashboard_load.py"), "--sessions", "3",
                           "--orgs", "2", "--duration", "15", "--upload-every-s", "30", "--reload-every-s", "6",
                           "--finetune-steps", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["errors"] == 0 and r["error_samples"] == []
    assert r["jobs"]["submitted"] == 3 and set(r["jobs"]["outcomes"].values()) == {"succeeded"}
    for call in ("POST /login", "GET /", "GET /config", "page load (all)", "event: poll jobs table",
                 "event: upload dataset", "event: start fine-tune", "POST /gradio_api/upload"):
        assert r["calls"][call]["n"] >= 1 and r["calls"][call]["p50_ms"] > 0, call
    assert "p95 ms" in proc.stdout and "errors 0" in proc.stdout
