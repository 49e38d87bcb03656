"""Server-side, tenancy-checked data access for the dashboard.

Every dashboard event handler and every download route resolves the signed-in user from
the request (``Service.who``) and then reads or writes only through this class, whose
methods take that :class:`~storage.accounts.Principal`:

* an organisation's datasets, adapters, evaluations, privacy ledger and jobs are visible
  to its own members and to admins; a row of another organisation reads exactly like a
  missing one ("adapter 7 not found");
* admin-only operations (accounts, model pairs, mapper promotion, shared benchmark
  results) refuse members with :class:`PermissionError`;
* jobs go through ``workers.client.JobClient``, which applies the same rules.

Uploads arrive as files Gradio wrote to its temporary folder. They are size-checked,
copied under a server-chosen name into a fresh private folder, validated (an adapter in a
child process, see :mod:`ui.validate_child`), stored in the content-addressed artifact
store, and the Gradio copy is deleted: nothing is ever served back from Gradio's folder,
and nothing a user typed becomes a path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy import delete, select

from storage.accounts import (
    Principal,
    authenticate,
    create_user,
    ensure_first_admin,
    hash_password,
    principal,
)
from storage.artifacts import ArtifactStore, atomic_write_json
from storage.catalog import create_dataset, pair_model_name, promote_mapper, read_examples, register_pair
from storage.db import session_scope
from storage.models import (
    ROLES,
    Adapter,
    Dataset,
    Evaluation,
    MapperVersion,
    ModelPair,
    Organisation,
    PrivacyLedgerEntry,
    RevokedSession,
    User,
    utcnow,
)
from storage.settings import Settings, get_settings
from ui.uploads import UploadError, Uploads, copy_upload, open_upload
from workers.client import JobClient

log = logging.getLogger("gtapp.dashboard")

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
KNOWN_FORMATS = ("gsm8k", "aqua_rat", "commonsenseqa", "drop", "samsum", "dialogsum")
USER_FORMAT = "prompt/answer (JSONL, JSON or CSV)"
USER_METRICS = ("exact_match", "numeric_exact_match", "letter_exact_match", "rouge_l")
PREVIEW_ROWS = 10
VALIDATE_TIMEOUT_S = 180
MAX_ADAPTER_FILES = 3
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_OK = re.compile(r"^[^\x00-\x1f/\\]{1,200}$")
RESULT_FIELDS = ("protocol", "task", "method", "mapper", "dp_epsilon", "clients", "seed", "metric", "value",
                 "gap_recovery", "wall_s", "peak_mem_mb")


class NotFound(LookupError):
    """Missing, or another organisation's (the two read the same)."""


def safe_filename(name: Optional[str], default: str = "upload") -> str:
    """A file name made only of [A-Za-z0-9._-], without leading dots, at most 100 chars.
    Used for files the server writes into its own fresh folders; it keeps the suffix so
    the validators can name the file in their messages."""
    base = os.path.basename(str(name or "")).strip()
    base = _SAFE_CHARS.sub("_", base).lstrip("._")[-100:]
    return base or default


def clean_name(name: Optional[str], what: str, fallback: str) -> str:
    name = (name or "").strip() or fallback
    if not _NAME_OK.match(name):
        raise UploadError(f"{what} must be 1-200 characters without control characters or slashes")
    return name


