"""bench/jobs_load.py runs end to end through the real queue (a small N) and writes JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from testkit.services import REPO_ROOT


def test_jobs_load_bench_smoke(tmp_path, broker_url):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "jobs_load.py"), "--n", "8",
                           "--broker-url", broker_url, "--out", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "jobs/s" in proc.stdout and "p95 ms" in proc.stdout
    result = json.loads(out.read_text())
    assert result["succeeded"] == 8 and result["exactly_once"] and result["jobs_per_s"] > 0
    assert result["submit"]["n"] == 8 and result["submit"]["p50_ms"] > 0 and result["status"]["n"] > 0
