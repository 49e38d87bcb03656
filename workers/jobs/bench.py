"""Bench: the whole benchmark (gtapp.bench) as a job; its results JSON feeds the Compare tab"""

from __future__ import annotations

from workers.jobs.common import (
    _check_task_names,
    _int_list,
    _is_int,
    _is_num,
    _jsonable,
    _load_pair,
    _pair_folder,
)
from workers.jobs.registry import job


def _bench_preset(p: dict):
    """The preset named by ``preset`` with ``overrides`` (BenchPreset fields) applied."""
    import dataclasses

    from gtapp.bench.presets import PRESETS, BenchPreset

    if p["preset"] not in PRESETS:
        raise ValueError(f"unknown bench preset {p['preset']!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[p["preset"]]
    overrides = p["overrides"] or {}
    if not isinstance(overrides, dict):
        raise ValueError("overrides must be an object of benchmark preset fields")
    fields = {f.name for f in dataclasses.fields(BenchPreset)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; known: {sorted(fields)}")
    values = {}
    for key, v in overrides.items():
        current = getattr(base, key)
        if isinstance(current, tuple):
            if not isinstance(v, list):
                raise ValueError(f"override {key} must be a list")
            v = tuple(v)
        elif isinstance(current, dict):
            if not isinstance(v, dict):
                raise ValueError(f"override {key} must be an object")
        elif isinstance(current, float):
            if not _is_num(v):
                raise ValueError(f"override {key} should be a number, got {v!r}")
            v = float(v)
        elif isinstance(current, int) and not _is_int(v):
            raise ValueError(f"override {key} should be an integer, got {v!r}")
        elif isinstance(current, str) and not isinstance(v, str):
            raise ValueError(f"override {key} should be a string, got {v!r}")
        values[key] = v
    return dataclasses.replace(base, **values) if values else base


def _check_bench(p: dict) -> None:
    from gtapp.bench.presets import ALL_METHODS

    preset = _bench_preset(p)
    _int_list(p, "seeds", 0, 2**31 - 1, allow_empty=True)
    if p["pair_id"] is not None and not _is_int(p["pair_id"]):
        raise ValueError("pair_id must be an integer (a registered model pair to benchmark; default: build the "
                         "preset's zoo)")
    _check_task_names(list(preset.in_dist_tasks) + list(preset.cross_shadow_tasks) + list(preset.cross_private_tasks))
    overlap = set(preset.cross_shadow_tasks) & set(preset.cross_private_tasks)
    if overlap:
        raise ValueError(f"cross-task private tasks are also shadow tasks: {sorted(overlap)}")
    bad = sorted(set(preset.methods) - set(ALL_METHODS))
    if bad:
        raise ValueError(f"unknown method(s) {bad}; known: {list(ALL_METHODS)}")
    if not preset.seeds and not p["seeds"]:
        raise ValueError("no seeds to run")


@job("bench", queue="gpu", admin_only=True, requires=("gtapp.bench.benchmark",), validate=_check_bench,
     defaults={"preset": "ci", "seeds": [], "pair_id": None, "overrides": None, "record_evaluations": False})
def bench(params: dict, ctx) -> dict:
    """The benchmark (`preset` ci | quick5 | demo | gpu, `overrides` of its fields, `seeds`; default the
    preset's) on a registered model pair (`pair_id`) or on the preset's own zoo, built for the
    run. Stores the results JSON (rows, summary, targets, cost table) as an artifact, which the
    Compare tab lists; `record_evaluations` also records each row as an evaluation."""
    import shutil

    from gtapp.bench.benchmark import run_benchmark
    from storage.models import Evaluation

    ctx.progress(0.0, "preparing")
    preset = _bench_preset(params)
    zoo_dir = None
    if params["pair_id"] is not None:
        zoo_dir = _pair_folder(_load_pair(ctx, params["pair_id"]), ctx.work_dir / "zoo")
    work = ctx.run_dir / "bench"  # kept across attempts of this job: a requeued run resumes its shadow pair sets
    out = ctx.work_dir / "results.json"
    seeds = tuple(params["seeds"]) or None
    ctx.log(f"bench: preset '{preset.name}', seeds {list(seeds or preset.seeds)}, "
            f"zoo {'of pair ' + str(params['pair_id']) if zoo_dir else preset.zoo_preset + ' (built for this run)'}")
    try:
        result = run_benchmark(preset, out, zoo_dir=zoo_dir, work=work, seeds=seeds, progress=ctx.progress_fn,
                               log=ctx.log)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    ctx.check_cancel()
    sha = ctx.store.put_file(out)
    shutil.rmtree(work, ignore_errors=True)
    rows = _jsonable(result["rows"])
    targets = _jsonable(result["targets"])
    for t in targets:
        ctx.log(f"target: {t['target']}: measured {t['measured']}, {'met' if t['met'] else 'not met'}")

    def register(s, job_row) -> dict:
        n = 0
        if params["record_evaluations"]:
            for r in rows:
                if not _is_num(r.get("value")):
                    continue
                meta = {k: r.get(k) for k in ("protocol", "family", "gap_recovery", "gap_recovery_nll", "answer_nll",
                                              "wall_s", "peak_mem_mb", "n_eval") if r.get(k) is not None}
                s.add(Evaluation(org_id=job_row.org_id, job_id=job_row.id, model_pair_id=params["pair_id"],
                                 method=r["method"], task=r["task"], metric=r["metric"], value=float(r["value"]),
                                 seed=int(r["seed"]), epsilon=r.get("dp_epsilon"), n_clients=r.get("clients"),
                                 meta={**meta, "bench_job": job_row.id, "preset": preset.name}))
                n += 1
            s.flush()
        return {"evaluations": n}

    ctx.on_success(register)
    return {"results_artifact": sha, "preset": preset.name, "seeds": list(result["seeds"]), "rows": len(rows),
            "targets": targets, "total_s": _jsonable(result["timings"].get("total_s"))}
