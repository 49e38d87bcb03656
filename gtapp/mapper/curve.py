"""Learning curves of mappers: held-out error against the number of shadow pairs.

From one pair set, by seeded splits on the provider's shadow data only:

* **held-out tasks** — ``task_fraction`` of the shadow tasks, never trained on (the cross-task
  question: does the map carry over to a task it never saw?);
* **held-out runs** — ``run_fraction`` of the remaining tasks' runs (new data subsets of known
  tasks);
* the rest is the training pool; for each size ``n`` in ``sizes`` the first ``n`` pairs of a
  seeded run order (whole runs, so a size never splits a run) train every mapper kind.

Each fitted mapper's relative error ``||ΔW_pred - ΔW_true|| / ||ΔW_true||`` (per LLM update,
the mean over pairs) is measured on both held-out sets, with a 95 % interval from a bootstrap
over held-out *runs* (pairs of one run are not independent). The result is JSON-able: it goes
into a mapper version's model card and onto the Admin page.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional, Sequence

import numpy as np

CURVE_FORMAT = 1


def split_pool(pair_set, task_fraction: float = 0.2, run_fraction: float = 0.2, seed: int = 0):
    """(training pairs in a seeded run order, held-out-run pairs, held-out-task pairs, held-out task names)."""
    rng = random.Random(seed)
    tasks = pair_set.tasks()
    if len(tasks) < 2:
        raise ValueError("a learning curve needs shadow pairs from at least two tasks (one is held out)")
    held_tasks = sorted(rng.sample(tasks, max(1, round(len(tasks) * task_fraction))))
    runs = sorted(r for r, v in pair_set.manifest["runs"].items() if v["task"] not in held_tasks)
    rng.shuffle(runs)
    n_val = max(1, round(len(runs) * run_fraction))
    held_runs, pool_runs = set(runs[:n_val]), runs[n_val:]
    by_run: dict[str, list] = {}
    for p in pair_set:
        by_run.setdefault(p.run_id, []).append(p)
    pool = [p for r in pool_runs for p in by_run.get(r, [])]
    val_runs = [p for r in sorted(held_runs) for p in by_run.get(r, [])]
    held_task_set = set(held_tasks)
    val_tasks = [p for r, v in sorted(pair_set.manifest["runs"].items()) if v["task"] in held_task_set
                 for p in by_run.get(r, [])]
    return pool, val_runs, val_tasks, held_tasks


def _by_run_interval(per_pair: dict, pairs: Sequence, n_boot: int, seed: int) -> tuple[float, list[float]]:
    runs: dict[str, list[float]] = {}
    for p in pairs:
        runs.setdefault(p.run_id, []).append(per_pair[p.pair_id]["rel_err"])
    groups = list(runs.values())
    mean = float(np.mean([x for g in groups for x in g]))
    if len(groups) < 2:
        return mean, [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        reps.append(np.mean([x for i in pick for x in groups[i]]))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return mean, [float(lo), float(hi)]


def learning_curve(pair_set, kinds: dict[str, tuple[str, Optional[dict]]],
                   sizes: Sequence[Optional[int]] = (100, 400, 1600, None), *, task_fraction: float = 0.2,
                   run_fraction: float = 0.2, seed: int = 0, n_boot: int = 500,
                   on_fit: Optional[Callable[[str, int, object], None]] = None,
                   log: Callable[[str], None] = lambda m: None) -> dict:
    """Fit every ``kinds`` entry ({label: (mapper kind, config)}) at every size (None = the whole
    pool) and measure it on the held-out runs and tasks. ``on_fit(label, n, mapper)`` is called
    after each fit (e.g. to score private tasks with it). Returns the curve (JSON-able)."""
    from gtapp.mapper.registry import make_mapper

    pool, val_runs, val_tasks, held_tasks = split_pool(pair_set, task_fraction, run_fraction, seed)
    if not pool or not val_runs or not val_tasks:
        raise ValueError("the pair set is too small to hold out runs and tasks")
    points = []
    run_sizes = sorted({min(n, len(pool)) if n else len(pool) for n in sizes})
    for n in run_sizes:
        train = _whole_runs(pool, n)
        for label, (kind, config) in kinds.items():
            t0 = time.monotonic()
            mapper = make_mapper(kind, pair_set.recipes, config)
            mapper.fit(train)
            fit_s = time.monotonic() - t0
            point = {"label": label, "kind": kind, "pairs": len(train), "runs": len({p.run_id for p in train}),
                     "fit_s": round(fit_s, 2)}
            for name, held in (("held_out_runs", val_runs), ("held_out_tasks", val_tasks)):
                ev = mapper.evaluate(held)["per_pair"]
                mean, ci = _by_run_interval(ev, held, n_boot, seed)
                point[name] = {"rel_err": mean, "ci95": ci}
            points.append(point)
            log(f"  {label:<14} {len(train):>5} pairs: held-out runs {point['held_out_runs']['rel_err']:.3f}, "
                f"held-out tasks {point['held_out_tasks']['rel_err']:.3f} ({fit_s:.0f}s)")
            if on_fit is not None:
                on_fit(label, len(train), mapper)
    return {"format": CURVE_FORMAT, "pair_set": getattr(pair_set, "version", None), "seed": seed,
            "held_out_tasks": held_tasks, "pool_pairs": len(pool), "held_out_run_pairs": len(val_runs),
            "held_out_task_pairs": len(val_tasks), "kinds": {k: {"kind": v[0], "config": v[1]} for k, v in kinds.items()},
            "points": points, "crossing": crossing(points, "gt", "ridge")}


def _whole_runs(pool: Sequence, n: int) -> list:
    """The first pairs of ``pool`` (already in a seeded run order) up to ``n``, whole runs only
    (at least one run)."""
    out, seen = [], set()
    for p in pool:
        if p.run_id not in seen:
            if len(out) >= n and seen:
                break
            seen.add(p.run_id)
        out.append(p)
    return out


def crossing(points: Sequence[dict], a: str, b: str, where: str = "held_out_tasks") -> dict:
    """Where ``a``'s held-out error first falls below ``b``'s, with intervals apart (or not at all)."""
    by = {}
    for p in points:
        by.setdefault(p["pairs"], {})[p["label"]] = p[where]
    first_below, clear = None, None
    for n in sorted(by):
        if a in by[n] and b in by[n]:
            ea, eb = by[n][a], by[n][b]
            if first_below is None and ea["rel_err"] < eb["rel_err"]:
                first_below = n
            if clear is None and ea["ci95"][1] < eb["ci95"][0]:
                clear = n
    largest = max(by) if by else None
    at_largest = by.get(largest, {})
    return {"a": a, "b": b, "where": where, "first_below_at_pairs": first_below,
            "intervals_apart_at_pairs": clear, "largest_pairs": largest,
            "a_below_b_at_largest": bool(a in at_largest and b in at_largest
                                         and at_largest[a]["rel_err"] < at_largest[b]["rel_err"])}
