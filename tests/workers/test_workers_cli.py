"""`gtapp jobs` and `gtapp admin`, in-process (embedded mode) and through the real entry
point; `import gtapp.cli` stays free of SQLAlchemy and Celery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gtapp.cli import main
from storage import settings as settings_mod
from workers.embedded import stop_all
from testkit.services import REPO_ROOT


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"GTAPP_{name}", raising=False)
    monkeypatch.setenv("GTAPP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GTAPP_HEARTBEAT_INTERVAL_S", "0.5")
    monkeypatch.setenv("GTAPP_HEARTBEAT_STALE_S", "3")
    monkeypatch.setenv("GTAPP_PROGRESS_MIN_INTERVAL_S", "0.1")
    monkeypatch.delenv("GTAPP_CLI_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    settings_mod.reset_settings()
    yield tmp_path
    stop_all()
    settings_mod.reset_settings()


def test_admin_and_jobs_commands(cli_env, capsys):
    assert main(["admin", "db", "upgrade"]) == 0
    assert "revision 0007" in capsys.readouterr().out  # the newest migration
    assert main(["admin", "create-user", "--org", "acme", "--username", "alice", "--password", "password123"]) == 0
    assert main(["admin", "create-user", "--org", "prov", "--username", "boss", "--role", "admin",
                 "--password", "password123"]) == 0
    capsys.readouterr()
    assert main(["jobs", "submit", "selftest", "-p", "steps=5", "-p", "step_s=0.02", "-p", "seed=4",
                 "--user", "alice", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "[########################] 100.0%" in out
    assert main(["jobs", "submit", "selftest", "-p", "fail_at=0", "--user", "alice", "--wait"]) == 1
    assert "failed: RuntimeError: selftest was asked to fail at step 0" in capsys.readouterr().out
    assert main(["jobs", "list", "--json"]) == 0  # as the first admin: sees everything
    listed = json.loads(capsys.readouterr().out)
    assert [j["status"] for j in listed] == ["failed", "succeeded"] and listed[1]["params"]["seed"] == 4
    assert main(["jobs", "show", "1", "--json", "--user", "alice"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["bytes"] == 64 * 1024
    # queued without --wait in embedded mode: nothing runs it until a worker does; cancel it (the
    # --wait runs above left this process's embedded worker polling the queue: stop it first)
    stop_all()
    assert main(["jobs", "submit", "selftest", "--user", "alice", "-q"]) == 0
    job_id = int(capsys.readouterr().out.strip())
    assert main(["jobs", "cancel", str(job_id), "--user", "alice"]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["jobs", "retry", "2", "--user", "alice"]) == 0
    # refusals are one readable line, not a traceback
    assert main(["jobs", "show", "999", "--user", "alice"]) == 2
    assert "error: job 999 not found" in capsys.readouterr().err
    assert main(["jobs", "submit", "selftest", "-p", "nope=1", "--user", "alice"]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert main(["admin", "create-user", "--org", "acme", "--username", "alice", "--password", "password123"]) == 2


def test_dataset_and_ledger_commands(cli_env, capsys, tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"prompt": f"q{i}", "answer": "a"}) for i in range(5)))
    assert main(["admin", "create-dataset", "--org", "acme", "--name", "d", "--jsonl", str(tmp_path / "d.jsonl"),
                 "--epsilon-budget", "2"]) == 0
    assert "5 examples" in capsys.readouterr().out
    assert main(["admin", "ledger", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["budget"] == 2.0
    assert main(["admin", "reap"]) == 0 and "nothing to do" in capsys.readouterr().out


def test_entry_point_and_import_hygiene(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "GTAPP_DATA_DIR": str(tmp_path / "d"),
           "GTAPP_FIRST_ADMIN_PASSWORD": "first-admin-pw"}
    out = subprocess.run([sys.executable, "-m", "gtapp", "jobs", "submit", "selftest", "-p", "steps=2", "--wait"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "succeeded" in out.stdout, out.stdout + out.stderr
    probe = ("import sys, gtapp, gtapp.cli, gtapp.progress; gtapp.cli.build_parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'celery', 'storage', 'workers'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    # a worker's parent process never imports torch (CUDA is first touched in the pool process)
    probe = "import sys, workers.celery_app, workers.client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_collaboration_cli_mirrors_the_tab(cli_env, capsys):
    """`gtapp collab`: create with invitations, accept, contribute an own adapter, show (members and
    whether each contributed, never what); an outsider is told it does not exist."""
    from storage import accounts
    from storage.db import session_scope
    from storage.models import Adapter, ModelPairRecord

    settings = settings_mod.get_settings()
    assert main(["admin", "db", "upgrade"]) == 0
    with session_scope(settings=settings) as s:
        for org, user in (("acme", "alice"), ("globex", "bob"), ("initech", "carol")):
            accounts.create_user(s, org, user, "password123", "member")
        pair = ModelPairRecord(name="p", tiny_path="/x", llm_path="/y", recipe={}, recipe_fingerprint="0" * 64)
        s.add(pair)
        s.flush()
        bob = accounts.principal(s, "bob")
        a = Adapter(org_id=bob.org_id, model_pair_id=pair.id, model="tiny", origin="uploaded", name="bob-secret",
                    artifact="1" * 64, meta={})
        s.add(a)
        s.flush()
        pid, aid = pair.id, a.id
    capsys.readouterr()
    assert main(["collab", "--user", "alice", "create", "shops", "--pair", str(pid), "--invite", "globex",
                 "--method", "median"]) == 0
    cid = json.loads(capsys.readouterr().out)["id"]
    assert main(["collab", "--user", "bob", "accept", str(cid)]) == 0
    assert main(["collab", "--user", "bob", "contribute", str(cid), "--adapter", str(aid)]) == 0
    capsys.readouterr()
    assert main(["collab", "--user", "alice", "show", str(cid), "--events"]) == 0
    shown = capsys.readouterr().out
    data = json.loads(shown)
    assert [(m["org"], m["state"], m["contributed"]) for m in data["members"]] == \
        [("acme", "accepted", False), ("globex", "accepted", True)]
    assert "bob-secret" not in shown and [e["action"] for e in data["events"]][-1] == "contributed"
    assert main(["collab", "--user", "carol", "show", str(cid)]) == 2
    assert f"collaboration {cid} not found" in capsys.readouterr().err
    assert main(["collab", "--user", "alice", "start", str(cid)]) == 2
    assert "at least 2" in capsys.readouterr().err
