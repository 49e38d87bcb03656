"""What helps the Gradient Transformer: mapper size, loss, base (representation) and pair
count, compared with ridge and the mean on held-out *shadow runs* of stored pair sets.

Only the provider's own shadow pairs are used (never a private task), so this is a fair
place to choose a mapper. For each pair set and each split seed, every variant is fitted on
the training runs and scored on the held-out runs (relative error ‖ΔW_pred − ΔW‖/‖ΔW‖ over
the whole LLM update, lower is better; cosine, higher is better). ``--fraction`` variants
fit on that share of the training runs only (a learning curve).

    python bench/mapper_ablation.py --zoo ZOO --pairs runs/pairs_a runs/pairs_b --out ablation.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The demo benchmark's GT (gtapp/bench/presets.py); variants change one thing each.
DEMO_GT = {"d_model": 64, "n_enc_layers": 1, "n_dec_layers": 1, "steps": 600, "max_time_s": 90}
VARIANTS: dict[str, tuple[str, dict]] = {
    "mean": ("mean", {}),
    "ridge": ("ridge", {}),
    "gt": ("gt", DEMO_GT),
    "gt_large": ("gt", {**DEMO_GT, "d_model": 128, "n_enc_layers": 2, "n_dec_layers": 2, "max_time_s": 180}),
    "gt_mean_base": ("gt", {**DEMO_GT, "base": "mean"}),
    "gt_mse_loss": ("gt", {**DEMO_GT, "mse_weight": 1.0}),
    "gt_no_mixup": ("gt", {**DEMO_GT, "mixup": 0.0}),
}


def split(pairs: list, val_fraction: float, seed: int, fraction: float) -> tuple[list, list]:
    """Held-out runs (never seen in training), and ``fraction`` of the remaining runs for training."""
    runs = sorted({p.run_id for p in pairs})
    rng = random.Random(seed)
    rng.shuffle(runs)
    n_val = max(1, round(len(runs) * val_fraction))
    val_runs = set(runs[:n_val])
    train_runs = runs[n_val:]
    train_runs = set(train_runs[: max(2, round(len(train_runs) * fraction))])
    return [p for p in pairs if p.run_id in train_runs], [p for p in pairs if p.run_id in val_runs]


def run(zoo: Path, pair_dirs: list[Path], variants: list[str], seeds: list[int], fractions: list[float],
        threads: int | None) -> list[dict]:
    import torch

    from gtapp.mapper.registry import make_mapper
    from gtapp.models import ModelPair
    from gtapp.pairset import PairSet

    if threads:
        torch.set_num_threads(threads)
    recipes = ModelPair.from_dir(zoo).recipes
    rows = []
    for d in pair_dirs:
        pairs = list(PairSet.load(d))
        for seed in seeds:
            for fraction in fractions:
                train, val = split(pairs, 0.25, seed, fraction)
                for name in variants:
                    kind, cfg = VARIANTS[name]
                    m = make_mapper(kind, recipes, dict(cfg) if cfg else None)
                    t = time.monotonic()
                    card = m.fit(train, val_pairs=val)
                    v = card["validation"]
                    rows.append({"pairs": d.name, "split_seed": seed, "train_fraction": fraction, "variant": name,
                                 "train_runs": card["split"]["train_runs"], "val_runs": card["split"]["val_runs"],
                                 "rel_err": v.get("rel_err_mean"), "cosine": v.get("cosine_mean"),
                                 "fit_s": time.monotonic() - t})
                    r = rows[-1]
                    print(f"{d.name:40s} seed {seed} frac {fraction:.2f} {name:14s} rel-err {r['rel_err']:.4f} "
                          f"cos {r['cosine']:.4f} ({r['train_runs']} train runs, {r['fit_s']:.0f}s)", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Mean over split seeds per (pair set, fraction, variant), and the GT's margin over ridge."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["pairs"], r["train_fraction"], r["variant"]), []).append(r)
    lines = [f"{'pair set':40s} {'frac':>5s} {'variant':14s} {'rel-err':>8s} {'cosine':>7s} {'vs ridge':>9s}"]
    for (pairs, frac, variant), rs in sorted(groups.items()):
        err = statistics.fmean(r["rel_err"] for r in rs)
        ridge = statistics.fmean(r["rel_err"] for r in groups.get((pairs, frac, "ridge"), rs))
        lines.append(f"{pairs[:40]:40s} {frac:5.2f} {variant:14s} {err:8.4f} "
                     f"{statistics.fmean(r['cosine'] for r in rs):7.4f} {err - ridge:+9.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, nargs="+", required=True, help="pair set folders (gtapp shadow --out)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1", help="split seeds")
    ap.add_argument("--fractions", default="1.0", help="shares of the training runs used, e.g. 0.5,1.0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows = run(args.zoo, args.pairs, variants, [int(s) for s in args.seeds.split(",")],
               [float(f) for f in args.fractions.split(",")], args.threads)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"variants": {k: VARIANTS[k] for k in variants}, "rows": rows}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
