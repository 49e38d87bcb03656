"""An organisation's datasets: upload (validated, stored), listing, preview, the privacy ledger."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import select

from gtapp.choices import USER_METRICS
from storage.accounts import Principal
from storage.catalog import create_dataset, read_examples
from storage.ledger import current as ledger_view
from storage.ledger import shown
from storage.models import Dataset, Organisation, utcnow
from storage.tenancy import owned, visible
from ui.service.base import (KNOWN_FORMATS, PREVIEW_ROWS, USER_FORMAT, ServiceBase, UploadError, _iso, _num,
                                 clean_name, safe_filename)
from ui.uploads import copy_upload

log = logging.getLogger("gtapp.ui")

class Datasets(ServiceBase):
    def list_datasets(self, who: Principal, own_only: bool = False) -> list[dict]:
        with self.reading() as s:
            q = owned(select(Dataset).order_by(Dataset.id.desc()), Dataset, who, admins_see_all=not own_only)
            orgs = {i: n for i, n in s.execute(select(Organisation.id, Organisation.name))}
            out = []
            for d in s.scalars(q):
                spent = ledger_view(s, d)["spent"]
                out.append({"id": d.id, "name": d.name, "org": orgs.get(d.org_id, "?"), "org_id": d.org_id,
                            "examples": d.n_examples, "format": (d.source or {}).get("format", ""),
                            "metric": (d.source or {}).get("metric", d.task or ""),
                            "budget": d.epsilon_budget, "delta": d.delta, "spent": shown(spent),
                            "no_dp_required": bool(d.no_dp_required),
                            "created": _iso(d.created_at)})
            return out

    def get_dataset(self, who: Principal, dataset_id: int) -> dict:
        with self.session() as s:
            d = visible(s, Dataset, int(dataset_id), who, "dataset")
            return {"id": d.id, "name": d.name, "org_id": d.org_id, "examples": d.n_examples,
                    "source": d.source or {}, "budget": d.epsilon_budget, "delta": d.delta, "artifact": d.artifact}

    def dataset_preview(self, who: Principal, dataset_id: int, n: int = PREVIEW_ROWS) -> list[dict]:
        d = self.get_dataset(who, dataset_id)
        return read_examples(self.store, d["artifact"])[:n]

    def ledger(self, who: Principal, dataset_id: int) -> dict:
        with self.session() as s:
            d = visible(s, Dataset, int(dataset_id), who, "dataset")
            return ledger_view(s, d)

    def mark_no_dp_required(self, who: Principal, dataset_id: int, confirm: bool) -> str:
        """The organisation's explicit choice that a budgeted dataset may be fine-tuned without
        DP; recorded with who and when (and logged). Non-DP jobs on it then enter the ledger as
        ε = ∞, after which no DP job on it can promise anything."""
        if not confirm:
            raise ValueError("tick the confirmation first: a fine-tune without DP gives this dataset no privacy "
                             "guarantee at all (ε = ∞ in its ledger)")
        with self.session() as s:
            d = visible(s, Dataset, int(dataset_id), who, "dataset")
            if d.org_id != who.org_id:
                raise PermissionError("only the dataset's organisation decides whether it needs DP")
            if d.no_dp_required:
                return f"dataset '{d.name}' is already marked 'no DP required'"
            d.no_dp_required, d.no_dp_marked_by, d.no_dp_marked_at = True, who.user_id, utcnow()
            log.warning("dataset %s ('%s', org %s) marked 'no DP required' by user %s", d.id, d.name, d.org_id,
                        who.user_id)
            return (f"dataset '{d.name}' marked 'no DP required' (recorded with your name): non-DP fine-tunes on it "
                    "are now accepted and enter its ledger as ε = ∞")

    def set_budget(self, who: Principal, dataset_id: int, epsilon: Any, delta: Any = None) -> str:
        eps = _num(epsilon)
        if eps is None or eps <= 0:
            raise ValueError("the privacy budget ε must be a positive number")
        with self.session() as s:
            d = visible(s, Dataset, int(dataset_id), who, "dataset")
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