def _iso(t: Optional[dt.datetime]) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Service:
    """The dashboard's data access, bound to one deployment's settings."""

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = settings or get_settings()
        self.client = JobClient(self.settings)
        self._store: Optional[ArtifactStore] = None
        self._bench_lock = threading.Lock()
        self._validating: dict[int, int] = {}
        self._validating_lock = threading.Lock()
        self._validations = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        # the only files handlers open as uploads (ui.uploads; the gate checks whose they are)
        self.uploads = Uploads(self.dashboard_dir / "incoming", self.max_upload_bytes,
                               per_owner=self.settings.max_concurrent_uploads)

    # ------------------------------------------------------------------ plumbing
    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.settings.artifacts_dir)
        return self._store

    def session(self):
        return session_scope(settings=self.settings)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb) * MiB

    @property
    def dashboard_dir(self) -> Path:
        d = self.settings.data_dir.resolve() / "dashboard"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def upload_tmp(self) -> Path:
        """A fresh private folder for one upload (removed by the caller)."""
        root = self.dashboard_dir / "uploads"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="up-", dir=root))

    def bootstrap(self) -> list[str]:
        """First admin, zoo pairs found under ``zoo_dir``; returns what it did."""
        done = []
        with self.session() as s:
            if ensure_first_admin(s, self.settings) is not None:
                done.append(f"created first admin '{self.settings.first_admin_username}' "
                            f"in '{self.settings.first_admin_org}'")
        if self.settings.register_zoo_on_start:
            for cand in self.zoo_candidates():
                if not cand["registered"]:
                    try:
                        with self.session() as s:
                            register_pair(s, cand["name"], cand["path"])
                        done.append(f"registered model pair '{cand['name']}'")
                    except Exception as e:  # a half-built zoo folder: leave it for the admin
                        log.warning("could not register zoo folder %s: %s", cand["path"], e)
        return done

    # ------------------------------------------------------------------ identity
    def principal(self, username: Optional[str]) -> Principal:
        if not username:
            raise PermissionError("not signed in")
        with self.session() as s:
            try:
                return principal(s, username)
            except LookupError:
                raise PermissionError("not signed in") from None

    def who(self, request: Any) -> Principal:
        """The signed-in user of a Gradio event (``request.username`` is set by the
        session-cookie auth dependency, server-side; never by the page)."""
        return self.principal(getattr(request, "username", None) if request is not None else None)

    @staticmethod
    def require_admin(who: Principal) -> None:
        if not who.is_admin:
            raise PermissionError("this needs an admin account")

    def authenticate(self, username: str, password: str, address: str = "unknown") -> Optional[Principal]:
        """The principal for a right password, else None; raises ``storage.throttle.SignInLocked``
        (without checking the password) while this username or address must wait."""
        from storage import throttle

        with self.session() as s:
            throttle.check(s, username, address, self.settings)
        with self.session() as s:
            who = authenticate(s, username, password)
            if who is None:
                throttle.record_failure(s, username, address, self.settings)
            else:
                throttle.clear(s, username)
            return who

    def account(self, who: Principal) -> dict:
        with self.session() as s:
            user = s.get(User, who.user_id)
            return {"username": user.username, "org": user.org.name, "role": user.role, "org_id": user.org_id}

    def change_password(self, who: Principal, current: str, new: str, repeat: str) -> str:
        if new != repeat:
            raise ValueError("the new passwords differ")
        with self.session() as s:
            if authenticate(s, who.username, current or "") is None:
                raise ValueError("the current password is wrong")
            user = s.get(User, who.user_id)
            user.password_hash = hash_password(new)
        return "password changed; other sessions of this account are signed out"

    def password_tag(self, user_id: int) -> Optional[tuple[str, str, bool]]:
        """(username, password hash, active) for the session check."""
        with self.session() as s:
            user = s.get(User, user_id)
            if user is None:
                return None
            return user.username, user.password_hash or "", bool(user.is_active)

    def revoke_session(self, user_id: int, nonce: str, expires_at: float) -> None:
        """Record a signed-out session (its nonce) so every dashboard process refuses it until
        it would have expired (``expires_at``: Unix seconds); drops records already expired."""
        with self.session() as s:
            s.execute(delete(RevokedSession).where(RevokedSession.expires_at < utcnow()))
            if s.get(RevokedSession, nonce) is None and s.get(User, user_id) is not None:
                s.add(RevokedSession(nonce=nonce, user_id=user_id,
                                     expires_at=dt.datetime.fromtimestamp(expires_at, dt.timezone.utc)))

    def session_revoked(self, nonce: str) -> bool:
        with self.session() as s:
            return s.get(RevokedSession, nonce) is not None

    # ------------------------------------------------------------------ accounts (admin)
    def list_users(self, who: Principal) -> list[dict]:
        self.require_admin(who)
        with self.session() as s:
            rows = s.execute(select(User, Organisation.name).join(Organisation, User.org_id == Organisation.id)
                             .order_by(Organisation.name, User.username)).all()
            return [{"id": u.id, "username": u.username, "org": org, "role": u.role, "active": u.is_active,
                     "can_sign_in": bool(u.password_hash), "created": _iso(u.created_at)} for u, org in rows]

    def create_user(self, who: Principal, org: str, username: str, password: str, role: str) -> str:
        self.require_admin(who)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        with self.session() as s:
            user = create_user(s, (org or "").strip(), (username or "").strip(), password, role=role)
            return f"user '{user.username}' ({role}) created in organisation '{org.strip()}'"

    def set_active(self, who: Principal, username: str, active: bool) -> str:
        self.require_admin(who)
        with self.session() as s:
            user = s.scalars(select(User).where(User.username == username)).one_or_none()
            if user is None:
                raise NotFound(f"user '{username}' not found")
            if user.id == who.user_id and not active:
                raise ValueError("you cannot disable your own account")
            user.is_active = bool(active)
            return f"user '{username}' {'enabled' if active else 'disabled'}"

    def usernames(self, who: Principal) -> dict[int, str]:
        """user id -> username for the users ``who`` may see (own organisation; admins all)."""
        with self.session() as s:
            q = select(User.id, User.username)
            if not who.is_admin:
                q = q.where(User.org_id == who.org_id)
            return {i: n for i, n in s.execute(q)}

    def org_names(self) -> dict[int, str]:
        with self.session() as s:
            return {i: n for i, n in s.execute(select(Organisation.id, Organisation.name))}

    # ------------------------------------------------------------------ model pairs (shared)
    def list_pairs(self) -> list[dict]:
        with self.session() as s:
            pairs = list(s.scalars(select(ModelPair).order_by(ModelPair.id)))
            return [self._pair_dict(p) for p in pairs]

    @staticmethod
    def _pair_dict(p: ModelPair, with_recipe: bool = False) -> dict:
        r = p.recipe or {}
        tiny, llm = r.get("tiny") or {}, r.get("llm") or {}
        d = {"id": p.id, "name": p.name, "fingerprint": p.recipe_fingerprint[:12],
             "tiny": f"{tiny.get('num_layers', '?')} layers, r={tiny.get('rank', '?')}, "
                     f"alpha={tiny.get('alpha', '?')}, {'/'.join(tiny.get('target_modules') or [])}",
             "llm": f"{llm.get('num_layers', '?')} layers, r={llm.get('rank', '?')}, "
                    f"alpha={llm.get('alpha', '?')}, {'/'.join(llm.get('target_modules') or [])}",
             "created": _iso(p.created_at)}
        if with_recipe:
            d["recipe"] = r
        return d

    def get_pair(self, pair_id: int) -> dict:
        with self.session() as s:
            p = s.get(ModelPair, int(pair_id)) if pair_id is not None else None
            if p is None:
                raise NotFound(f"model pair {pair_id} not found")
            return self._pair_dict(p, with_recipe=True)

    def zoo_candidates(self) -> list[dict]:
        """Zoo folders (tiny/, llm/, recipe.json) directly under ``zoo_dir``; chosen from a
        list by an admin, never typed."""
        root = self.settings.zoo_root
        if not root.is_dir():
            return []
        with self.session() as s:
            registered = {(p.tiny_path, p.name) for p in s.scalars(select(ModelPair))}
        paths = {t for t, _ in registered}
        names = {n for _, n in registered}
        out = []
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.is_symlink() and (d / "recipe.json").is_file() and (d / "tiny").is_dir() \
                    and (d / "llm").is_dir():
                out.append({"name": d.name, "path": str(d.resolve()),
                            "registered": str((d / "tiny").resolve()) in paths or d.name in names})
        return out

    def register_zoo_pair(self, who: Principal, folder: str, name: Optional[str]) -> str:
        self.require_admin(who)
        cands = {c["name"]: c for c in self.zoo_candidates()}
        if folder not in cands:
            raise NotFound(f"zoo folder '{folder}' not found under the configured zoo_dir")
        name = clean_name(name, "the pair's name", folder)
        with self.session() as s:
            if s.scalars(select(ModelPair).where(ModelPair.name == name)).first() is not None:
                raise ValueError(f"a model pair named '{name}' already exists")
            pair = register_pair(s, name, cands[folder]["path"])
            return f"model pair '{pair.name}' registered (id {pair.id}, recipe {pair.recipe_fingerprint[:12]})"

    # ------------------------------------------------------------------ mappers
    def list_mappers(self, pair_id: Optional[int] = None) -> list[dict]:
        with self.session() as s:
            q = select(MapperVersion, ModelPair.name).join(ModelPair, MapperVersion.model_pair_id == ModelPair.id) \
                .order_by(MapperVersion.model_pair_id, MapperVersion.version)
            if pair_id is not None:
                q = q.where(MapperVersion.model_pair_id == int(pair_id))
            out = []
            for m, pname in s.execute(q):
                metrics = m.metrics or {}
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                out.append({"id": m.id, "pair_id": m.model_pair_id, "pair": pname, "version": m.version,
                            "kind": m.kind, "promoted": m.promoted, "metrics": shown,
                            "metrics_text": ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())[:6]),
                            "created": _iso(m.created_at), "job_id": m.job_id})
            return out

    def list_pair_sets(self, pair_id: Optional[int] = None) -> list[dict]:
        from storage.models import PairSet

        with self.session() as s:
            q = select(PairSet).order_by(PairSet.id.desc())
            if pair_id is not None:
                q = q.where(PairSet.model_pair_id == int(pair_id))
            out = []
            for p in s.scalars(q):
                meta = p.meta or {}
                tasks = meta.get("tasks")
                out.append({"id": p.id, "pair_id": p.model_pair_id, "name": p.name, "pairs": p.n_pairs,
                            "runs": meta.get("runs"), "tasks": ", ".join(map(str, tasks))[:200]
                            if isinstance(tasks, list) else "", "job_id": p.job_id, "created": _iso(p.created_at)})
            return out

    def promote(self, who: Principal, mapper_id: int) -> str:
        self.require_admin(who)
        with self.session() as s:
            try:
                mv = promote_mapper(s, int(mapper_id))
            except LookupError:
                raise NotFound(f"mapper version {mapper_id} not found") from None
            return f"mapper version {mv.version} ({mv.kind}, id {mv.id}) promoted for pair {mv.model_pair_id}"

    # ------------------------------------------------------------------ datasets
    def _visible(self, who: Principal, row, what: str, ref) -> Any:
        if row is None or (not who.is_admin and row.org_id != who.org_id):
            raise NotFound(f"{what} {ref} not found")
        return row

    def list_datasets(self, who: Principal, own_only: bool = False) -> list[dict]:
        with self.session() as s:
            q = select(Dataset).order_by(Dataset.id.desc())
            if own_only or not who.is_admin:
                q = q.where(Dataset.org_id == who.org_id)
            orgs = {i: n for i, n in s.execute(select(Organisation.id, Organisation.name))}
            out = []
            for d in s.scalars(q):
                spent = ledger_view(s, d)["spent"]
                out.append({"id": d.id, "name": d.name, "org": orgs.get(d.org_id, "?"), "org_id": d.org_id,
                            "examples": d.n_examples, "format": (d.source or {}).get("format", ""),
                            "metric": (d.source or {}).get("metric", d.task or ""),
                            "budget": d.epsilon_budget, "delta": d.delta, "spent": spent,
                            "created": _iso(d.created_at)})
            return out

    def get_dataset(self, who: Principal, dataset_id: int) -> dict:
        with self.session() as s:
            d = self._visible(who, s.get(Dataset, int(dataset_id)), "dataset", dataset_id)
            return {"id": d.id, "name": d.name, "org_id": d.org_id, "examples": d.n_examples,
                    "source": d.source or {}, "budget": d.epsilon_budget, "delta": d.delta, "artifact": d.artifact}

    def dataset_preview(self, who: Principal, dataset_id: int, n: int = PREVIEW_ROWS) -> list[dict]:
        d = self.get_dataset(who, dataset_id)
        return read_examples(self.store, d["artifact"])[:n]

    def ledger(self, who: Principal, dataset_id: int) -> dict:
        with self.session() as s:
            d = self._visible(who, s.get(Dataset, int(dataset_id)), "dataset", dataset_id)
            return ledger_view(s, d)

    def set_budget(self, who: Principal, dataset_id: int, epsilon: Any, delta: Any = None) -> str:
        eps = _num(epsilon)
        if eps is None or eps <= 0:
            raise ValueError("the privacy budget ε must be a positive number")
        with self.session() as s:
            d = self._visible(who, s.get(Dataset, int(dataset_id)), "dataset", dataset_id)
            if d.org_id != who.org_id:
                raise PermissionError("only the dataset's organisation sets its privacy budget")
            spent = ledger_view(s, d)["spent"]
            if eps + 1e-12 < spent:
                raise ValueError(f"ε={eps:g} is below what dataset '{d.name}' has already spent (ε={spent:.4g})")
            if d.epsilon_budget is not None and eps < d.epsilon_budget:
                raise ValueError(f"the budget of '{d.name}' is ε={d.epsilon_budget:g}; it can be raised, not lowered")
            if delta is not None and _num(delta) is not None:
                dl = float(delta)
                if not 0 < dl < 1:
                    raise ValueError("δ must be in (0, 1)")
                if d.epsilon_budget is not None and dl != d.delta:
                    raise ValueError("δ is fixed once a dataset has a budget")
                d.delta = dl
            d.epsilon_budget = eps
            return f"dataset '{d.name}': privacy budget ε={eps:g} at δ={d.delta:g}"

    def _check_upload_size(self, path: str, label: str) -> int:
        with open_upload(path, self.uploads, self.max_upload_bytes, label) as fh:
            return os.fstat(fh.fileno()).st_size

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

    def discard_upload(self, paths: Iterable[Optional[str]]) -> None:
        """Delete used uploads (so nothing of them is left to serve)."""
        self.uploads.discard([p for p in paths if p])

    def read_upload(self, path: str, label: str) -> bytes:
        """The bytes of an upload of this dashboard's (see ``ui.uploads.open_upload``)."""
        with open_upload(path, self.uploads, self.max_upload_bytes, label) as fh:
            data = fh.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise UploadError(f"{label} is over {self.settings.max_upload_mb} MiB; uploads are limited to "
                              f"{self.settings.max_upload_mb} MiB")
        return data

    def ingest_dataset(self, who: Principal, upload: str, display_name: str, fmt: str = USER_FORMAT,
                       metric: str = "exact_match", name: Optional[str] = None, epsilon_budget: Any = None,
                       delta: Any = 1e-5) -> dict:
        """Validate an uploaded dataset file and store it for ``who``'s organisation."""
        from gtapp import datasets as gds  # light: parsing only (json/csv), no torch

        if not upload:
            raise UploadError("choose a dataset file first")
        fname = safe_filename(display_name, "dataset.jsonl")
        eps = None if epsilon_budget in (None, "", 0, 0.0) else _num(epsilon_budget)
        if epsilon_budget not in (None, "", 0, 0.0) and (eps is None or eps <= 0):
            raise UploadError("the privacy budget ε must be a positive number (or empty for none)")
        dl = _num(delta) if delta not in (None, "", 0, 0.0) else 1e-5
        if dl is None or not 0 < dl < 1:
            raise UploadError("δ must be a number in (0, 1)")
        tmp = self.upload_tmp()
        try:
            local = tmp / fname
            copy_upload(upload, local, self.uploads, self.max_upload_bytes, fname)
            try:
                if fmt in (None, "", USER_FORMAT):
                    if metric not in USER_METRICS:
                        raise UploadError(f"metric must be one of {', '.join(USER_METRICS)}")
                    task = gds.load_user_dataset(local, metric=metric, max_rows=200_000)
                    fmt_name, metric_name = "prompt/answer", metric
                elif fmt in KNOWN_FORMATS:
                    task = gds.load(fmt, train_path=local, max_rows=200_000)
                    fmt_name, metric_name = fmt, task.metric
                else:
                    raise UploadError(f"unknown dataset format {fmt!r}")
            except (gds.DatasetError, UnicodeError, OSError) as e:
                raise UploadError(str(e).replace(str(tmp) + os.sep, "").replace(str(tmp), "")) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        examples = list(task.train) + list(task.test)
        if not examples:
            raise UploadError(f"{fname}: no examples found")
        name = clean_name(name, "the dataset's name", Path(fname).stem)
        source = {"format": fmt_name, "metric": metric_name, "file": fname, "uploaded_by": who.username,
                  "n_train": len(task.train), "n_test": len(task.test),
                  "skipped": (task.source or {}).get("skipped", 0)}
        with self.session() as s:
            if s.scalars(select(Dataset).where(Dataset.org_id == who.org_id, Dataset.name == name)).first():
                raise UploadError(f"your organisation already has a dataset named '{name}'; choose another name")
            ds = create_dataset(s, self.store, who.org_id, name, examples, user_id=who.user_id, task=metric_name,
                                epsilon_budget=eps, delta=dl, source=source)
            ds_id, n = ds.id, ds.n_examples
        preview = [{"prompt": e.prompt, "answer": e.answer, "references": " | ".join(e.references)}
                   for e in examples[:PREVIEW_ROWS]]
        return {"id": ds_id, "name": name, "examples": n, "format": fmt_name, "metric": metric_name,
                "budget": eps, "delta": dl, "preview": preview, "skipped": source["skipped"]}

    # ------------------------------------------------------------------ adapters
    def list_adapters(self, who: Principal, model: Optional[str] = None, pair_id: Optional[int] = None,
                      own_only: bool = False) -> list[dict]:
        with self.session() as s:
            q = select(Adapter).order_by(Adapter.id.desc())
            if own_only or not who.is_admin:
                q = q.where(Adapter.org_id == who.org_id)
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
        notes = []
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

    def get_adapter(self, who: Principal, adapter_id: Any) -> dict:
        try:
            aid = int(adapter_id)
        except (TypeError, ValueError):
            raise NotFound(f"adapter {adapter_id!r} not found") from None
        with self.session() as s:
            a = self._visible(who, s.get(Adapter, aid), "adapter", aid)
            orgs = {a.org_id: s.get(Organisation, a.org_id).name}
            d = self._adapter_dict(a, orgs)
            d["meta"] = json.loads(json.dumps(a.meta or {}, default=str))
            d["artifact"] = a.artifact
            return d

    def adapter_zip(self, who: Principal, adapter_id: Any) -> tuple[str, bytes]:
        """(file name, zip bytes) of an adapter folder, for ``who`` only."""
        a = self.get_adapter(who, adapter_id)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, entry in sorted(self.store.manifest(a["artifact"]).items()):
                zf.write(self.store.path(entry["sha256"]), rel)
        return f"{a['model']}-adapter-{a['id']}-{safe_filename(a['name'], 'adapter')}.zip", buf.getvalue()

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
            pair = s.get(ModelPair, int(pair_id))
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
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        summary = result["summary"]
        stem = Path(names[0]).stem if zipped else "adapter"
        name = clean_name(name, "the adapter's name", f"{stem}-{utcnow():%Y%m%d-%H%M%S}")
        with self.session() as s:
            a = Adapter(org_id=who.org_id, user_id=who.user_id, model_pair_id=pid, model="tiny", origin="uploaded",
                        name=name, artifact=sha,
                        meta={"summary": summary, "uploaded_files": names, "uploaded_by": who.username,
                              "pair": pair_name})
            s.add(a)
            s.flush()
            aid = a.id
        return {"id": aid, "name": name, "pair": pair_name, "summary": summary}

    # ------------------------------------------------------------------ evaluations and results
    def evaluation_rows(self, who: Principal) -> list[dict]:
        with self.session() as s:
            q = select(Evaluation).order_by(Evaluation.id)
            if not who.is_admin:
                q = q.where(Evaluation.org_id == who.org_id)
            rows = []
            for e in s.scalars(q):
                meta = e.meta or {}
                rows.append(normalise_row({
                    "protocol": meta.get("protocol", "dashboard"), "task": e.task, "method": e.method,
                    "mapper": meta.get("mapper") or meta.get("mapper_id"), "dp_epsilon": e.epsilon,
                    "clients": e.n_clients, "seed": e.seed, "metric": e.metric, "value": e.value,
                    "gap_recovery": meta.get("gap_recovery"), "wall_s": meta.get("wall_s"),
                    "peak_mem_mb": meta.get("peak_mem_mb")}))
            return [r for r in rows if r is not None]

    def _bench_index_path(self) -> Path:
        return self.dashboard_dir / "benchmarks.json"

    def _bench_index(self) -> list[dict]:
        p = self._bench_index_path()
        if not p.is_file():
            return []
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            log.warning("benchmark index %s unreadable; ignoring it", p)
            return []
        return [d for d in data if isinstance(d, dict) and "sha" in d] if isinstance(data, list) else []

    def list_benchmarks(self, who: Principal) -> list[dict]:
        """Stored benchmark results (provider benchmarks on generated and public tasks: shown
        to every signed-in user) and the results of ``bench`` jobs ``who`` can see."""
        out = [{"key": f"bench:{d['id']}", "label": f"{d['name']} ({d['rows']} rows, {d['created']})", **d}
               for d in self._bench_index()]
        for j in self.client.list(who, kind="bench", status="succeeded", limit=50):
            for k, v in (j.outputs or {}).items():
                if isinstance(v, str) and k.endswith("artifact") and re.fullmatch(r"[0-9a-f]{64}", v):
                    out.append({"key": f"job:{j.id}:{k}", "label": f"bench job {j.id} ({k})", "sha": v,
                                "name": f"bench job {j.id}"})
        return out

    def benchmark_rows(self, who: Principal, key: str) -> list[dict]:
        for b in self.list_benchmarks(who):
            if b["key"] == key:
                rows, _ = parse_results(self.store.read_bytes(b["sha"]))
                return rows
        raise NotFound("benchmark results not found")

    def store_benchmark(self, who: Principal, upload: str, display_name: str, name: Optional[str] = None) -> dict:
        """Admins: keep an uploaded results JSON for everyone's Compare tab."""
        self.require_admin(who)
        if not upload:
            raise UploadError("choose a results JSON file first")
        fname = safe_filename(display_name, "results.json")
        data = self.read_upload(upload, fname)
        rows, skipped = parse_results(data, fname)
        sha = self.store.put_bytes(data)
        entry = {"id": uuid.uuid4().hex[:12], "name": clean_name(name, "the results' name", Path(fname).stem),
                 "sha": sha, "rows": len(rows), "skipped": skipped, "uploaded_by": who.username,
                 "created": utcnow().strftime("%Y-%m-%d %H:%M")}
        with self._bench_lock:
            index = self._bench_index()
            index.append(entry)
            atomic_write_json(self._bench_index_path(), index)
        return {**entry, "key": f"bench:{entry['id']}"}

    # ------------------------------------------------------------------ jobs
    def submit(self, who: Principal, kind: str, params: dict) -> int:
        return self.client.submit(kind, params, who)

    def job_kinds(self, who: Principal) -> dict[str, dict]:
        """Registered job kinds and whether ``who`` may submit them. Read from the registry
        only: ``JobClient.kinds()`` also checks availability by importing each kind's gtapp
        module (and so torch), which a page load must not do."""
        from workers.jobs import REGISTRY

        return {k: {"kind": k, "admin_only": spec.admin_only, "wired": spec.wired, "queue": spec.queue,
                    "allowed": who.is_admin or not spec.admin_only} for k, spec in sorted(REGISTRY.items())}


