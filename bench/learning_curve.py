"""Learning curves: mean, ridge and Gradient Transformer error against the number of shadow pairs.

    python bench/learning_curve.py --zoo /path/to/zoo/ci --preset demo --seed 0 \
        --out bench/results/learning_curve_demo_s0.json

1. Shadow pairs as the preset's cross-task protocol makes them (its shadow tasks only; the
   private tasks are never touched), or an existing pair set (``--pairs``).
2. gtapp.mapper.curve: held-out shadow tasks and held-out shadow runs split off; mean, ridge,
   the GT on a ridge base (``gt``) and the standalone GT (``gt_standalone``, base = the shadow
   mean, so nothing pins it to ridge) fitted at 100, 400, 1,600 and all remaining pairs; each
   one's relative error on both held-out sets with a 95 % interval (bootstrap over runs).
3. ``--select-gt``: the standalone GT's size and schedule chosen from a small grid by its
   held-out *shadow task* error at the largest size (shadow data only, never a private task).
4. For every fitted mapper, the private tasks' NLL gap recovery: each private task's TinyLM
   fine-tune mapped to an LLM adapter and scored against the base LLM and the oracle (which
   picks its learning rate on its own data, gtapp.baselines.selection), with a bootstrap
   interval over test examples.

Prints the curve and whether the plain GT beats ridge on held-out tasks at the largest pair
count (MET / NOT MET), and writes JSON with versions, seeds and settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GT_GRID = ({"d_model": 32, "steps": 600}, {"d_model": 64, "steps": 600}, {"d_model": 64, "steps": 1500})


def private_scorer(preset, zoo: Path, work: Path, seed: int, log):
    """(score(mapper) -> {task: {gap_nll, ci95}}, fixed rows) for the preset's cross-task private tasks."""
    import numpy as np

    from gtapp.baselines import Budget, evaluate_result, run_baseline
    from gtapp.baselines.selection import Selection
    from gtapp.bench import stats
    from gtapp.evaluate import evaluate_paths
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.generate import generate
    from gtapp.models import ModelPair
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(zoo)
    tasks, fixed = [], {}
    for name in preset.cross_private_tasks:
        task = make_task(name, seed=seed, n_train=preset.n_private, n_test=preset.n_test)
        d = work / name.replace("/", "_")
        tiny = finetune(pair.tiny_path, pair.recipes.tiny, task.train,
                        FinetuneConfig(steps=preset.tiny_steps, lr=preset.tiny_lr, batch_size=preset.batch_size,
                                       seed=seed), d / "tiny", overwrite=True).adapter_dir
        base = evaluate_paths(pair.llm_path, task, limit=preset.eval_limit, per_example=True)
        res = run_baseline("oracle", pair, None, task.train, [], Budget(preset.llm_steps, preset.batch_size,
                                                                       preset.llm_lr),
                           d / "oracle", seed=seed, overwrite=True, selection=Selection())
        oracle = evaluate_result(res, pair, task, limit=preset.eval_limit, per_example=True)
        fixed[name] = {"base_llm": base, "oracle": oracle}
        tasks.append((task, tiny, d))
        log(f"  private {name}: base NLL {base['answer_nll']:.3f}, oracle {oracle['answer_nll']:.3f}")

    def score(label, n, mapper) -> dict:
        out = {}
        for task, tiny, d in tasks:
            res = generate(mapper, [str(tiny)], d / f"{label}_{n}", zoo=zoo)
            ev = evaluate_paths(pair.llm_path, task, adapter_dir=res.adapter_dir, limit=preset.eval_limit,
                                per_example=True)
            rows = [{"protocol": "p", "task": task.name, "method": m, "dp_epsilon": None, "clients": 1, "seed": 0,
                     "metric": e["metric"], "examples": e["examples"]}
                    for m, e in (("base_llm", fixed[task.name]["base_llm"]), ("oracle", fixed[task.name]["oracle"]),
                                 ("m", ev))]
            reps = stats.TaskBootstrap(rows, n_boot=500).gap("m", "nll")
            lo, hi = stats.interval(reps)
            out[task.name] = {"gap_nll": float(np.nanmean(reps)), "ci95": [lo, hi], "answer_nll": ev["answer_nll"]}
        return out

    return score, fixed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--pairs", type=Path, help="an existing pair set (default: make the preset's cross-task pairs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600], help="pair counts (plus all)")
    ap.add_argument("--select-gt", action="store_true", help="choose the standalone GT's size on held-out shadow tasks")
    ap.add_argument("--no-private", action="store_true", help="skip the private tasks' gap recovery")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtapp-learning-curve"))
    ap.add_argument("--out", type=Path, default=Path("learning_curve.json"))
    args = ap.parse_args(argv)

    from gtapp.bench.benchmark import provenance
    from gtapp.bench.presets import PRESETS
    from gtapp.mapper.curve import learning_curve
    from gtapp.pairset import PairSet
    from gtapp.shadow import ShadowConfig, make_pairs

    p = PRESETS[args.preset]
    t0 = time.monotonic()
    if args.pairs:
        pairs = PairSet.load(args.pairs)
    else:
        cfg = ShadowConfig(tasks=p.cross_shadow_tasks, subsets=p.shadow_subsets, subset_size=p.shadow_subset_size,
                           steps=p.shadow_steps, snapshot_steps=p.shadow_snapshots, seeds=(args.seed,), lr=p.tiny_lr,
                           llm_lr=p.llm_lr, batch_size=p.batch_size, task_seed=args.seed, n_train=p.n_public,
                           subset_seed=args.seed)
        pairs = make_pairs(args.zoo, cfg, args.work / "pairs")
    shadow_s = time.monotonic() - t0
    print(f"{len(pairs)} shadow pairs from {len(pairs.tasks())} tasks ({shadow_s:.0f}s)")
    gt_cfg = {**p.gt_config, "seed": args.seed, "split_seed": args.seed}
    kinds = {"mean": ("mean", None), "ridge": ("ridge", None), "gt": ("gt", gt_cfg),
             "gt_standalone": ("gt", {**gt_cfg, "base": "mean"})}
    selection = None
    if args.select_gt:
        grid = {f"gt_standalone[{i}]": ("gt", {**gt_cfg, "base": "mean", **g}) for i, g in enumerate(GT_GRID)}
        sel = learning_curve(pairs, grid, sizes=(None,), seed=args.seed, log=print)
        best = min(sel["points"], key=lambda q: q["held_out_tasks"]["rel_err"])
        kinds["gt_standalone"] = grid[best["label"]]
        selection = {"grid": list(GT_GRID), "points": sel["points"], "chosen": best["label"],
                     "by": "held-out shadow task error at the largest size"}
        print(f"standalone GT chosen on held-out shadow tasks: {best['label']} {kinds['gt_standalone'][1]}")
    scores = {}
    fixed = None
    if not args.no_private:
        score, fixed = private_scorer(p, args.zoo, args.work / "private", args.seed, print)

        def on_fit(label, n, mapper):
            scores.setdefault(label, {})[n] = score(label, n, mapper)
    else:
        on_fit = None
    curve = learning_curve(pairs, kinds, sizes=tuple(args.sizes) + (None,), seed=args.seed, on_fit=on_fit, log=print)
    for point in curve["points"]:
        point["private_gap_nll"] = scores.get(point["label"], {}).get(point["pairs"])
    cross = curve["crossing"]
    met = cross["a_below_b_at_largest"] and cross["intervals_apart_at_pairs"] == cross["largest_pairs"]
    print(f"\n{'mapper':<14} {'pairs':>6} {'held-out runs':>22} {'held-out tasks':>22} {'private NLL gap':>16}")
    for q in curve["points"]:
        r, t = q["held_out_runs"], q["held_out_tasks"]
        priv = q.get("private_gap_nll") or {}
        pg = sum(v["gap_nll"] for v in priv.values()) / len(priv) if priv else float("nan")
        print(f"{q['label']:<14} {q['pairs']:>6} {r['rel_err']:>8.3f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}] "
              f"{t['rel_err']:>8.3f} [{t['ci95'][0]:.3f},{t['ci95'][1]:.3f}] {pg:>16.3f}")
    print(f"\ntarget: the plain GT beats ridge on held-out tasks at the largest pair count "
          f"({cross['largest_pairs']}; intervals apart): {'MET' if met else 'NOT MET'}")
    print(f"GT first below ridge on held-out tasks at {cross['first_below_at_pairs']} pairs; intervals apart at "
          f"{cross['intervals_apart_at_pairs']}")
    result = {"preset": p.name, "seed": args.seed, "zoo": str(args.zoo), "pairs": len(pairs), "shadow_s": shadow_s,
              "curve": curve, "gt_selection": selection,
              "private_fixed": {t: {m: {k: e[k] for k in ("answer_nll", "value", "n")} for m, e in d.items()}
                                for t, d in (fixed or {}).items()},
              "target": {"name": "plain GT beats ridge on held-out tasks at the largest pair count", "met": met},
              "total_s": time.monotonic() - t0, **provenance()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
