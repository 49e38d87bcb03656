"""Tenancy, enforced by the service every handler goes through: an organisation sees only
its own datasets, adapters, ledgers, jobs and evaluations; a foreign row reads as missing;
admins see everything; admin operations refuse members."""

from __future__ import annotations

import pytest
from ui_helpers import staged, write_jsonl

from storage.models import Adapter, Evaluation
from ui import finetune, jobs
from ui.service import NotFound


def _dataset(svc, who, tmp_path, name="d", budget=None):
    src = write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(12)])
    return svc.ingest_dataset(who, staged(svc, src), f"{name}.jsonl", name=name, epsilon_budget=budget)


def _adapter(svc, who, pair_id, adapter_dir, model="tiny") -> int:
    sha = svc.store.put_tree(adapter_dir)
    with svc.session() as s:
        a = Adapter(org_id=who.org_id, user_id=who.user_id, model_pair_id=pair_id, model=model, origin="produced",
                    name=f"{model}-a", artifact=sha, meta={"record": {"epsilon": 2.5}})
        s.add(a)
        s.flush()
        return a.id


def test_foreign_rows_read_as_missing_and_admins_see_all(svc, users, tmp_path, pair_id, adapter_dir):
    alice, bob, root = (svc.who(users[n]) for n in ("alice", "bob", "root"))
    ds = _dataset(svc, alice, tmp_path, budget=2.0)
    aid = _adapter(svc, alice, pair_id, adapter_dir)
    with svc.session() as s:
        s.add(Evaluation(org_id=alice.org_id, method="gt", task="math/x", metric="exact_match", value=0.5, seed=0))

    assert svc.list_datasets(bob) == [] and svc.list_adapters(bob) == [] and svc.evaluation_rows(bob) == []
    for call in (lambda: svc.get_dataset(bob, ds["id"]), lambda: svc.dataset_preview(bob, ds["id"]),
                 lambda: svc.ledger(bob, ds["id"]), lambda: svc.get_adapter(bob, aid),
                 lambda: svc.adapter_zip(bob, aid), lambda: svc.get_adapter(bob, 9999),
                 lambda: svc.set_budget(bob, ds["id"], 5)):
        with pytest.raises(NotFound, match="not found"):
            call()
    # the same message for a foreign id and a missing one
    with pytest.raises(NotFound) as foreign:
        svc.get_adapter(bob, aid)
    with pytest.raises(NotFound) as missing:
        svc.get_adapter(bob, aid + 100)
    assert str(foreign.value).replace(str(aid), "N") == str(missing.value).replace(str(aid + 100), "N")

    assert [d["id"] for d in svc.list_datasets(root)] == [ds["id"]]
    assert svc.get_adapter(root, aid)["org"] == "acme" and svc.adapter_zip(root, aid)[1]
    assert len(svc.evaluation_rows(root)) == 1 and svc.evaluation_rows(alice)[0]["method"] == "gt"
    # admins see every organisation's data but their own dropdowns (jobs) list only their own
    assert svc.list_datasets(root, own_only=True) == []
    # the ledger view is computed without torch-importing accountants, and matches the budget
    led = svc.ledger(alice, ds["id"])
    assert led["budget"] == 2.0 and led["spent"] == 0.0 and led["remaining"] == 2.0


def test_admin_operations_refuse_members(svc, users, tmp_path):
    bob, root = svc.who(users["bob"]), svc.who(users["root"])
    for call in (lambda: svc.list_users(bob), lambda: svc.create_user(bob, "x", "mallory", "password123", "admin"),
                 lambda: svc.set_active(bob, "alice", False), lambda: svc.register_zoo_pair(bob, "micro", None),
                 lambda: svc.promote(bob, 1)):
        with pytest.raises(PermissionError):
            call()
    f = tmp_path / "r.json"
    f.write_text('[{"task": "t", "method": "gt", "value": 0.5}]')
    with pytest.raises(PermissionError):
        svc.store_benchmark(bob, staged(svc, f), "r.json")
    # and members cannot submit admin job kinds through the job API
    with pytest.raises((PermissionError, Exception)) as e:
        svc.submit(bob, "shadow", {"pair_id": 1})
    assert "admin" in str(e.value) or "not available" in str(e.value)
    assert "mallory" in svc.create_user(root, "x", "mallory", "password123", "member")
    assert {u["username"] for u in svc.list_users(root)} >= {"alice", "bob", "root", "mallory"}
    assert "disabled" in svc.set_active(root, "mallory", False)
    with pytest.raises(PermissionError):
        svc.principal("mallory")


