"""Shadow: paired TinyLM/LLM fine-tunes on the provider's shadow tasks -> a pair set"""

from __future__ import annotations

import json
import time
from pathlib import Path

from workers.jobs.common import (
    _check_device,
    _check_task_names,
    _int_list,
    _is_int,
    _is_num,
    _jsonable,
    _load_pair,
    _merge_config,
    _pair_folder,
    _resolve_device,
    _scaled_progress,
    submit_children,
)
from workers.jobs.registry import job


def _check_shadow(p: dict) -> None:
    if _merge_config(p, "shadow"):
        return
    if not _is_int(p["pair_id"]):
        raise ValueError("shadow needs pair_id (a registered model pair)")
    tasks = p["tasks"]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise ValueError("shadow needs tasks: a non-empty list of generated task names (`gtapp tasks list`)")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks has duplicates: {tasks}")
    _check_task_names(tasks)
    for name, lo, hi in (("subsets", 1, 10_000), ("subset_size", 1, 1_000_000), ("steps", 1, 1_000_000),
                         ("batch_size", 1, 4096), ("max_length", 8, 32_768), ("n_train", 1, 10_000_000)):
        if not lo <= p[name] <= hi:
            raise ValueError(f"{name} must be in {lo}..{hi}, got {p[name]}")
    _int_list(p, "seeds", 0, 2**31 - 1)
    _int_list(p, "snapshot_steps", 1, p["steps"], allow_empty=True)
    if p["lr"] <= 0 or (p["llm_lr"] is not None and (not _is_num(p["llm_lr"]) or p["llm_lr"] <= 0)):
        raise ValueError("lr (and llm_lr, when given) must be positive numbers")
    if p["engine"] not in ("batched", "per_run"):
        raise ValueError(f"engine must be 'batched' or 'per_run', got {p['engine']!r}")
    if not _is_int(p["batch_runs"]) or not 1 <= p["batch_runs"] <= 4096:
        raise ValueError("batch_runs must be an integer in 1..4096")
    if p["fan_out"] is not None and not isinstance(p["fan_out"], bool):
        raise ValueError("fan_out must be true, false or null (null: fan out when a broker is configured)")
    if p["name"] is not None and (not isinstance(p["name"], str) or not 0 < len(p["name"]) <= 200):
        raise ValueError("name must be a string of 1..200 characters")
    _check_device(p)


def _config(params: dict):
    from gtapp.shadow import ShadowConfig

    return ShadowConfig(tasks=tuple(params["tasks"]), subsets=params["subsets"], subset_size=params["subset_size"],
                        steps=params["steps"], snapshot_steps=tuple(params["snapshot_steps"]),
                        seeds=tuple(params["seeds"]), lr=params["lr"], llm_lr=params["llm_lr"],
                        batch_size=params["batch_size"], max_length=params["max_length"],
                        task_seed=params["seed"], n_train=params["n_train"], subset_seed=params["seed"],
                        device=_resolve_device(params["device"]), engine=params["engine"],
                        batch_runs=params["batch_runs"])


