"""A collaboration of three organisations in Chromium against the real ``python app.py`` (its
embedded worker runs every job): acme creates it on the Collaborations tab and invites globex,
initech and umbrella; globex and initech accept and umbrella declines, each on its own page;
the three contribute one TinyLM adapter each; acme starts the run; every contributing member
sees the result and downloads the same LLM adapter, which loads in peft; umbrella gets nothing;
an outsider sees nothing of it on the page or through the HTTP API; no page shows another
member's contribution."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from test_dashboard_e2e import EVENT_TIMEOUT_MS, fill, gradio_call, shot, sign_in, tab, wait_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TASK = "math/add-fruit-easy"
ORGS = {"acme": "ann", "globex": "gus", "initech": "ivy", "umbrella": "uma", "outsider": "otto"}
PASSWORD = "collab-password"


@pytest.fixture(scope="module")
def world(dashboard):
    """Members and their TinyLM adapters, and a promoted mapper, made through the job API on the
    dashboard's own database (its embedded worker runs the jobs)."""
    from sqlalchemy import select

    from gtapp.tasks import make_task
    from storage import accounts, catalog
    from storage.accounts import principal
    from storage.artifacts import ArtifactStore
    from storage.db import session_scope
    from storage.models import ModelPairRecord
    from storage.settings import Settings
    from workers.client import JobClient

    settings = Settings(data_dir=dashboard.data_dir, _env_file=None)
    client = JobClient(settings, run_embedded=False)  # queued here, run by the dashboard's worker
    store = ArtifactStore(settings.artifacts_dir)
    with session_scope(settings=settings) as s:
        for org, user in ORGS.items():
            accounts.create_user(s, org, user, PASSWORD, "member")
        pair_id = s.scalars(select(ModelPairRecord.id)).first()
        admin = principal(s, "admin")
    shadow = {"tasks": [TASK], "subsets": 3, "subset_size": 16, "steps": 4, "snapshot_steps": [2], "n_train": 64,
              "batch_size": 4, "lr": 0.01, "pair_id": pair_id, "device": "cpu"}
    for kind, params in (("shadow", shadow), ("train_mapper", {"pair_id": pair_id, "kind": "ridge", "promote": True,
                                                               "device": "cpu"})):
        view = client.wait(client.submit(kind, params, admin), timeout=240)
        assert view.status == "succeeded", (kind, view.error)
    adapters = {}
    for i, org in enumerate(("acme", "globex", "initech")):
        with session_scope(settings=settings) as s:
            who = principal(s, ORGS[org])
            ds = catalog.create_dataset(s, store, who.org_id, f"{org}-private",
                                        make_task(TASK, seed=10 + i, n_train=32, n_test=1).train).id
        view = client.wait(client.submit("finetune", {"pair_id": pair_id, "dataset_id": ds, "steps": 4,
                                                      "batch_size": 4, "max_length": 64, "lr": 0.01,
                                                      "name": f"{org}-secret-adapter", "device": "cpu"}, who),
                           timeout=240)
        assert view.status == "succeeded", view.error
        adapters[org] = view.outputs["adapter_id"]
    return {"pair_id": pair_id, "adapters": adapters, "settings": settings}


