"""An organisation's adapters: upload (validated in a child process, so the dashboard never
imports torch), listing, summary, download as a zip."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

from sqlalchemy import select

from storage.accounts import Principal
from storage.catalog import pair_model_name
from storage.models import Adapter, ModelPairRecord, Organisation, utcnow
from storage.tenancy import NotFound, owned, visible
from ui.service.base import MiB, ServiceBase, UploadError, _iso, _num, clean_name, safe_filename
from ui.uploads import copy_upload

log = logging.getLogger("gtapp.dashboard")

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATE_TIMEOUT_S = 180
MAX_ADAPTER_FILES = 3
# gtapp.lora.peft_format's names (that module imports torch; tests/test_choices.py checks they agree)
WEIGHTS_NAME = "adapter_model.safetensors"
SIDECAR_NAME = "gtapp_recipe.json"
SIDECAR_RECIPE_KEYS = ("architecture", "base_fingerprint", "init_fingerprint", "init_seed", "rank", "alpha",
                       "target_modules")

class Adapters(ServiceBase):
    @contextlib.contextmanager
    def _validation_slot(self, who: Principal):
        """Adapter validation runs a child process (torch, the whole file read): at most
        ``max_concurrent_validations`` per user, and one per CPU core in all (the rest wait),
        so one member's parallel uploads cannot starve everyone else's."""
        cap = self.settings.max_concurrent_validations
        with self._validating_lock:
            if self._validating.get(who.user_id, 0) >= cap:
                raise UploadError(f"{cap} adapter validation(s) of yours are already running; upload this one "
                                  "when they have finished")
            self._validating[who.user_id] = self._validating.get(who.user_id, 0) + 1
        try:
            if not self._validations.acquire(timeout=VALIDATE_TIMEOUT_S):
                raise UploadError("the server is busy validating other uploads; try again in a minute")
            try:
                yield
            finally:
                self._validations.release()
        finally:
            with self._validating_lock:
                self._validating[who.user_id] -= 1

    def list_adapters(self, who: Principal, model: Optional[str] = None, pair_id: Optional[int] = None,
                      own_only: bool = False) -> list[dict]:
        with self.reading() as s:
            q = owned(select(Adapter).order_by(Adapter.id.desc()), Adapter, who, admins_see_all=not own_only)
            if model:
                q = q.where(Adapter.model == model)
            if pair_id is not None:
                q = q.where(Adapter.model_pair_id == int(pair_id))
            orgs = {i: n for i, n in s.execute(select(Organisation.id, Organisation.name))}
            return [self._adapter_dict(a, orgs) for a in s.scalars(q)]

    @staticmethod
    def _adapter_dict(a: Adapter, orgs: dict) -> dict:
        meta = a.meta or {}
        record = meta.get("record") or {}
        summary = meta.get("summary") or {}
        eps = record.get("epsilon")
        notes = [privacy_text(a)]
        mapper = meta.get("mapper")
        if isinstance(mapper, dict):
            notes.append(f"mapper v{mapper.get('version')} {mapper.get('kind')}")
        contributors = meta.get("contributors")
        if isinstance(contributors, list) and contributors:
            notes.append(f"{len(contributors)} TinyLM adapter(s)")
        ev = meta.get("evaluation")
        if isinstance(ev, dict) and _num(ev.get("value")) is not None:
            notes.append(f"{ev.get('metric')}={float(ev['value']):.3g} on {ev.get('task')}")
        return {"id": a.id, "name": a.name, "org": orgs.get(a.org_id, "?"), "org_id": a.org_id,
                "model": a.model, "origin": a.origin, "pair_id": a.model_pair_id, "job_id": a.job_id,
                "dataset_id": a.dataset_id, "epsilon": _num(eps),
                "rank": summary.get("rank") or record.get("rank"), "created": _iso(a.created_at),
                "notes": ", ".join(notes)}

    def generated_results(self, who: Principal, n: int = 5) -> list[dict]:
        """The organisation's latest generated LLM adapters with what their generate job found:
        warnings (out of distribution) and the gains over the base LLM and the mean baseline."""
        with self.session() as s:
            q = owned(select(Adapter).where(Adapter.origin == "generated").order_by(Adapter.id.desc()), Adapter, who,
                      admins_see_all=False).limit(n)
            out = []
            for a in s.scalars(q):
                meta = a.meta or {}
                ev = meta.get("evaluation") or {}
                out.append({"id": a.id, "name": a.name, "warnings": list(meta.get("warnings") or []),
                            "task": ev.get("task"), "metric": ev.get("metric"), "value": ev.get("value"),
                            "n": ev.get("n"), "gains": ev.get("gains") or {}, "refine": meta.get("refine")})
            return out

    def get_adapter(self, who: Principal, adapter_id: Any) -> dict:
        try:
            aid = int(adapter_id)
        except (TypeError, ValueError):
            raise NotFound(f"adapter {adapter_id!r} not found") from None
        with self.session() as s:
            a = visible(s, Adapter, aid, who, "adapter")
            orgs = {a.org_id: s.get(Organisation, a.org_id).name}
            d = self._adapter_dict(a, orgs)
            d["meta"] = json.loads(json.dumps(a.meta or {}, default=str))
            d["artifact"] = a.artifact
            return d

    def adapter_zip(self, who: Principal, adapter_id: Any) -> tuple[str, bytes]:
        """(file name, zip bytes) of an adapter folder, for ``who`` only. Its ``gtapp_recipe.json``
        carries the adapter's privacy record (``privacy``), so it travels with the adapter: uploaded
        again, it is shown as *verified* (its weights match a record of ours) or *claimed*."""
        a = self.get_adapter(who, adapter_id)
        manifest = self.store.manifest(a["artifact"])
        if SIDECAR_NAME in manifest:
            sidecar = json.loads(self.store.path(manifest[SIDECAR_NAME]["sha256"]).read_text())
        else:
            with self.session() as s:
                recipe = (s.get(ModelPairRecord, a["pair_id"]).recipe or {}).get(a["model"]) or {}
            sidecar = {"gtapp_recipe": 1, **{k: recipe[k] for k in SIDECAR_RECIPE_KEYS if k in recipe}}
            if "target_modules" in sidecar:
                sidecar["target_modules"] = sorted(sidecar["target_modules"])
        weights = manifest.get(WEIGHTS_NAME, {}).get("sha256", "")
        sidecar["privacy"] = privacy_record(a["meta"], weights, a.get("job_id"))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, entry in sorted(manifest.items()):
                if rel != SIDECAR_NAME:
                    zf.write(self.store.path(entry["sha256"]), rel)
            zf.writestr(SIDECAR_NAME, json.dumps(sidecar, indent=2, sort_keys=True))
        return f"{a['model']}-adapter-{a['id']}-{safe_filename(a['name'], 'adapter')}.zip", buf.getvalue()

    def _privacy_of_upload(self, s, sidecar_path: Path, weights_sha: str) -> dict:
        """An uploaded adapter's privacy: the sidecar's claim, *verified* when its weights are
        byte-identical to an adapter of ours whose record says the same."""
        if not sidecar_path.is_file():
            return {"status": "none"}
        claim = (json.loads(sidecar_path.read_text()) or {}).get("privacy")
        if not isinstance(claim, dict):
            return {"status": "none"}
        for other in s.scalars(select(Adapter).where(Adapter.origin != "uploaded")):
            entry = self.store.manifest(other.artifact).get(WEIGHTS_NAME, {}) if other.artifact else {}
            if entry.get("sha256") == weights_sha:
                ours = privacy_record(other.meta or {}, weights_sha, other.job_id)
                if ours["dp"] == bool(claim.get("dp")) and ours["epsilon"] == claim.get("epsilon"):
                    return {**ours, "status": "verified"}
                return {**{k: claim.get(k) for k in ("dp", "epsilon", "delta")}, "status": "claimed",
                        "note": "the claim differs from our record of these weights"}
        return {**{k: claim.get(k) for k in ("dp", "epsilon", "delta")}, "status": "claimed"}

    def ingest_adapter(self, who: Principal, uploads: Sequence[tuple[str, str]], pair_id: Any,
                       name: Optional[str] = None) -> dict:
        """Validate an uploaded TinyLM adapter (a .zip, or its peft files) against the pair's
        tiny recipe and store it. ``uploads``: (Gradio temp path, the browser's file name)."""
        uploads = [(p, n) for p, n in uploads if p]
        if not uploads:
            raise UploadError("choose the adapter's files first: a .zip, or adapter_config.json and "
                              "adapter_model.safetensors")
        if pair_id in (None, ""):
            raise UploadError("choose the model pair the adapter was trained for")
        if len(uploads) > MAX_ADAPTER_FILES:
            raise UploadError(f"{len(uploads)} files uploaded; an adapter is a .zip or at most "
                              f"{MAX_ADAPTER_FILES} files (adapter_config.json, adapter_model.safetensors, "
                              "gtapp_recipe.json)")
        total = sum(self._check_upload_size(p, safe_filename(n)) for p, n in uploads)
        if total > self.max_upload_bytes:
            raise UploadError(f"the upload is {total / MiB:.1f} MiB; uploads are limited to "
                              f"{self.settings.max_upload_mb} MiB")
        with self.session() as s:
            pair = s.get(ModelPairRecord, int(pair_id))
            if pair is None:
                raise NotFound(f"model pair {pair_id} not found")
            recipe, pair_name, pid = (pair.recipe or {}).get("tiny"), pair.name, pair.id
        names = [safe_filename(n) for _, n in uploads]
        if len(set(names)) != len(names):
            raise UploadError(f"two uploaded files have the same name: {', '.join(names)}")
        tmp = self.upload_tmp()
        try:
            inbox = tmp / "in"
            inbox.mkdir()
            local = []
            for (p, _), n in zip(uploads, names):
                copy_upload(p, inbox / n, self.uploads, self.max_upload_bytes, n)
                local.append(str(inbox / n))
            zipped = len(local) == 1 and names[0].lower().endswith(".zip")
            source: Any = local[0] if zipped else local
            with self._validation_slot(who):
                result = validate_in_child(recipe, source, str(tmp / "work"), pair_model_name(pair_name, "tiny"))
            if not result.get("ok"):
                msg = str(result.get("error") or "the adapter was refused")
                raise UploadError(msg.replace(str(tmp) + os.sep, "").replace(str(tmp), ""))
            files = result["files"]
            clean = tmp / "adapter"
            clean.mkdir()
            for key, fixed in (("config", "adapter_config.json"), ("weights", "adapter_model.safetensors"),
                               ("sidecar", "gtapp_recipe.json")):
                src = files.get(key)
                if src:
                    src_path = Path(src).resolve()
                    if tmp.resolve() not in src_path.parents:  # the child only ever writes below tmp
                        raise UploadError("validated files are not where they should be; upload again")
                    shutil.copyfile(src_path, clean / fixed)
            sha = self.store.put_tree(clean)
            with self.session() as s:
                weights_sha = self.store.manifest(sha).get(WEIGHTS_NAME, {}).get("sha256", "")
                privacy = self._privacy_of_upload(s, clean / SIDECAR_NAME, weights_sha)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        summary = result["summary"]
        stem = Path(names[0]).stem if zipped else "adapter"
        name = clean_name(name, "the adapter's name", f"{stem}-{utcnow():%Y%m%d-%H%M%S}")
        with self.session() as s:
            a = Adapter(org_id=who.org_id, user_id=who.user_id, model_pair_id=pid, model="tiny", origin="uploaded",
                        name=name, artifact=sha,
                        meta={"summary": summary, "uploaded_files": names, "uploaded_by": who.username,
                              "pair": pair_name, "privacy_claim": privacy,
                              # only a verified record counts as DP where privacy is composed (generate)
                              **({"record": {k: privacy[k] for k in ("dp", "epsilon", "delta")}}
                                 if privacy["status"] == "verified" else {})})
            s.add(a)
            s.flush()
            aid = a.id
        return {"id": aid, "name": name, "pair": pair_name, "summary": summary, "privacy": privacy}




def privacy_record(meta: dict, weights_sha: str, job_id: Optional[int]) -> dict:
    """What an adapter's training spent, as written into the sidecar of a download."""
    claim = meta.get("privacy_claim") or {}
    record = meta.get("record") or {}
    if claim.get("status") in ("claimed", "none") and not record:
        dp, eps, delta = bool(claim.get("dp")), claim.get("epsilon"), claim.get("delta")
        note = "as claimed at upload, not verified" if claim.get("status") == "claimed" else "no privacy record"
    else:
        eps = _num(record.get("epsilon"))
        dp = bool(record.get("dp")) or eps is not None
        delta, note = _num(record.get("delta")), None
    return {"dp": dp, "epsilon": eps if dp else None, "delta": delta if dp else None, "weights_sha256": weights_sha,
            "job_id": job_id, "issued_by": "gtapp", "note": note}


def privacy_text(a: Adapter) -> str:
    """'DP ε=8 (verified)', 'DP ε=8 (claimed)', 'no DP'."""
    meta = a.meta or {}
    claim = meta.get("privacy_claim") or {}
    record = meta.get("record") or {}
    eps = _num(record.get("epsilon"))
    if eps is not None:
        return f"DP ε={eps:g}" + (" (verified)" if claim.get("status") == "verified" else "")
    if claim.get("status") == "claimed" and claim.get("dp") and _num(claim.get("epsilon")) is not None:
        return f"DP ε={float(claim['epsilon']):g} (claimed, not verified: counted as no DP)"
    return "no DP"


def validate_in_child(recipe: Optional[dict], source: Any, workdir: str, model_name: Optional[str] = None,
                      timeout: float = VALIDATE_TIMEOUT_S) -> dict:
    """Run ``gtapp.validate`` on an uploaded adapter in a child Python process (torch is
    imported there, not in the dashboard). Returns {"ok": True, "summary", "files"} or
    {"ok": False, "error"}."""
    if not isinstance(recipe, dict):
        return {"ok": False, "error": "the model pair has no TinyLM recipe"}
    request = json.dumps({"recipe": recipe, "source": source, "workdir": workdir, "model_name": model_name})
    try:
        proc = subprocess.run([sys.executable, "-m", "ui.validate_child"], input=request, capture_output=True,
                              text=True, timeout=timeout, cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"validation took longer than {timeout:g} s; the adapter was not stored"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    log.error("adapter validation child failed (rc %s): %s", proc.returncode, proc.stderr[-2000:])
    return {"ok": False, "error": "the adapter could not be validated (internal error, logged); it was not stored"}
