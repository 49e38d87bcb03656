"""An adapter's privacy record travels with it: a download carries it in gtapp_recipe.json; the
same file uploaded again is *verified* (its weights are byte-identical to ours and the record
agrees), a forged or foreign claim is only *claimed* and counts as no DP."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from ui_helpers import staged

from storage.models import Adapter


def _produced(svc, who, adapter_dir, pair_id, eps):
    """An adapter as a DP fine-tune job registers it (its record says ε)."""
    sha = svc.store.put_tree(adapter_dir)
    with svc.session() as s:
        a = Adapter(org_id=who.org_id, user_id=who.user_id, model_pair_id=pair_id, model="tiny", origin="produced",
                    name="dp-tiny", artifact=sha, meta={"record": {"dp": True, "epsilon": eps, "delta": 1e-5}})
        s.add(a)
        s.flush()
        return a.id


def _reupload(svc, who, tmp_path, pair_id, data, name):
    z = tmp_path / name
    z.write_bytes(data)
    return svc.ingest_adapter(who, [(staged(svc, z), name)], pair_id)


def test_a_downloaded_dp_adapter_is_verified_when_uploaded_again(svc, users, pair_id, adapter_dir, tmp_path):
    alice, bob = svc.who(users["alice"]), svc.who(users["bob"])
    aid = _produced(svc, alice, adapter_dir, pair_id, 8.0)
    _, data = svc.adapter_zip(alice, aid)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        side = json.loads(zf.read("gtapp_recipe.json"))
    assert side["privacy"]["dp"] and side["privacy"]["epsilon"] == 8.0 and side["privacy"]["issued_by"] == "gtapp"
    assert len(side["privacy"]["weights_sha256"]) == 64

    res = _reupload(svc, bob, tmp_path, pair_id, data, "back.zip")
    assert res["privacy"]["status"] == "verified" and res["privacy"]["epsilon"] == 8.0
    listed = {a["id"]: a for a in svc.list_adapters(bob)}[res["id"]]
    assert listed["epsilon"] == 8.0 and "DP ε=8 (verified)" in listed["notes"]


def test_a_forged_claim_is_only_claimed_and_counts_as_no_dp(svc, users, pair_id, adapter_dir, tmp_path):
    alice = svc.who(users["alice"])
    aid = _produced(svc, alice, adapter_dir, pair_id, 8.0)
    _, data = svc.adapter_zip(alice, aid)
    forged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(forged, "w") as dst:
        for n in src.namelist():
            body = src.read(n)
            if n == "gtapp_recipe.json":
                side = json.loads(body)
                side["privacy"]["epsilon"] = 0.5  # a smaller ε than was really spent
                body = json.dumps(side).encode()
            dst.writestr(n, body)
    res = _reupload(svc, alice, tmp_path, pair_id, forged.getvalue(), "forged.zip")
    assert res["privacy"]["status"] == "claimed" and "differs from our record" in res["privacy"]["note"]
    listed = {a["id"]: a for a in svc.list_adapters(alice)}[res["id"]]
    assert listed["epsilon"] is None and "claimed, not verified" in listed["notes"]


def test_a_malformed_privacy_record_is_refused(svc, users, pair_id, adapter_dir, tmp_path):
    from ui.service.base import UploadError

    alice = svc.who(users["alice"])
    aid = _produced(svc, alice, adapter_dir, pair_id, 8.0)
    _, data = svc.adapter_zip(alice, aid)
    bad = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            body = src.read(n)
            if n == "gtapp_recipe.json":
                side = json.loads(body)
                side["privacy"]["epsilon"] = "eight"
                body = json.dumps(side).encode()
            dst.writestr(n, body)
    with pytest.raises(UploadError, match="'epsilon' has the wrong type"):
        _reupload(svc, alice, tmp_path, pair_id, bad.getvalue(), "bad.zip")