# ---------------------------------------------------------------------- results parsing


def normalise_row(r: Any) -> Optional[dict]:
    """One result row with the standard fields (missing ones None), or None if unusable
    (no task, method or numeric value)."""
    if not isinstance(r, dict):
        return None
    task, method = r.get("task"), r.get("method")
    value = _num(r.get("value"))
    if not isinstance(task, str) or not task or not isinstance(method, str) or not method or value is None:
        return None
    eps = r.get("dp_epsilon", r.get("epsilon"))
    clients = r.get("clients", r.get("n_clients"))
    mapper = r.get("mapper", r.get("mapper_version"))
    return {"protocol": str(r.get("protocol") or ""), "task": task, "method": method,
            "mapper": "" if mapper is None else str(mapper), "dp_epsilon": _num(eps),
            "clients": int(clients) if _num(clients) is not None else None,
            "seed": int(r["seed"]) if _num(r.get("seed")) is not None else None,
            "metric": str(r.get("metric") or ""), "value": value, "gap_recovery": _num(r.get("gap_recovery")),
            "wall_s": _num(r.get("wall_s")), "peak_mem_mb": _num(r.get("peak_mem_mb"))}


def parse_results(data: bytes, what: str = "results") -> tuple[list[dict], int]:
    """Rows of a benchmark results JSON: a list of rows, or an object holding one under
    ``rows`` / ``results`` / ``table``. Returns (rows, skipped); raises UploadError when
    nothing usable is there."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UploadError(f"{what}: not UTF-8 text") from None
    except ValueError as e:
        raise UploadError(f"{what}: not valid JSON ({e})") from None
    raw = obj
    if isinstance(obj, dict):
        raw = next((obj[k] for k in ("rows", "results", "table") if isinstance(obj.get(k), list)), None)
    if not isinstance(raw, list):
        raise UploadError(f"{what}: expected a list of result rows, or an object with a 'rows' list "
                          f"(each row: protocol, task, method, dp_epsilon, clients, seed, metric, value, "
                          f"gap_recovery, wall_s, peak_mem_mb)")
    rows = [normalise_row(r) for r in raw]
    good = [r for r in rows if r is not None]
    if not good:
        raise UploadError(f"{what}: none of its {len(raw)} rows has a task, a method and a numeric value")
    return good, len(raw) - len(good)


# ---------------------------------------------------------------------- adapter validation in a child


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


def user_message(e: BaseException) -> str:
    """What to show for an exception raised by a handler: the message of the errors users
    cause, and a generic line for anything else (logged with its traceback)."""
    from workers.client import JobNotAvailable, QueueUnavailable

    if isinstance(e, (ValueError, LookupError, PermissionError, JobNotAvailable, QueueUnavailable)):
        msg = str(e)
        if isinstance(e, KeyError) and msg.startswith("'"):
            msg = msg.strip("'")
        return msg or type(e).__name__
    log.exception("dashboard handler failed", exc_info=e)
    return f"internal error ({type(e).__name__}); it was logged"


def ledger_view(session, dataset: Dataset) -> dict:
    """A dataset's privacy ledger for display, like ``storage.ledger.summary`` but without
    re-running the accountant (which imports torch through opacus): every change to the
    ledger (reserve, settle, release) records the dataset's composed spend on the entry it
    touched, so the most recently updated entry holds the current total."""
    entries = list(session.scalars(select(PrivacyLedgerEntry).where(PrivacyLedgerEntry.dataset_id == dataset.id)
                                   .order_by(PrivacyLedgerEntry.id)))
    latest = max(entries, key=lambda e: (e.updated_at or e.created_at, e.id), default=None)
    spent = float(latest.total_epsilon) if latest is not None else 0.0
    active = [e for e in entries if e.status != "released"]
    if not active:
        spent = 0.0
    budget = dataset.epsilon_budget
    return {"dataset_id": dataset.id, "dataset": dataset.name, "budget": budget, "delta": dataset.delta,
            "spent": spent, "accountant": latest.accountant if latest is not None else "basic",
            "remaining": None if budget is None else max(budget - spent, 0.0), "active": len(active),
            "entries": [{"id": e.id, "job_id": e.job_id, "epsilon": e.epsilon, "delta": e.delta,
                         "status": e.status, "total_epsilon": e.total_epsilon, "accountant": e.accountant,
                         "note": e.note, "created_at": _iso(e.created_at)} for e in entries]}
