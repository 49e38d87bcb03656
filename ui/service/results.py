"""Results a person compares: the organisation's evaluations and stored benchmark results."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import select

from storage.accounts import Principal
from storage.models import BenchmarkRecord, Evaluation
from storage.tenancy import NotFound, owned
from ui.service.base import ServiceBase, UploadError, _num, clean_name, safe_filename

log = logging.getLogger("gtapp.dashboard")

# The benchmark results committed with gtapp (what issue notes quote): offered in every user's
# Compare tab from the first start. Files there that hold no protocol rows (throughput, mapper
# speed, learning curves) are not results tables and are left out.
PUBLISHED_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
PUBLISHED_PREFIX = "published: "

RESULT_FIELDS = ("protocol", "task", "method", "mapper", "dp_epsilon", "clients", "seed", "metric", "value",
                 "gap_recovery", "gap_defined", "wall_s", "peak_mem_mb")


class Results(ServiceBase):
    def evaluation_rows(self, who: Principal) -> list[dict]:
        with self.reading() as s:
            q = owned(select(Evaluation).order_by(Evaluation.id), Evaluation, who)
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

    def list_benchmarks(self, who: Principal) -> list[dict]:
        """Stored benchmark results (provider benchmarks on generated and public tasks: shown
        to every signed-in user) and the results of ``bench`` jobs ``who`` can see."""
        with self.reading() as s:
            out = [{"key": f"bench:{b.id}", "label": f"{b.name} ({b.n_rows} rows, {b.created_at:%Y-%m-%d %H:%M})",
                    "id": b.id, "name": b.name, "sha": b.artifact, "rows": b.n_rows, "skipped": b.skipped}
                   for b in s.scalars(select(BenchmarkRecord).order_by(BenchmarkRecord.id))]
        for j in self.client.list(who, kind="bench", status="succeeded", limit=50):
            for k, v in (j.outputs or {}).items():
                if isinstance(v, str) and k.endswith("artifact") and re.fullmatch(r"[0-9a-f]{64}", v):
                    out.append({"key": f"job:{j.id}:{k}", "label": f"bench job {j.id} ({k})", "sha": v,
                                "name": f"bench job {j.id}"})
        return out

    def benchmark_results(self, who: Principal, key: str) -> tuple[list[dict], list[dict]]:
        """(rows, recorded targets) of the stored results JSON ``key``, read once."""
        for b in self.list_benchmarks(who):
            if b["key"] == key:
                rows, _, targets = read_results(self.store.read_bytes(b["sha"]))
                return rows, targets
        raise NotFound("benchmark results not found")

    def benchmark_rows(self, who: Principal, key: str) -> list[dict]:
        return self.benchmark_results(who, key)[0]

    def store_benchmark(self, who: Principal, upload: str, display_name: str, name: Optional[str] = None) -> dict:
        """Admins: keep an uploaded results JSON for everyone's Compare tab."""
        self.require_admin(who)
        if not upload:
            raise UploadError("choose a results JSON file first")
        fname = safe_filename(display_name, "results.json")
        data = self.read_upload(upload, fname)
        rows, skipped = parse_results(data, fname)
        sha = self.store.put_bytes(data)
        with self.session() as s:
            b = BenchmarkRecord(name=clean_name(name, "the results' name", Path(fname).stem), artifact=sha,
                                n_rows=len(rows), skipped=skipped, user_id=who.user_id)
            s.add(b)
            s.flush()
            entry = {"id": b.id, "name": b.name, "sha": sha, "rows": len(rows), "skipped": skipped,
                     "uploaded_by": who.username, "key": f"bench:{b.id}"}
        return entry

    def register_published_benchmarks(self, folder: Path = PUBLISHED_RESULTS) -> list[str]:
        """The results tables in ``folder`` (bench/results/*.json) as stored benchmarks, once each
        (by content: a file changed since gets a new entry)."""
        if not self.settings.publish_bench_results or not folder.is_dir():
            return []
        done = []
        with self.session() as s:
            known = set(s.scalars(select(BenchmarkRecord.artifact)))
        for path in sorted(folder.glob("*.json")):
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() in known:  # the store's address: parsed and stored before
                continue
            try:
                rows, skipped = parse_results(data, path.name)
            except UploadError:
                continue  # not a results table
            sha = self.store.put_bytes(data)
            with self.session() as s:
                s.add(BenchmarkRecord(name=f"{PUBLISHED_PREFIX}{path.stem}"[:200], artifact=sha, n_rows=len(rows),
                                      skipped=skipped))
            known.add(sha)
            done.append(f"published benchmark results {path.name}: {len(rows)} rows")
        return done

    def import_legacy_benchmarks(self) -> list[str]:
        """Results kept by an older version in ``<data>/dashboard/benchmarks.json``: into the
        database once (the file is renamed ``benchmarks.json.imported``)."""
        path = self.dashboard_dir / "benchmarks.json"
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("benchmark index %s unreadable; left as it is", path)
            return []
        entries = [d for d in data if isinstance(d, dict) and isinstance(d.get("sha"), str)] if isinstance(data, list) else []
        with self.session() as s:
            for d in entries:
                s.add(BenchmarkRecord(name=str(d.get("name") or "results")[:200], artifact=d["sha"],
                                      n_rows=int(d.get("rows") or 0), skipped=int(d.get("skipped") or 0)))
        path.rename(path.with_name("benchmarks.json.imported"))
        return [f"imported {len(entries)} stored benchmark result(s) from {path.name}"]