def _pick(page, elem_id: str, label_part: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").filter(has_text=label_part).first.click()
    page.wait_for_timeout(400)


def _open(page, name: str) -> None:
    tab(page, "Collaborations")
    _pick(page, "col-pick", name)
    page.locator("#col-refresh").click()  # what other members did since this page last looked
    wait_text(page, "#col-detail", re.escape(name))
    page.wait_for_timeout(500)


def test_collaboration_of_three_organisations_in_the_browser(browser, dashboard, world, shots, tmp_path):
    pages = {org: sign_in(browser, dashboard, user, PASSWORD) for org, user in ORGS.items()}
    acme = pages["acme"][1]
    tab(acme, "Collaborations")
    fill(acme, "col-name", "three shops pool")
    fill(acme, "col-invite", "globex, initech, umbrella")
    acme.locator("#col-create").click()
    wait_text(acme, "#col-create-status", r"created; 3 organisation\(s\) invited")

    for org, answer in (("globex", "#col-accept"), ("initech", "#col-accept"), ("umbrella", "#col-decline")):
        page = pages[org][1]
        _open(page, "three shops pool")
        page.locator(answer).click()
        wait_text(page, "#col-action-status", "accepted" if "accept" in answer else "declined")

    for org in ("acme", "globex", "initech"):
        page = pages[org][1]
        _open(page, "three shops pool")
        _pick(page, "col-adapter", f"{org}-secret-adapter")
        page.locator("#col-contribute").click()
        wait_text(page, "#col-action-status", "contributed")
        detail = wait_text(page, "#col-detail", r"Your contribution")
        # this page shows its own adapter's name, and no other member's
        others = [f"{o}-secret-adapter" for o in ("acme", "globex", "initech") if o != org]
        assert not [n for n in others if n in detail] and f"{org}-secret-adapter" in detail

    _open(acme, "three shops pool")
    wait_text(acme, "#col-detail", r"globex: accepted · contributed")
    shot(acme, shots, "11-collaborations")
    acme.locator("#col-start").click()
    job_id = int(re.search(r"job (\d+)", wait_text(acme, "#col-action-status", r"started as job \d+")).group(1))

    import time

    from storage.db import session_scope
    from storage.models import Collaboration

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        with session_scope(settings=world["settings"]) as s:
            c = s.query(Collaboration).filter_by(job_id=job_id).one()
            if c.status in ("done", "open", "failed"):
                break
        time.sleep(0.5)
    assert c.status == "done", c.status

    import torch
    from peft import PeftModel

    from gtapp.models import load_model

    weights = {}
    for org in ("acme", "globex", "initech"):
        page = pages[org][1]
        _open(page, "three shops pool")
        detail = wait_text(page, "#col-detail", r"\*?Result\*?|Result")
        assert "by post-processing" in detail and "keeps that member's own (ε, δ)" in detail
        aid = int(re.search(r"LLM adapter (\d+)", detail).group(1))
        ctx = pages[org][0]
        r = ctx.request.get(f"{dashboard.url}download/adapter/{aid}")
        assert r.status == 200
        zpath = tmp_path / f"{org}.zip"
        zpath.write_bytes(r.body())
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(tmp_path / org)
            body = b"".join(zf.read(n) for n in zf.namelist() if n.endswith(".json")).decode()
        assert not [f"{o}-secret-adapter" for o in ORGS if f"{o}-secret-adapter" in body]
        model = PeftModel.from_pretrained(load_model(Path(dashboard.env["GTAPP_ZOO_DIR"]) / "micro" / "llm"),
                                          str(tmp_path / org))
        weights[org] = torch.cat([p.detach().flatten() for n, p in sorted(model.named_parameters()) if "lora_B" in n])
    assert torch.equal(weights["acme"], weights["globex"]) and torch.equal(weights["acme"], weights["initech"])

    # the decliner gets nothing; the outsider sees nothing, on the page or through the API
    umbrella = pages["umbrella"][1]
    _open(umbrella, "three shops pool")
    assert "LLM adapter" not in wait_text(umbrella, "#col-detail", r"declined")
    outsider_ctx, outsider = pages["outsider"]
    tab(outsider, "Collaborations")
    outsider.wait_for_timeout(800)
    assert "three shops" not in outsider.locator("#col-list").inner_text()
    cid = c.id
    for api in ("collab_accept", "collab_start", "collab_withdraw"):
        reply = gradio_call(outsider_ctx.request, dashboard.url, api, [cid])
        # refused: by Gradio (the id is not among the choices the outsider's page was given) or by
        # the service ("not found", like a missing id); never with anything of the collaboration
        assert "not in the list of choices" in reply or f"collaboration {cid} not found" in reply, (api, reply)
        assert "three shops" not in reply and "acme" not in reply
    with session_scope(settings=world["settings"]) as s:
        assert s.get(Collaboration, cid).status == "done"
    for _, (ctx, _page) in pages.items():
        ctx.close()
    assert EVENT_TIMEOUT_MS  # the shared helpers' timeout governs every wait above
