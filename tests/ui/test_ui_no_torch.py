"""The dashboard never imports torch on a request path: importing app.py and every ui module,
building the app, and the request-path service calls (uploading a dataset, listing, the
ledger view, submitting a non-DP job) leave torch unimported. (Job code imports it lazily,
in the worker; adapter validation runs in a child process.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap


from testkit.services import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from ui_helpers import make_settings, req, staged, write_jsonl
    import app, ui.app, ui.admin, ui.auth, ui.charts, ui.common, ui.compare, ui.finetune, ui.generate, ui.jobs
    import ui.service, ui.upload, ui.web
    from storage import accounts
    from workers.client import JobClient
    root = Path({root!r})
    settings = make_settings(root / "deploy")
    fastapi_app = ui.app.create_app(settings, bootstrap=False)
    svc = ui.service.Service(settings)
    svc.bootstrap()
    svc.client = JobClient(settings, run_embedded=False)
    with svc.session() as s:
        accounts.create_user(s, "acme", "alice", "password123", "member")
    r = req("alice")
    who = svc.who(r)
    src = write_jsonl(root / "d.jsonl", [{{"prompt": "p%d" % i, "answer": "a"}} for i in range(10)])
    ds = svc.ingest_dataset(who, staged(svc, src), "d.jsonl", epsilon_budget=3)
    svc.list_datasets(who); svc.ledger(who, ds["id"]); svc.list_adapters(who); svc.evaluation_rows(who)
    ui.finetune.show_ledger(svc, ds["id"], r)
    ui.upload.my_uploads(svc, r)
    ui.jobs.job_table(svc, r)
    ui.compare.figures([])
    svc.job_kinds(who)
    if {submit}:
        from storage.models import ModelPairRecord
        with svc.session() as s:
            pair = ModelPairRecord(name="p", tiny_path="/x", llm_path="/y", recipe={{}}, recipe_fingerprint="0" * 64)
            s.add(pair); s.flush(); pid = pair.id
        try:  # without DP on a budgeted dataset: refused (no 'no DP required' choice was made)
            ui.finetune.start_finetune(svc, r, ds["id"], pid, 5, 1e-3, 4, 64, False, 1, None, 1, "")
            raise AssertionError("a non-DP fine-tune on a budgeted dataset was accepted")
        except ValueError as e:
            assert "without DP would void it" in str(e)
        # a DP fine-tune: the noise is calibrated and the ledger charged at submission (dp-accounting)
        assert "queued" in ui.finetune.start_finetune(svc, r, ds["id"], pid, 5, 1e-3, 4, 64, True, 1.0, None, 1, "dp")
        led = svc.ledger(who, ds["id"])
        assert led["entries"][-1]["status"] == "reserved" and abs(led["entries"][-1]["epsilon"] - 1.0) < 1e-9
    print(json.dumps({{"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}}))
""")


def _run(tmp_path, submit: bool) -> str:
    code = SCRIPT.format(tests=str(REPO_ROOT / "tests" / "ui"), root=str(tmp_path), submit=submit)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_app_and_ui_do_not_import_torch(tmp_path):
    assert _run(tmp_path, submit=False) == '{"torch": false, "transformers": false}'


def test_submitting_a_job_does_not_import_torch(tmp_path):
    """A non-DP and a DP fine-tune (noise calibrated, ledger charged) are submitted without torch."""
    assert _run(tmp_path, submit=True) == '{"torch": false, "transformers": false}'
