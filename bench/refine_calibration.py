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
4. Held-out tasks with no gap to recover (the oracle no better than the base LLM, paired interval;
   gtapp.bench.report.gap_defined) are left out of every mean, as the benchmark's targets leave them.
   The variant with the highest mean NLL gap recovery over the held-out tasks is chosen, and
   each gate signal (:data:`SIGNALS`: keep the mapped adapter when the signal's score is at most
   tau, refine otherwise) gets the tau that does best over both settings; the rule
   ``--refine auto`` applies (gtapp.refine.refine_wanted) is scored on the same cases.

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

# the variants measured before 0.7 became the default sample temperature keep theirs, and those measured
# before the teacher over the mapped adapter became the default keep the base LLM's proxy-tuning
_BASE = {"teacher_llm": "base"}
_T1 = {"sample_temperature": 1.0, **_BASE}
#: A variant's key (not a RefineConfig field) for which provider text it refines on: "all" the
#: shadow tasks' (the default) or "family", those of the held-out task's family only.
TEXT = "text"
# RefineConfig fields that differ from its defaults (the default first), and TEXT
VARIANTS = {
    # the default since the calibration of 2026-12-02 (refine_calibration_ci_stacked_gate): the teacher's
    # offset stacked on the LLM with the GT's adapter (proxy-tuning over the mapped update) instead of on
    # the base LLM, where refinement towards base proxy-tuning dragged a good GT adapter down to its level
    "gt_teacher": {},
    "mapped_cool": {**_BASE},  # the default from 2026-12-01 (sample temperature 0.7) to 2026-12-02
    "mapped_mix": {**_T1},
    "init_mix": {**_T1, "start": "init"},
    "mapped_public": {**_T1, "sample_share": 0.0},
    "mapped_samples": {**_T1, "sample_share": 1.0},
    # half, or all, of the TinyLM's samples written unprompted from the document start
    "mapped_free": {**_T1, "free_share": 0.5},
    "mapped_free_all": {**_T1, "free_share": 1.0},
    # a teacher that amplifies the fine-tune's offset (the student keeps only part of a teacher's gain)
    "mapped_alpha15": {**_T1, "teacher_alpha": 1.5},
    "mapped_alpha2": {**_T1, "teacher_alpha": 2.0},
    # the samples written by the proxy-tuned LLM (the teacher) instead of the TinyLM
    "teacher_free_all": {**_T1, "sample_from": "teacher", "free_share": 1.0},
    "teacher_mix": {**_T1, "sample_from": "teacher"},
    # at the default temperature: the proxy-tuned LLM writes the samples, or half of them
    "teacher_cool": {"sample_from": "teacher", **_BASE},
    "both_cool": {"sample_from": "both", **_BASE},
    # the preset's learning rate (3e-3) with no selection: about a fifth of the time (measured 2026-12-02)
    "cool_fixed_lr": {"select": False, **_BASE},
    # the provider text of the held-out task's own family only (what a family hint from the organisation
    # would allow): is the text's closeness to the private task what limits refinement?
    "family_cool": {TEXT: "family", **_BASE},
    "family_public": {TEXT: "family", "sample_share": 0.0, **_BASE},
    # from the recipe's seeded LoRA instead of the GT's adapter, at the default temperature: where the
    # mapped adapter is harmful, refinement starting from it must first undo the harm
    "init_cool": {"start": "init", **_BASE},
}
SETTINGS = ("held_out_task", "held_out_run")


def _proxy_over(pair, llm_adapter, tiny_adapter, task, limit) -> dict:
    """Proxy-tuning over the LLM with ``llm_adapter``: LLM_mapped + (TinyLM_ft - TinyLM_base), scored."""
    from gtapp.baselines.proxy import load_proxy
    from gtapp.evaluate import evaluate

    model, tokenizer = load_proxy(pair, tiny_adapter, llm_adapter_dir=llm_adapter)
    return evaluate(model, tokenizer, task, limit=limit, per_example=True)


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


#: gate signals: a case's score under each, refined where the score is above the threshold
SIGNALS = {
    "ood": lambda gt_row: gt_row.get("ood_score"),
    # the nearest-shadow distance over the typical distance to another task's updates (density-free)
    "ood_task": lambda gt_row: gt_row.get("ood_task_score"),
    # the mapped adapter's NLL gain on the fine-tuned TinyLM's samples (gtapp.refine.sample_check),
    # negated: refine where the mapped adapter does not move the LLM towards them
    "sample_gain": lambda gt_row: -(gt_row.get("sample_check") or {}).get("llm_gain", float("nan")),
    "sample_agreement": lambda gt_row: -(gt_row.get("sample_check") or {}).get("agreement", float("nan")),
    # the gain on the fine-tuned TinyLM's samples less the gain on the base TinyLM's, negated
    "sample_contrast": lambda gt_row: -(gt_row.get("sample_check") or {}).get("contrast", float("nan")),
}