def normalise_row(r: Any) -> Optional[dict]:
    """One result row with the standard fields (missing ones None), or None if unusable
    (no task, method or numeric value). ``gap_defined`` is set by :func:`read_results`, which
    sees the whole file."""
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
            "gap_recovery_nll": _num(r.get("gap_recovery_nll")), "answer_nll": _num(r.get("answer_nll")),
            "gap_defined": None, "wall_s": _num(r.get("wall_s")), "peak_mem_mb": _num(r.get("peak_mem_mb"))}


def _targets(obj) -> list[dict]:
    """The targets a benchmark run recorded in its results JSON object (``gtapp bench`` writes
    them: target, measured, met, detail), each field checked and bounded; [] where there are none."""
    raw = obj.get("targets") if isinstance(obj, dict) else None
    out = []
    for t in raw if isinstance(raw, list) else []:
        if not isinstance(t, dict) or not isinstance(t.get("target"), str):
            continue
        met = t.get("met")
        out.append({"target": t["target"][:300], "measured": _num(t.get("measured")),
                    "met": met if isinstance(met, bool) else None,
                    "detail": str(t.get("detail") or "")[:600]})
    return out[:50]


def _decode(data: bytes, what: str) -> tuple[Any, list, list[Optional[dict]]]:
    """(the decoded JSON, its raw rows, each normalised or None) of a benchmark results JSON: a list of
    rows, or an object holding one under ``rows`` / ``results`` / ``table``; UploadError when no row is usable."""
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
    if not any(r is not None for r in rows):
        raise UploadError(f"{what}: none of its {len(raw)} rows has a task, a method and a numeric value")
    return obj, raw, rows


def read_results(data: bytes, what: str = "results") -> tuple[list[dict], int, list[dict]]:
    """Rows and recorded targets of a benchmark results JSON, decoded once (:func:`_decode`), each row
    with ``gap_defined`` (:func:`_no_gap_tasks`), for showing. Returns (rows, skipped, targets)."""
    obj, raw, rows = _decode(data, what)
    good = [r for r in rows if r is not None]
    no_gap = _no_gap_tasks(raw, rows, obj.get("summary") if isinstance(obj, dict) else None)
    for r in good:
        r["gap_defined"] = None if no_gap is None else (r["protocol"], r["task"]) not in no_gap
    return good, len(raw) - len(good), _targets(obj)


#: Bounds on what :func:`read_results` works through to decide which tasks have no gap from
#: per-example scores (a benchmark writes at most a few hundred test examples, a few seeds and tens of tasks).
MAX_GAP_EXAMPLES, MAX_GAP_SEEDS, MAX_GAP_TASKS = 4096, 16, 256


def _no_gap_tasks(raw: list, rows: list[Optional[dict]], summary: Any) -> Optional[set[tuple[str, str]]]:
    """The (protocol, task) pairs of a results file with no gap to recover
    (gtapp.bench.report.no_gap_tasks): from its summary, or from the base LLM's and the oracle's
    per-example scores, each checked first (the file is untrusted); None where it holds neither."""
    from gtapp.bench.report import no_gap_tasks

    summary = [s for s in summary if isinstance(s, dict) and isinstance(s.get("protocol"), str)
               and isinstance(s.get("task"), str)] if isinstance(summary, list) else []
    if any("gap_defined" in s for s in summary):
        return {(s["protocol"], s["task"]) for s in summary if s.get("gap_defined") is False}
    anchors, seeds = [], {}
    for src, r in zip(raw, rows):
        if r is None or r["method"] not in ("base_llm", "oracle") or r["dp_epsilon"] is not None \
                or r["clients"] not in (None, 1) or r["seed"] is None:
            continue
        examples = _examples(src.get("examples"))
        if examples is not None:
            anchors.append({**r, "clients": 1, "examples": examples})
            seeds.setdefault((r["protocol"], r["task"]), set()).add(r["seed"])
    # the bootstrap's work grows with examples x seeds^2 per task: a file beyond what a benchmark writes
    # is not worked through (unknown), so an upload cannot tie up the server
    if not anchors or len(seeds) > MAX_GAP_TASKS or any(len(v) > MAX_GAP_SEEDS for v in seeds.values()):
        return None
    return no_gap_tasks(anchors)


def _examples(ex: Any) -> Optional[dict]:
    """A row's per-example scores (gtapp.evaluate.evaluate(per_example=True)) if well formed:
    equally long lists of numbers for nll_sum, n_tokens and (optionally) score; else None."""
    if not isinstance(ex, dict):
        return None
    out = {}
    for k in ("nll_sum", "n_tokens", "score"):
        v = ex.get(k)
        if not isinstance(v, list) or not v or len(v) > MAX_GAP_EXAMPLES or not all(_num(x) is not None for x in v):
            if k == "score":
                continue  # no task score per example: the answer NLL alone decides
            return None
        out[k] = [float(x) for x in v]
    if len({len(v) for v in out.values()}) != 1:
        return None
    return out


def parse_results(data: bytes, what: str = "results") -> tuple[list[dict], int]:
    """(rows, skipped) of a benchmark results JSON, to check and count it (storing, publishing): no
    ``gap_defined`` worked out (:func:`read_results` does, where the rows are shown)."""
    _, raw, rows = _decode(data, what)
    good = [r for r in rows if r is not None]
    return good, len(raw) - len(good)