def _fan_out(ctx, params: dict, config, folder: Path, zoo_dir: Path):
    """Every unfinished batch as a ``shadow_batch`` job (reused from an earlier attempt of this
    job: a finished batch is never redone; a lost one is requeued by the reaper), this job
    running those no other worker has claimed; then the batches are assembled into ``folder``
    (gtapp.shadow.assemble). The result is the pair set one job would have made: batches are
    fixed by the settings, and the version hashes the shards."""
    from sqlalchemy import select

    from gtapp.models import ModelPair
    from gtapp.shadow import assemble, batches, open_or_create
    from storage.models import Job

    groups = batches(config)
    manifest = open_or_create(folder, ModelPair.from_dir(zoo_dir).recipes, config, str(zoo_dir))
    todo = [i for i, g in enumerate(groups)
            if not all(r.run_id in manifest["runs"] and (folder / manifest["runs"][r.run_id]["shard"]).is_file()
                       for r in g)]
    with ctx.session() as s:
        mine = {int(j.params.get("batch", -1)): j.id for j in s.scalars(select(Job).where(
            Job.kind == "shadow_batch", Job.status.in_(("queued", "running", "succeeded"))))
            if (j.params or {}).get("parent") == ctx.job_id}
    base = {k: v for k, v in params.items() if k not in ("config", "fan_out", "name")}
    new = [i for i in todo if i not in mine]
    for i, job_id in zip(new, submit_children(ctx, "shadow_batch", [{"shadow": base, "batch": i} for i in new])):
        mine[i] = job_id
    children = {i: mine[i] for i in todo}
    ctx.log(f"shadow: {len(groups)} batch(es) of {config.runs_per_batch} run(s); {len(todo)} to make as "
            f"shadow_batch jobs {sorted(children.values())} ({len(new)} queued now)")
    while True:
        with ctx.session() as s:
            status = {i: (s.get(Job, j).status, s.get(Job, j).error) for i, j in children.items()}
        done = sum(1 for st, _ in status.values() if st == "succeeded")
        bad = {i: e for i, (st, e) in status.items() if st in ("failed", "cancelled")}
        if bad:
            raise RuntimeError(f"{len(bad)} shadow batch job(s) did not succeed: " +
                               "; ".join(f"batch {i} (job {children[i]}): {e}" for i, e in sorted(bad.items()))[:3000])
        ctx.progress(0.02 + 0.9 * done / max(len(children), 1), "shadow batches",
                     message=f"{done} of {len(children)} batch jobs finished")
        if done == len(children):
            break
        queued = [j for i, j in children.items() if status[i][0] == "queued"]
        if queued:
            ctx.run_here(queued[0])  # nobody took it yet: run it here ('skipped' if a worker just did)
        else:
            time.sleep(1.0)
    with ctx.session() as s:
        artifacts = {i: s.get(Job, j).outputs["artifact"] for i, j in children.items()}
    parts = [ctx.store.materialize(sha, ctx.work_dir / f"batch{i}") for i, sha in sorted(artifacts.items())]
    return assemble(folder, parts)


