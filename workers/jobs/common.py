"""Helpers shared by several job kinds (parameter checks, model pairs, progress); the named
choices are gtapp.choices'."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gtapp.choices import COMBINE_METHODS, DEVICES, MAPPER_KINDS, MAPPER_METHOD, ORGANISATIONS, WEIGHTINGS  # noqa: F401
from gtapp.devices import resolve_device as _resolve_device  # noqa: F401 (used by the job kinds)
from workers.jobs.registry import REGISTRY


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_device(p: dict) -> None:
    if p["device"] not in DEVICES and not str(p["device"]).startswith("cuda:"):
        raise ValueError("device must be auto, cpu, cuda or cuda:N")


def _int_list(p: dict, name: str, lo: int, hi: int, allow_empty: bool = False) -> list[int]:
    v = p[name]
    if (not isinstance(v, list) or (not v and not allow_empty)
            or not all(_is_int(x) and lo <= x <= hi for x in v)):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of integers in {lo}..{hi}, "
                         f"got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"{name} has duplicates: {v}")
    return v


def _check_task_names(names, what: str = "task") -> None:
    from gtapp.tasks.universe import task_names  # no torch

    known = set(task_names())
    unknown = [t for t in names if t not in known]
    if unknown:
        raise ValueError(f"unknown {what} name(s) {unknown}: generated task names look like "
                         f"{sorted(known)[:2]} (`gtapp tasks list` shows all {len(known)})")


def _merge_config(p: dict, kind: str) -> bool:
    """``config``: the kind's parameters as one object (the dashboard's JSON box), merged
    into the flat parameters (its values win) and checked as if given flat; the stored
    parameters are then the flat ones. Returns True when it merged (and so validated)."""
    cfg = p.get("config")
    if cfg is None:
        return False
    if not isinstance(cfg, dict):
        raise ValueError(f"config of '{kind}' must be an object holding some of its parameters")
    spec = REGISTRY[kind]
    unknown = sorted(set(cfg) - set(spec.defaults) - {"config"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config of '{kind}'; accepted: "
                         f"{sorted(set(spec.defaults) - {'config'})}")
    merged = spec.check_params({**p, **cfg, "config": None})
    p.clear()
    p.update(merged)
    return True


def _jsonable(obj):
    """JSON data: NaN/inf as null (PostgreSQL's JSON has no NaN), tensors and numpy values as
    lists/numbers, anything else as its string."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return str(obj)


def _load_pair(ctx, pair_id: int) -> dict:
    from storage.models import ModelPairRecord

    with ctx.session() as s:
        pair = s.get(ModelPairRecord, pair_id)
        if pair is None:
            raise ValueError(f"model pair {pair_id} not found")
        return {"id": pair.id, "name": pair.name, "tiny_path": pair.tiny_path, "llm_path": pair.llm_path,
                "recipe": dict(pair.recipe), "fingerprint": pair.recipe_fingerprint}


def _pair_folder(pair: dict, dest) -> Path:
    """A folder gtapp takes as ``zoo_dir`` (tiny/, llm/, recipe.json) for a registered model
    pair: the folder it was registered from while that still holds these two models and this
    recipe; else ``dest``, with links to the two model folders and the registered recipe (the
    recipe in the database is the contract)."""
    tiny, llm = Path(pair["tiny_path"]), Path(pair["llm_path"])
    root = tiny.parent
    if tiny.name == "tiny" and llm == root / "llm" and (root / "recipe.json").is_file():
        try:
            if json.loads((root / "recipe.json").read_text()) == pair["recipe"]:
                return root
        except (OSError, ValueError):
            pass
    for which, path in (("tiny", tiny), ("llm", llm)):
        if not path.is_dir():
            raise ValueError(f"model pair '{pair['name']}': its {which} model {str(path)!r} is not a folder on "
                             f"this worker (hub ids are not supported by this job; register a local folder)")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for which, path in (("tiny", tiny), ("llm", llm)):
        link = dest / which
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve(), target_is_directory=True)
    (dest / "recipe.json").write_text(json.dumps(pair["recipe"], indent=2))
    return dest