def gate(rows: list[dict], variant: str, signal: str = "ood") -> dict:
    """The threshold tau for "mapped adapter if the signal's score <= tau, else refined", chosen
    by the mean NLL gap recovery it gives over every (setting, task); the candidates are the
    midpoints between observed scores, plus "always refine" and "never refine". Also what
    tau = 0 gives (the sample signals' natural threshold: no gain at all). A case whose task has
    no gap to recover (``gap_defined`` False: the oracle no better than the base LLM) is left out:
    its gap recoveries divide by noise and would decide every mean."""
    cases = {}
    for r in rows:
        if r.get("gap_defined") is False:
            continue
        key = (r["protocol"], r["task"], r["dp_epsilon"], r["seed"])
        if r["method"] == "gt":
            cases.setdefault(key, {})["score"] = SIGNALS[signal](r)
            cases[key]["ood"] = r.get("ood_score")
            cases[key]["gt"] = r["gap_recovery_nll"]
        elif r["method"] == f"gt_refine:{variant}":
            cases.setdefault(key, {})["refine"] = r["gap_recovery_nll"]
    cases = [{"setting": k[0], "task": k[1], "dp_epsilon": k[2], "seed": k[3], **c} for k, c in cases.items()
             if {"score", "gt", "refine"} <= set(c) and c["score"] is not None and c["score"] == c["score"]
             and c["gt"] == c["gt"] and c["refine"] == c["refine"]]
    scores = sorted(c["score"] for c in cases)
    taus = [float("-inf")] + [(a + b) / 2 for a, b in zip(scores, scores[1:])] + [float("inf")]

    def value(tau, subset=None):
        part = [c for c in cases if subset is None or subset(c)]
        if not part:
            return float("nan")  # e.g. the DP share of a run without DP
        return sum(c["gt"] if c["score"] <= tau else c["refine"] for c in part) / len(part)

    best = max(taus, key=value)
    return {"variant": variant, "signal": signal, "tau": best, "mean_gap_nll": value(best),
            "at_zero": value(0.0), "always_refine": value(float("-inf")), "never_refine": value(float("inf")),
            "no_dp": value(best, lambda c: c["dp_epsilon"] is None),
            "dp": value(best, lambda c: c["dp_epsilon"] is not None), "cases": cases}


def report_gates(rows: list[dict], variant: str, what: str, verbose: bool = False) -> dict:
    """Every signal's gate over ``rows``, printed; the cases one by one when ``verbose``."""
    gates = {}
    for signal in SIGNALS:
        g = gates[signal] = gate(rows, variant, signal)
        if not g["cases"]:
            print(f"{signal} gate: no case carries this signal")
            continue
        print(f"{signal} gate for {variant} over {len(g['cases'])} cases from {what}: tau = {g['tau']:.3g}, "
              f"mean NLL gap {g['mean_gap_nll']:.3f} (no DP {g['no_dp']:.3f}, DP {g['dp']:.3f}; tau = 0: "
              f"{g['at_zero']:.3f}; always refine {g['always_refine']:.3f}, never {g['never_refine']:.3f})")
        if verbose:
            for c in sorted(g["cases"], key=lambda c: c["score"]):
                pick = "gt" if c["score"] <= g["tau"] else "refine"
                print(f"  {signal} {c['score']:+7.3f}  {c['setting']:<14} {c['task']:<26} eps={c['dp_epsilon']!s:<5} "
                      f"seed {c['seed']}  gt {c['gt']:+.3f}  refine {c['refine']:+.3f}  -> {pick}")
    gates["product_rule"] = product_rule(gates["ood_task"]["cases"])
    if gates["product_rule"]:
        r = gates["product_rule"]
        print(f"--refine auto as gtapp.refine.refine_wanted decides, over {r['cases']} cases: mean NLL gap "
              f"{r['mean_gap_nll']:.3f} (no DP {r['no_dp']:.3f}, DP {r['dp']:.3f}; refined {r['refined']} of them)")
    return gates