def _shadow_folder(ctx, pair: dict, config) -> tuple:
    """(folder, lock): the pair-set work folder of this pair and config, kept under the data
    dir so a requeued or retried job with the same parameters resumes it (finished runs are
    not redone); locked while a job writes it. If another job holds it, this job's own run
    folder (lock None)."""
    import fcntl
    import hashlib

    key = hashlib.sha256(json.dumps({"recipe": pair["fingerprint"], "tasks": list(config.tasks),
                                     "subsets": config.subsets, "seeds": list(config.seeds),
                                     "settings": config.settings()}, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(ctx.settings.data_dir).resolve() / "shadow"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"pair{pair['id']}-{key}"
    fh = open(root / f"{folder.name}.lock", "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        ctx.log(f"pair-set folder {folder} is being written by another job; this job works in its own run folder")
        return ctx.run_dir / "pairset", None
    return folder, fh


def _finished_runs(folder) -> int:
    from gtapp.pairset import MANIFEST

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return sum(1 for r in manifest.get("runs", {}).values() if (folder / r["shard"]).is_file())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


@job("shadow", queue="gpu", admin_only=True, requires=("gtapp.shadow",), validate=_check_shadow,
     defaults={"pair_id": None, "tasks": [], "subsets": 4, "subset_size": 64, "steps": 40, "snapshot_steps": [],
               "seeds": [0], "lr": 2e-3, "llm_lr": None, "batch_size": 8, "max_length": 128, "n_train": 512,
               "name": None, "device": "auto", "config": None, "engine": "batched", "batch_runs": 16,
               "fan_out": None})
def shadow(params: dict, ctx) -> dict:
    """Shadow pairs: for each task x bootstrap subset x seed, fine-tune the pair's TinyLM and LLM
    on the same examples; every snapshot step and the final step give a (ΔTiny, ΔLLM) pair.
    `seed` picks the tasks' examples and subsets, `seeds` the fine-tunes. Resumable: a
    requeued or retried job with the same parameters keeps the runs already finished.
    `fan_out` (default: when a broker is configured): each batch of runs is a `shadow_batch`
    job of its own, run by any worker (this job works through those nobody has taken yet),
    and the batches are assembled into one pair set. Produces a pair set."""
    from gtapp.shadow import make_pairs, plan
    from storage.models import PairSetRecord

    ctx.progress(0.0, "preparing")
    pair = _load_pair(ctx, params["pair_id"])
    zoo_dir = _pair_folder(pair, ctx.work_dir / "zoo")
    config = _config(params)
    folder, lock = _shadow_folder(ctx, pair, config)
    try:
        reused = _finished_runs(folder)
        total = len(plan(config))
        ctx.log(f"shadow: pair '{pair['name']}', {len(config.tasks)} task(s) x {config.subsets} subset(s) x "
                f"{len(config.seeds)} seed(s) = {total} runs of {config.steps} steps, in {folder}"
                + (f"; {reused} run(s) finished earlier are kept" if reused else ""))
        fan_out = params["fan_out"] if params["fan_out"] is not None else not ctx.settings.embedded
        if fan_out:
            ps = _fan_out(ctx, params, config, folder, zoo_dir)
        else:
            ps = make_pairs(zoo_dir, config, folder, progress=_scaled_progress(ctx, 0.0, 0.97))
        ctx.check_cancel()
        ctx.progress(0.97, "storing pair set")
        sha = ctx.store.put_tree(folder)
    finally:
        if lock is not None:
            lock.close()
    summary = _jsonable(ps.summary())
    n_pairs = len(ps)
    ctx.log(f"shadow: pair set {ps.version}: {n_pairs} pairs from {summary['runs']} runs "
            f"({reused} reused, {summary['runs'] - reused} made now)")
    settings = {"tasks": list(config.tasks), "subsets": config.subsets, "seeds": list(config.seeds),
                **_jsonable(config.settings())}
    name = params["name"] or f"shadow-{pair['name']}-job{ctx.job_id}"

    def register(s, job_row) -> dict:
        row = PairSetRecord(model_pair_id=pair["id"], name=name, n_pairs=n_pairs, artifact=sha, job_id=job_row.id,
                      meta={"version": ps.version, "tasks": summary["tasks"], "runs": summary["runs"],
                            "config": settings, "summary": summary, "runs_reused": reused, "folder": str(folder)})
        s.add(row)
        s.flush()
        return {"pair_set_id": row.id}

    ctx.on_success(register)
    return {"pair_set_artifact": sha, "version": ps.version, "n_pairs": n_pairs, "runs": summary["runs"],
            "runs_reused": reused, "tasks": summary["tasks"]}


@job("shadow_batch", queue="gpu", admin_only=True, requires=("gtapp.shadow",),
     defaults={"shadow": {}, "batch": 0, "parent": None})
def shadow_batch(params: dict, ctx) -> dict:
    """One batch of a fanned-out shadow job's runs (queued by that job, never by hand): its
    runs' shards and records, as an artifact the parent job assembles."""
    from gtapp.shadow import batches, make_pairs

    from workers.jobs.registry import REGISTRY

    sp = REGISTRY["shadow"].check_params({**params["shadow"], "fan_out": False})
    config = _config(sp)
    n = len(batches(config))
    if not 0 <= params["batch"] < n:
        raise ValueError(f"batch {params['batch']} of a plan with {n} batches")
    pair = _load_pair(ctx, sp["pair_id"])
    zoo_dir = _pair_folder(pair, ctx.work_dir / "zoo")
    folder = ctx.work_dir / "pairs"
    ctx.log(f"shadow batch {params['batch'] + 1}/{n} of job {params['parent']}: {len(batches(config)[params['batch']])} run(s)")
    ps = make_pairs(zoo_dir, config, folder, progress=_scaled_progress(ctx, 0.0, 0.95),
                        only_batches=[params["batch"]])
    ctx.check_cancel()
    sha = ctx.store.put_tree(folder)
    return {"batch": params["batch"], "artifact": sha, "runs": sorted(ps.runs)}
