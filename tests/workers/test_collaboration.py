"""Collaborations across organisations through the service and the real job system (embedded
worker, real database, the micro zoo): invite, accept or decline, contribute, run, deliver to
every contributing member; outsiders see nothing; no member reads another's contribution; a
hostile contribution (scaled x40) is flagged and the median keeps it from moving the result."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
import torch
from jobs_helpers import make_settings

from storage import accounts, catalog
from storage.accounts import principal
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import Adapter
from storage.tenancy import NotFound
from workers.embedded import stop_all

pytestmark = pytest.mark.slow
TASK = "math/add-fruit-easy"
SHADOW = {"tasks": [TASK], "subsets": 3, "subset_size": 16, "steps": 4, "snapshot_steps": [2], "seeds": [0],
          "batch_size": 4, "n_train": 64, "lr": 0.01, "device": "cpu"}


class Lab:
    """Four organisations (three collaborate, one outsider), a promoted ridge mapper on the micro pair."""

    def __init__(self, settings, micro_zoo: Path):
        from ui.service import Service
        from workers.client import JobClient

        self.settings = settings
        self.svc = Service(settings)
        self.svc.client = JobClient(settings)
        self.store = ArtifactStore(settings.artifacts_dir)
        tag = uuid.uuid4().hex[:6]
        self.org = {k: f"{k}{tag}" for k in ("acme", "globex", "initech", "outsider")}
        self.who = {}
        with session_scope(settings=settings) as s:
            for k, org in self.org.items():
                u = accounts.create_user(s, org, f"u-{org}", "password123", "member")
                self.who[k] = principal(s, u.username)
            root = accounts.create_user(s, f"provider{tag}", f"root{tag}", "password123", "admin")
            self.root = principal(s, root.username)
            self.pair_id = catalog.register_pair(s, f"micro-{tag}", micro_zoo).id
        self.run("shadow", {"pair_id": self.pair_id, **SHADOW}, self.root)
        self.run("train_mapper", {"pair_id": self.pair_id, "kind": "ridge", "promote": True, "device": "cpu"},
                 self.root)

    def run(self, kind, params, who, timeout=240):
        view = self.svc.client.wait(self.svc.client.submit(kind, params, who), timeout=timeout)
        assert view.status == "succeeded", (kind, view.error, view.log_tail)
        return view

    def tiny(self, key: str, seed: int) -> int:
        from gtapp.tasks import make_task

        with session_scope(settings=self.settings) as s:
            ds = catalog.create_dataset(s, self.store, self.who[key].org_id, f"d{seed}",
                                        make_task(TASK, seed=seed, n_train=32, n_test=1).train).id
        view = self.run("finetune", {"pair_id": self.pair_id, "dataset_id": ds, "steps": 4, "batch_size": 4,
                                     "max_length": 64, "lr": 0.01, "seed": seed, "device": "cpu"}, self.who[key])
        return view.outputs["adapter_id"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, micro_zoo):
    lab = Lab(make_settings(tmp_path_factory.mktemp("collab")), micro_zoo)
    yield lab
    stop_all()


def _lora_b(lab, adapter_id, who):
    from safetensors.torch import load

    _, data = lab.svc.adapter_zip(who, adapter_id)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = set(zf.namelist())
        tensors = load(zf.read("adapter_model.safetensors"))
        record = json.loads(zf.read("generate.json")) if "generate.json" in files else {}
    return torch.cat([t.flatten() for k, t in sorted(tensors.items()) if "lora_B" in k]), record


def test_collaboration_runs_end_to_end_and_delivers_to_every_contributing_member(lab):
    svc, who = lab.svc, lab.who
    mine = {k: lab.tiny(k, seed) for k, seed in (("acme", 1), ("globex", 2), ("initech", 3))}
    c = svc.create_collaboration(who["acme"], "three shops", lab.pair_id,
                                 f"{lab.org['globex']}, {lab.org['initech']}", method="mean")
    cid = c["id"]
    assert [m["state"] for m in c["members"]] == ["accepted", "invited", "invited"]
    assert "accepted" in svc.answer_invitation(who["globex"], cid, True)
    assert "declined" in svc.answer_invitation(who["initech"], cid, False)
    with pytest.raises(PermissionError, match="accept the invitation first"):
        svc.contribute(who["initech"], cid, mine["initech"])
    with pytest.raises(NotFound):  # one's own adapters only: another organisation's reads as missing
        svc.contribute(who["acme"], cid, mine["globex"])
    svc.contribute(who["acme"], cid, mine["acme"])
    with pytest.raises(ValueError, match="at least 2"):
        svc.start_collaboration(who["acme"], cid)
    svc.contribute(who["globex"], cid, mine["globex"])
    with pytest.raises(PermissionError, match="only the organisation that created"):
        svc.start_collaboration(who["globex"], cid)

    # what a member sees of another member: that it contributed, never what
    seen = svc.collaboration(who["globex"], cid)
    acme_row = next(m for m in seen["members"] if m["org"] == lab.org["acme"])
    assert acme_row == {"org": lab.org["acme"], "state": "accepted", "contributed": True, "you": False}
    assert seen["your_contribution"]["adapter_id"] == mine["globex"]
    with session_scope(settings=lab.settings) as s:
        acme_name = s.get(Adapter, mine["acme"]).name
    assert acme_name not in json.dumps(seen) and all(set(m) == {"org", "state", "contributed", "you"}
                                                     for m in seen["members"])
    # outsiders see nothing: not the collaboration, its events, nor a way to start it
    for fn in (lambda: svc.collaboration(who["outsider"], cid), lambda: svc.collaboration_events(who["outsider"], cid),
               lambda: svc.start_collaboration(who["outsider"], cid)):
        with pytest.raises(LookupError, match=f"collaboration {cid} not found"):
            fn()
    assert svc.list_collaborations(who["outsider"]) == []

    job_id = svc.start_collaboration(who["acme"], cid)
    view = svc.client.wait(job_id, timeout=240)
    assert view.status == "succeeded", (view.error, view.log_tail)
    got = {}
    for k in ("acme", "globex"):
        res = svc.collaboration(who[k], cid)["result"]
        assert res["privacy"]["per_contributor"] and {c_["org"] for c_ in res["contributors"]} == \
            {lab.org["acme"], lab.org["globex"]}
        assert sum(c_["weight"] for c_ in res["contributors"]) == pytest.approx(1.0)
        got[k], record = _lora_b(lab, res["adapter_id"], who[k])
        assert "ood" not in json.dumps(record["contributors"]) and "adapter" not in json.dumps(record["contributors"])
    assert torch.equal(got["acme"], got["globex"]) and float(got["acme"].abs().sum()) > 0
    assert svc.collaboration(who["initech"], cid)["result"] is None  # declined: gets nothing
    with session_scope(settings=lab.settings) as s:
        initech_llm = s.query(Adapter).filter_by(org_id=who["initech"].org_id, model="llm").count()
    assert initech_llm == 0
    actions = [e["action"] for e in svc.collaboration_events(who["globex"], cid)]
    assert actions[:3] == ["created", "invited", "invited"] and "declined" in actions and actions[-1] == "done"
    assert all(acme_name not in e["detail"] for e in svc.collaboration_events(who["globex"], cid))
    # the job's log (seen by the creator) names no contribution
    with session_scope(settings=lab.settings) as s:
        globex_name = s.get(Adapter, mine["globex"]).name
    assert globex_name not in view.log_tail and f"adapter {mine['globex']}" not in view.log_tail


def test_collaboration_with_a_hostile_member_median_holds(lab):
    """A member contributes its adapter with B scaled x40: flagged as out of distribution, and
    with the median the result moves by no more than the honest members' spread."""
    from gtapp.lora.peft_format import WEIGHTS_NAME
    from safetensors.torch import load_file, save_file

    svc, who = lab.svc, lab.who
    honest = [lab.tiny("acme", 11), lab.tiny("globex", 12), lab.tiny("initech", 13)]
    # the outsider joins this one, and turns hostile: its adapter's B x40
    base = lab.tiny("outsider", 14)
    with session_scope(settings=lab.settings) as s:
        a = s.get(Adapter, base)
        folder = lab.store.materialize(a.artifact, lab.settings.data_dir / "hostile")
    t = load_file(str(folder / WEIGHTS_NAME))
    save_file({k: (v * 40 if "lora_B" in k else v) for k, v in t.items()}, str(folder / WEIGHTS_NAME))
    sha = lab.store.put_tree(folder)
    with session_scope(settings=lab.settings) as s:
        h = Adapter(org_id=who["outsider"].org_id, model_pair_id=lab.pair_id, model="tiny", origin="uploaded",
                    name="x40", artifact=sha, meta={})
        s.add(h)
        s.flush()
        hostile = h.id

    def run(members, method):
        c = svc.create_collaboration(who["acme"], f"robust {method} {len(members)}", lab.pair_id,
                                     ", ".join(lab.org[k] for k in ("globex", "initech", "outsider")), method=method,
                                     weighting="equal")
        for k, aid in members:
            if k != "acme":
                svc.answer_invitation(who[k], c["id"], True)
            svc.contribute(who[k], c["id"], aid)
        view = svc.client.wait(svc.start_collaboration(who["acme"], c["id"]), timeout=240)
        assert view.status == "succeeded", view.error
        res = svc.collaboration(who["acme"], c["id"])["result"]
        return _lora_b(lab, res["adapter_id"], who["acme"])[0], res, view

    keys = ("acme", "globex", "initech")
    clean, _, _ = run(list(zip(keys, honest)), "median")
    attacked, res, view = run(list(zip(keys, honest)) + [("outsider", hostile)], "median")
    naive, _, _ = run(list(zip(keys, honest)) + [("outsider", hostile)], "mean")
    assert res["flagged_out_of_distribution"] >= 1 and "out of distribution" in view.log_tail
    # the honest members' spread: how far each one's own single-organisation adapter lies from
    # the honest collaboration's result
    singles = []
    for k, aid in zip(keys, honest):
        gen = lab.run("generate", {"adapter_ids": [aid], "device": "cpu"}, who[k])
        singles.append(_lora_b(lab, gen.outputs["adapter_id"], who[k])[0])
    spread = max(float((x - clean).norm()) for x in singles)
    moved = float((attacked - clean).norm())
    print(f"honest spread {spread:.4g}; median moved {moved:.4g}; mean moved {float((naive - clean).norm()):.4g}")
    assert moved <= spread  # the median holds against one hostile member
    assert float((naive - clean).norm()) > 3 * moved  # the mean does not