def product_rule(cases: list[dict]) -> dict:
    """What ``--refine auto`` (gtapp.refine.refine_wanted on the update's task score, at
    gtapp.refine.AUTO_REFINE_TASK_OOD) gives over the task-score gate's cases."""
    from gtapp.refine import refine_wanted

    if not cases:
        return {}
    picks = [(c, refine_wanted("auto", {"score": c["ood"], "task_score": c["score"]})[0]) for c in cases]

    def mean(part):
        part = list(part)
        return sum(c["refine"] if w else c["gt"] for c, w in part) / len(part) if part else float("nan")

    return {"cases": len(cases), "refined": sum(w for _, w in picks), "mean_gap_nll": mean(picks),
            "no_dp": mean(p for p in picks if p[0]["dp_epsilon"] is None),
            "dp": mean(p for p in picks if p[0]["dp_epsilon"] is not None)}


def pooled_variants(results: list[dict]) -> dict:
    """Per refinement variant run in every file: the mean over files (seeds) of each setting's
    mean NLL gap recovery, printed next to the GT's and proxy-tuning's."""
    common = set.intersection(*(set(r.get("variants") or {}) for r in results))
    pooled = {}
    print(f"\n{'method (mean over seeds)':<28} " + " ".join(f"{s:>14}" for s in SETTINGS))
    for m in ["gt", "proxy_tuning"] + [f"gt_refine:{v}" for v in sorted(common)]:
        cells = {s: sum(r["summary"][m][s]["mean"] for r in results) / len(results) for s in SETTINGS}
        print(f"{m:<28} " + " ".join(f"{cells[s]:>14.3f}" for s in SETTINGS))
        if m.startswith("gt_refine:"):
            pooled[m.split(":", 1)[1]] = cells
    return pooled