def test_jobs_are_visible_only_to_their_organisation(svc, users, tmp_path, pair_id):
    alice, bob = svc.who(users["alice"]), svc.who(users["bob"])
    ds = _dataset(svc, alice, tmp_path)
    msg = finetune.start_finetune(svc, users["alice"], ds["id"], pair_id, 5, 1e-3, 4, 64, False, 1.0, None, 1.0, "")
    assert msg.startswith("✔") and "job 1 queued" in msg
    html_alice = jobs.job_table(svc, users["carol"])  # same organisation
    assert "data-job-id='1'" in html_alice and "data-status='queued'" in html_alice and "alice" in html_alice
    assert "data-job-id" not in jobs.job_table(svc, users["bob"])
    with pytest.raises(LookupError, match="job 1 not found"):
        jobs.job_detail(svc, users["bob"], 1)
    with pytest.raises(LookupError, match="not found"):
        jobs.cancel_job(svc, users["bob"], 1)
    detail, log, _ = jobs.job_detail(svc, users["alice"], 1)
    assert "finetune" in detail and '"dataset_id"' in detail
    assert "cancelled" in jobs.cancel_job(svc, users["alice"], 1)
    assert "retried as job 2" in jobs.retry_job(svc, users["alice"], 1)
    # a job naming another organisation's dataset is refused by the job API
    with pytest.raises(LookupError, match="dataset .* not found"):
        finetune.start_finetune(svc, users["bob"], ds["id"], pair_id, 5, 1e-3, 4, 64, False, 1, None, 1, "")
    assert bob.org_id != alice.org_id


def test_zoo_folders_and_mapper_promotion(svc, users, recipes, pair_id, settings):
    from storage.models import MapperVersion
    from ui import admin

    root = svc.who(users["root"])
    zoo = settings.zoo_root / "syn2"
    (zoo / "tiny").mkdir(parents=True)
    (zoo / "llm").mkdir()
    recipes.save(zoo / "recipe.json")
    (settings.zoo_root / "not-a-zoo").mkdir()
    assert [c["name"] for c in svc.zoo_candidates()] == ["syn2"]
    with pytest.raises(NotFound):
        svc.register_zoo_pair(root, "../syn2", None)  # only folders from the list, never a typed path
    assert "registered" in svc.register_zoo_pair(root, "syn2", "")
    assert svc.zoo_candidates()[0]["registered"] and [p["name"] for p in svc.list_pairs()] == ["syn", "syn2"]
    with svc.session() as s:
        for v, loss in ((1, 0.5), (2, 0.25)):
            s.add(MapperVersion(model_pair_id=pair_id, version=v, kind="gt", artifact="0" * 64,
                                metrics={"val_loss": loss, "note": "x"}))
    ms = svc.list_mappers(pair_id)
    assert [m["metrics_text"] for m in ms] == ["val_loss=0.5", "val_loss=0.25"] and not any(m["promoted"] for m in ms)
    assert "promoted" in svc.promote(root, ms[1]["id"])
    assert "promoted" in svc.promote(root, ms[0]["id"])
    assert [m["promoted"] for m in svc.list_mappers(pair_id)] == [True, False]  # one per pair
    users_tbl, pairs_tbl, mappers_tbl, *_ = admin.admin_overview(svc, users["root"])
    assert len(mappers_tbl["data"]) == 2 and len(pairs_tbl["data"]) == 2
    with pytest.raises(PermissionError):
        admin.admin_overview(svc, users["alice"])
    from ui import generate

    labels = [label for label, _ in generate.mapper_choices(svc, pair_id)]
    assert labels[0] == generate.PROMOTED and "★ promoted" in labels[1]