def submit_children(ctx, kind: str, params_list: list[dict]) -> list[int]:
    """Queue jobs of ``kind`` that this job fans out (same organisation and user; recorded as
    its children through ``params["parent"]``), and send them to the broker when there is one
    (in embedded mode the database is the queue). Returns their ids."""
    from storage.models import Job, utcnow

    spec = REGISTRY[kind]
    ids = []
    with ctx.session() as s:
        for params in params_list:
            job = Job(kind=kind, queue=spec.queue, params={**spec.check_params(params), "parent": ctx.job_id},
                      status="queued", progress=0.0, stage="queued (fanned out)",
                      max_attempts=ctx.settings.job_max_attempts, org_id=ctx.org_id, user_id=ctx.user_id,
                      created_at=utcnow())
            s.add(job)
            s.flush()
            ids.append(job.id)
    if not ctx.settings.embedded:
        from celery import current_app

        from workers.broker import task_name

        for job_id in ids:  # a lost message is re-sent by the reaper (never-sent rows included)
            current_app.send_task(task_name(kind), args=[job_id], queue=spec.queue,
                                  task_id=f"gtapp-job-{job_id}-1")
    with ctx.session() as s:
        from sqlalchemy import update

        s.execute(update(Job).where(Job.id.in_(ids)).values(dispatches=Job.dispatches + 1, dispatched_at=utcnow()))
    return ids


def stage_spans(weights: dict, start: float = 0.02, end: float = 0.97) -> dict:
    """A job's progress range ``start..end`` split between its stages in proportion to the work
    each does (a stage of weight 0 gets an empty span where it would start): {stage: (lo, hi)}.
    With progress in proportion to work, the whole job's pace gives an honest ETA."""
    total = sum(max(float(w), 0.0) for w in weights.values()) or 1.0
    spans, lo = {}, start
    for name, w in weights.items():
        hi = lo + (end - start) * max(float(w), 0.0) / total
        spans[name] = (lo, hi)
        lo = hi
    return spans


def _scaled_progress(ctx, lo: float, hi: float):
    """A ProgressFn mapping a step's 0..1 onto lo..hi of the job."""
    def fn(p) -> None:
        if getattr(p, "metrics", None) and p.step is not None:
            ctx.curve_point(p.stage, p.step, p.metrics)
        # the step's ETA covers its own part (lo..hi) of the job: the rest of the job is assumed
        # to go at the same pace per unit of progress
        eta = None
        if p.eta_s is not None and 0 < p.fraction < 1 and hi > lo:
            step_total = p.eta_s / (1 - p.fraction)
            eta = p.eta_s + (1 - hi) * step_total / (hi - lo)
        ctx.progress(lo + (hi - lo) * p.fraction, p.stage, eta, getattr(p, "message", ""))
    return fn


def _dataset_examples(ctx, artifact: str) -> list:
    """A stored dataset (artifact of JSON rows) as gtapp Examples."""
    from gtapp.tasks.base import Example
    from storage.catalog import read_examples

    return [Example(d["prompt"], d["answer"], tuple(d.get("references", ())))
            for d in read_examples(ctx.store, artifact)]


def _eval_task(ctx, task_name, seed: int, n_test: int, ds_artifact, ds_name, metric: str):
    """What an evaluation scores: a generated task's test split, or a stored dataset as test set."""
    if task_name is not None:
        from gtapp.tasks import make_task

        return make_task(task_name, seed=seed, n_train=1, n_test=n_test)
    from gtapp.tasks.base import Task

    return Task(name=f"dataset:{ds_name}", family="user", metric=metric, train=[],
                test=_dataset_examples(ctx, ds_artifact))