def merge(files: list[Path], out: Path) -> int:
    """The gate over every case of several runs (seeds); prints and writes it."""
    results = [json.loads(Path(f).read_text()) for f in files]
    pooled = pooled_variants(results)
    variant = max(pooled, key=lambda v: pooled[v]["held_out_task"])
    print(f"chosen over seeds {[r['seed'] for r in results]} on held-out shadow tasks: {variant}")
    rows = [r for res in results for r in res["rows"]]
    gates = report_gates(rows, variant, f"seeds {[r['seed'] for r in results]}", verbose=True)
    out.write_text(json.dumps({"files": [str(f) for f in files], "seeds": [r["seed"] for r in results],
                               "variants": pooled, "chosen_variant": variant, "gate": gates["ood"], "gates": gates,
                               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2,
                              default=str))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, help="the zoo folder (not needed with --merge)")
    ap.add_argument("--preset", default="ci", help="the scale: its shadow, fine-tune and evaluation settings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shadow-per-family", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="refinement variants (under DP only the first --dp-variants)")
    ap.add_argument("--dp-variants", type=int, default=1, help="how many of --variants also run under DP")
    ap.add_argument("--dp-epsilon", type=float, action="append", default=[],
                    help="also fine-tune the TinyLM with DP-SGD at this epsilon (the gate sees those updates too)")
    ap.add_argument("--merge", type=Path, nargs="+", help="instead of running: the gate over these results files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtapp-refine-calibration"))
    ap.add_argument("--out", type=Path, default=Path("refine_calibration.json"))
    args = ap.parse_args(argv)

    import numpy as np

    from gtapp.baselines import Budget, evaluate_result, run_baseline
    from gtapp.baselines.selection import Selection
    from gtapp.bench import report, stats
    from gtapp.bench.benchmark import provenance
    from gtapp.bench.presets import PRESETS
    from gtapp.bench.protocol import Context, _eval, _fit_mappers, _finetune, _generate, _pair, _row
    from gtapp.refine import RefineConfig, provider_text, refine, sample_check
    from gtapp.shadow import ShadowConfig, make_pairs
    from gtapp.tasks.universe import make_task

    if args.merge:
        return merge(args.merge, args.out)
    if args.zoo is None:
        ap.error("--zoo is required (unless --merge)")
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
            family = name.split("/")[0]
            text = provider_text(manifest, limit=4 * p.n_public, seed=seed)
            texts = {"all": text}
            if any(VARIANTS[v].get(TEXT) == "family" for v in args.variants):
                texts["family"] = provider_text(
                    {**manifest, "runs": {r: v for r, v in manifest["runs"].items() if v["task"].split("/")[0] == family}},
                    limit=4 * p.n_public, seed=seed)
            for eps in epsilons:
                tag = "nodp" if eps is None else f"eps{eps:g}"
                gt_dir, gw, _, ood = _generate(ctx, mapper, [tiny[eps]], d / f"gt_{setting}_{tag}")
                check = sample_check(pair, tiny[eps], gt_dir, text, seed=seed)
                _row(ctx, **common, method="gt", dp_epsilon=eps, ev=_eval(ctx, "llm", gt_dir, task), wall_s=gw,
                     peak_mem_mb=0.0, ood_score=ood.get("score"), ood_task_score=ood.get("task_score"),
                     sample_check=check)
                if any(VARIANTS[v].get("teacher_llm", "mapped") == "mapped" for v in args.variants):
                    # that refinement's teacher itself, served at decode time (both TinyLMs needed): its bound
                    _row(ctx, **common, method="proxy_over_gt", dp_epsilon=eps, ev=_proxy_over(pair, gt_dir, tiny[eps],
                         task, p.eval_limit), wall_s=0.0, peak_mem_mb=0.0, ood_score=ood.get("score"))
                for variant in (args.variants if eps is None else args.variants[:args.dp_variants]):
                    fields = {k: v for k, v in VARIANTS[variant].items() if k != TEXT}
                    rc = RefineConfig(**{"steps": p.llm_steps, "batch_size": p.batch_size, "lr": p.llm_lr,
                                         "seed": seed, **fields})
                    out = d / f"refine_{setting}_{tag}_{variant}"
                    rec = refine(pair, tiny[eps], texts[VARIANTS[variant].get(TEXT, "all")], out, rc,
                                 start_adapter=gt_dir)
                    _row(ctx, **common, method=f"gt_refine:{variant}", dp_epsilon=eps, ev=_eval(ctx, "llm", out, task),
                         wall_s=rec["wall_s"], peak_mem_mb=rec["peak_mem_mb"], ood_score=ood.get("score"),
                         refine={k: rec.get(k) for k in ("lr", "steps", "text")})
            print(f"  {setting} {name}: done ({time.monotonic() - t0:.0f}s)")

    boots = stats.bootstraps(ctx.rows, n_boot=500, seed=seed)
    for r in ctx.rows:
        reps = boots[(r["protocol"], r["task"])].gap(r["method"], "nll", r["dp_epsilon"], r["clients"])
        r["gap_recovery_nll"] = float(np.nanmean(reps)) if np.isfinite(reps).any() else float("nan")
        # as the benchmark's targets do (seeds 3-5 of 2026-12-02: three such tasks gave means of 5 to 15)
        r["gap_defined"] = report.gap_defined(boots, r["protocol"], r["task"])
    no_gap = sorted({(r["protocol"], r["task"]) for r in ctx.rows if not r["gap_defined"]})
    if no_gap:
        print("left out of the means (the oracle no better than the base LLM): "
              + ", ".join(f"{t} ({s})" for s, t in no_gap))
    methods = ["gt", "proxy_tuning"] + [m for m in ("proxy_over_gt",) if any(r["method"] == m for r in ctx.rows)] + \
        [f"gt_refine:{v}" for v in args.variants]
    summary = {}
    print(f"\n{'method':<24} " + " ".join(f"{s:>26}" for s in SETTINGS))
    for m in methods:
        cells = []
        for s in SETTINGS:
            b = [v for k, v in boots.items() if k[0] == s and (s, k[1]) not in no_gap]
            avg = stats.average_gap(b, m, "nll")
            summary.setdefault(m, {})[s] = avg
            cells.append(f"{avg['mean']:>8.3f} [{avg['ci95'][0]:.2f}, {avg['ci95'][1]:.2f}]")
        print(f"{m:<24} " + " ".join(f"{c:>26}" for c in cells))
    chosen = max(args.variants, key=lambda v: summary[f"gt_refine:{v}"]["held_out_task"]["mean"])
    print(f"\nchosen on held-out shadow tasks: {chosen} {VARIANTS[chosen]}")
    gates = report_gates(ctx.rows, chosen, f"seed {seed}")
    result = {"preset": p.name, "seed": seed, "zoo": str(args.zoo), "shadow_tasks": shadow, "held_out_tasks": held,
              "pairs": len(pairs), "shadow_s": shadow_s, "variants": {v: VARIANTS[v] for v in args.variants},
              "summary": summary, "chosen_variant": chosen, "gate": gates["ood"], "gates": gates,
              "rows": [{k: v for k, v in r.items() if k != "examples"} for r in ctx.rows],
              "total_s": time.monotonic() - t0, **provenance()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
