"""The refinement calibrated on the provider's own held-out shadow tasks (never a private task).

    python bench/refine_calibration.py --zoo /path/to/zoo/ci --preset ci --seed 0 \
        --out bench/results/refine_calibration_ci_s0.json

The provider holds a library of tasks. This bench plays organisation with some of them:
1. From the task library minus every preset's private and in-distribution tasks (and every
   task sharing one's name up to the first "-"), per family, one task is held out and
   ``--shadow-per-family`` others, none sharing its name that far, are shadow tasks (seeded draw).
2. Shadow pairs on all of them, at the preset's scale (its subsets, steps, snapshots).
3. Per held-out task T, the organisation's data is a part of T's train split the shadow
   subsets never drew from; the TinyLM is fine-tuned on it, and:
   * ``held_out_task``: the GT fitted on the pairs of every task but T (T is new to it, as a
     cross-task private task is) maps the update;
   * ``held_out_run``: the GT fitted on every pair (T's other runs are known, as
     in-distribution);
   each GT adapter, and its refinement under every variant of :data:`VARIANTS`, is scored on
   T's test split with the base LLM, the oracle (learning rate chosen on its own data) and
   proxy-tuning, with paired bootstrap intervals (gtapp.bench.stats).
4. The variant with the highest mean NLL gap recovery over the held-out tasks is chosen, and
   the OOD-score gate (keep the mapped adapter when the update's OOD score is at most tau,
   refine otherwise) gets the tau that does best over both settings.

Prints the table and the choices, and writes JSON with versions, seeds and settings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# RefineConfig fields that differ from its defaults (the default first)
VARIANTS = {
    "mapped_mix": {},
    "init_mix": {"start": "init"},
    "mapped_public": {"sample_share": 0.0},
    "mapped_samples": {"sample_share": 1.0},
}
SETTINGS = ("held_out_task", "held_out_run")


def held_out_split(per_family: int, seed: int) -> tuple[list[str], list[str]]:
    """(shadow tasks, held-out tasks) from the library without any preset's private or
    in-distribution task, nor any task sharing its name up to the first "-" (``dialogue/travel-*``
    for ``dialogue/travel-short``, ``math/add-*`` for ``math/add-coins-hard``: stricter than
    gtapp.tasks.library.task_topic, which tells only a task's variants apart)."""
    from gtapp.bench.presets import PRESETS
    from gtapp.tasks.library import task_library

    excluded = {t.split("-")[0] for p in PRESETS.values() for t in (*p.cross_private_tasks, *p.in_dist_tasks)}
    by_family: dict[str, list[str]] = {}
    for t in task_library():
        if t.split("-")[0] not in excluded:
            by_family.setdefault(t.split("/")[0], []).append(t)
    rng = random.Random(seed)
    shadow, held = [], []
    for fam in sorted(by_family):
        tasks = sorted(by_family[fam])
        rng.shuffle(tasks)
        held.append(tasks[0])  # new to the mapper as a private task is: no variant of it is a shadow task
        shadow += [t for t in tasks[1:] if t.split("-")[0] != tasks[0].split("-")[0]][:per_family]
    return shadow, held


def gate(rows: list[dict], variant: str) -> dict:
    """The OOD threshold tau for "mapped adapter if OOD score <= tau, else refined", chosen by
    the mean NLL gap recovery it gives over every (setting, task); the candidates are the
    midpoints between observed scores, plus "always refine" and "never refine"."""
    cases = {}
    for r in rows:
        key = (r["protocol"], r["task"], r["dp_epsilon"], r["seed"])
        if r["method"] == "gt":
            cases.setdefault(key, {})["ood"] = r["ood_score"]
            cases[key]["gt"] = r["gap_recovery_nll"]
        elif r["method"] == f"gt_refine:{variant}":
            cases.setdefault(key, {})["refine"] = r["gap_recovery_nll"]
    cases = [{"setting": k[0], "task": k[1], "dp_epsilon": k[2], "seed": k[3], **c} for k, c in cases.items()
             if {"ood", "gt", "refine"} <= set(c) and c["gt"] == c["gt"] and c["refine"] == c["refine"]]
    scores = sorted(c["ood"] for c in cases)
    taus = [float("-inf")] + [(a + b) / 2 for a, b in zip(scores, scores[1:])] + [float("inf")]

    def value(tau):
        return sum(c["gt"] if c["ood"] <= tau else c["refine"] for c in cases) / max(len(cases), 1)

    best = max(taus, key=value)
    return {"variant": variant, "tau": best, "mean_gap_nll": value(best), "always_refine": value(float("-inf")),
            "never_refine": value(float("inf")), "cases": cases}


def merge(files: list[Path], out: Path) -> int:
    """The gate over every case of several runs (seeds); prints and writes it."""
    results = [json.loads(Path(f).read_text()) for f in files]
    variant = results[0]["chosen_variant"]
    g = gate([r for res in results for r in res["rows"]], variant)
    print(f"OOD gate for {variant} over {len(g['cases'])} cases from seeds {[r['seed'] for r in results]}: "
          f"tau = {g['tau']:.3g}, mean NLL gap {g['mean_gap_nll']:.3f} (always refine {g['always_refine']:.3f}, "
          f"never {g['never_refine']:.3f})")
    for c in sorted(g["cases"], key=lambda c: c["ood"]):
        pick = "gt" if c["ood"] <= g["tau"] else "refine"
        print(f"  ood {c['ood']:6.2f}  {c['setting']:<14} {c['task']:<26} eps={c['dp_epsilon']!s:<5} seed {c['seed']}  "
              f"gt {c['gt']:+.3f}  refine {c['refine']:+.3f}  -> {pick}")
    out.write_text(json.dumps({"files": [str(f) for f in files], "seeds": [r["seed"] for r in results],
                               "chosen_variant": variant, "gate": g,
                               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2,
                              default=str))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--preset", default="ci", help="the scale: its shadow, fine-tune and evaluation settings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shadow-per-family", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="refinement variants (under DP only the first)")
    ap.add_argument("--dp-epsilon", type=float, action="append", default=[],
                    help="also fine-tune the TinyLM with DP-SGD at this epsilon (the gate sees those updates too)")
    ap.add_argument("--merge", type=Path, nargs="+", help="instead of running: the gate over these results files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtapp-refine-calibration"))
    ap.add_argument("--out", type=Path, default=Path("refine_calibration.json"))
    args = ap.parse_args(argv)

    import numpy as np

    from gtapp.baselines import Budget, evaluate_result, run_baseline
    from gtapp.baselines.selection import Selection
    from gtapp.bench import stats
    from gtapp.bench.benchmark import provenance
    from gtapp.bench.presets import PRESETS
    from gtapp.bench.protocol import Context, _eval, _fit_mappers, _finetune, _generate, _pair, _row
    from gtapp.refine import RefineConfig, provider_text, refine
    from gtapp.shadow import ShadowConfig, make_pairs
    from gtapp.tasks.universe import make_task

    if args.merge:
        return merge(args.merge, args.out)
    p = PRESETS[args.preset]
    seed = args.seed
    epsilons = [None] + list(args.dp_epsilon)
    t0 = time.monotonic()
    shadow, held = held_out_split(args.shadow_per_family, seed)
    print(f"shadow tasks {shadow}\nheld out {held}")
    cfg = ShadowConfig(tasks=tuple(shadow + held), subsets=p.shadow_subsets, subset_size=p.shadow_subset_size,
                       steps=p.shadow_steps, snapshot_steps=p.shadow_snapshots, seeds=(seed,), lr=p.tiny_lr,
                       llm_lr=p.llm_lr, batch_size=p.batch_size, task_seed=seed, n_train=p.n_public, subset_seed=seed)
    pairs = make_pairs(args.zoo, cfg, args.work / "pairs")
    shadow_s = time.monotonic() - t0
    runs = pairs.manifest["runs"]
    print(f"{len(pairs)} shadow pairs from {len(pairs.tasks())} tasks ({shadow_s:.0f}s)")
    ctx = Context(p, args.zoo, args.work, log=print)
    pair = _pair(ctx)
    budget = Budget(steps=p.llm_steps, batch_size=p.batch_size, lr=p.llm_lr)
    all_pairs = list(pairs)
    gt_known = _fit_mappers(ctx, all_pairs, ("gt",))["gt"]
    for name in held:
        task = make_task(name, seed=seed, n_train=p.n_public + p.n_private, n_test=p.n_test)
        private = task.train[p.n_public:]  # the shadow subsets drew from the first n_public only
        d = args.work / name.replace("/", "_")
        tiny = {eps: _finetune(ctx, "tiny", private, d / f"tiny_{eps}", seed, dp_epsilon=eps)[0] for eps in epsilons}
        fixed = {"base_llm": _eval(ctx, "llm", None, task)}
        for method in ("oracle", "proxy_tuning"):
            res = run_baseline(method, pair, tiny[None] if method != "oracle" else None, list(private), [], budget,
                               d / method, seed=seed, task=task, overwrite=True, selection=Selection())
            fixed[method] = evaluate_result(res, pair, task, limit=p.eval_limit, per_example=True)
        gt_new = _fit_mappers(ctx, [q for q in all_pairs if runs[q.run_id]["task"] != name], ("gt",))["gt"]
        for setting, mapper in (("held_out_task", gt_new), ("held_out_run", gt_known)):
            common = dict(protocol=setting, task=task, seed=seed, clients=1)
            for method, ev in fixed.items():
                _row(ctx, **common, method=method, dp_epsilon=None, ev=ev, wall_s=0.0, peak_mem_mb=0.0)
            manifest = pairs.manifest if setting == "held_out_run" else \
                {**pairs.manifest, "runs": {r: v for r, v in runs.items() if v["task"] != name}}
            text = provider_text(manifest, limit=4 * p.n_public, seed=seed)
            for eps in epsilons:
                tag = "nodp" if eps is None else f"eps{eps:g}"
                gt_dir, gw, _, ood = _generate(ctx, mapper, [tiny[eps]], d / f"gt_{setting}_{tag}")
                _row(ctx, **common, method="gt", dp_epsilon=eps, ev=_eval(ctx, "llm", gt_dir, task), wall_s=gw,
                     peak_mem_mb=0.0, ood_score=ood)
                for variant in (args.variants if eps is None else args.variants[:1]):
                    rc = RefineConfig(**{"steps": p.llm_steps, "batch_size": p.batch_size, "lr": p.llm_lr,
                                         "seed": seed, **VARIANTS[variant]})
                    out = d / f"refine_{setting}_{tag}_{variant}"
                    rec = refine(pair, tiny[eps], text, out, rc, start_adapter=gt_dir)
                    _row(ctx, **common, method=f"gt_refine:{variant}", dp_epsilon=eps, ev=_eval(ctx, "llm", out, task),
                         wall_s=rec["wall_s"], peak_mem_mb=rec["peak_mem_mb"], ood_score=ood,
                         refine={k: rec.get(k) for k in ("lr", "steps", "text")})
            print(f"  {setting} {name}: done ({time.monotonic() - t0:.0f}s)")

    boots = stats.bootstraps(ctx.rows, n_boot=500, seed=seed)
    for r in ctx.rows:
        reps = boots[(r["protocol"], r["task"])].gap(r["method"], "nll", r["dp_epsilon"], r["clients"])
        r["gap_recovery_nll"] = float(np.nanmean(reps)) if np.isfinite(reps).any() else float("nan")
    methods = ["gt", "proxy_tuning"] + [f"gt_refine:{v}" for v in args.variants]
    summary = {}
    print(f"\n{'method':<24} " + " ".join(f"{s:>26}" for s in SETTINGS))
    for m in methods:
        cells = []
        for s in SETTINGS:
            b = [v for k, v in boots.items() if k[0] == s]
            avg = stats.average_gap(b, m, "nll")
            summary.setdefault(m, {})[s] = avg
            cells.append(f"{avg['mean']:>8.3f} [{avg['ci95'][0]:.2f}, {avg['ci95'][1]:.2f}]")
        print(f"{m:<24} " + " ".join(f"{c:>26}" for c in cells))
    chosen = max(args.variants, key=lambda v: summary[f"gt_refine:{v}"]["held_out_task"]["mean"])
    g = gate(ctx.rows, chosen)
    print(f"\nchosen on held-out shadow tasks: {chosen} {VARIANTS[chosen]}")
    print(f"OOD gate for {chosen}: tau = {g['tau']:.3g}, mean NLL gap {g['mean_gap_nll']:.3f} "
          f"(always refine {g['always_refine']:.3f}, never {g['never_refine']:.3f})")
    result = {"preset": p.name, "seed": seed, "zoo": str(args.zoo), "shadow_tasks": shadow, "held_out_tasks": held,
              "pairs": len(pairs), "shadow_s": shadow_s, "variants": {v: VARIANTS[v] for v in args.variants},
              "summary": summary, "chosen_variant": chosen, "gate": g,
              "rows": [{k: v for k, v in r.items() if k != "examples"} for r in ctx.rows],
              "total_s": time.monotonic() - t0, **provenance()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
