"""`gtapp bench`: run the benchmark protocol, print the comparison table, write JSON."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmark (both protocols, all methods) and write results JSON")
    p.add_argument("--preset", default="ci", help="ci | quick5 | demo | gpu")
    p.add_argument("--out", type=Path, default=Path("results.json"))
    p.add_argument("--zoo", type=Path, default=None, help="reuse a built zoo folder (default: build the preset's)")
    p.add_argument("--work", type=Path, default=None, help="keep intermediate adapters here (default: a temp folder)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--private-dataset", action="append", default=[], metavar="NAME=PATH",
                   help="a real dataset as a cross-task private task, e.g. gsm8k=../shared/datasets/gsm8k")
    p.add_argument("--shadow-dataset", action="append", default=[], metavar="NAME=PATH",
                   help="a real public dataset whose train split joins the cross-task shadow tasks, "
                        "e.g. gsm8k=../shared/datasets/gsm8k")
    p.add_argument("--plot", action="store_true", help="also write the Plotly charts as HTML next to --out")
    p.add_argument("--merge", nargs="+", type=Path, default=None, metavar="RESULTS_JSON",
                   help="instead of running, combine results files of the same preset run separately "
                        "(e.g. --seeds 0 on one machine, --seeds 1 on another) into --out")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress line is the output
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from gtapp.bench.benchmark import run_benchmark
    from gtapp.cli.progress_line import print_progress

    def pairs_of(items, flag):
        out = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"{flag} expects NAME=PATH, got {item!r}")
            name, path = item.split("=", 1)
            out[name] = path
        return out

    specs = pairs_of(args.private_dataset, "--private-dataset")
    shadow_specs = pairs_of(args.shadow_dataset, "--shadow-dataset")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    if args.merge:
        from gtapp.bench.benchmark import merge_results

        result = merge_results(args.merge, args.out, plot=args.plot)
        _print(result, args.out)
        return 0
    result = run_benchmark(args.preset, args.out, zoo_dir=args.zoo, work=args.work, seeds=seeds,
                           private_datasets=specs or None, shadow_datasets=shadow_specs or None, plot=args.plot,
                           progress=print_progress)
    _print(result, args.out)
    return 0


def _print(result: dict, out) -> None:
    from gtapp.bench import report

    print()
    print(report.format_table(result["summary"]))
    if result.get("comparisons"):
        print("\nPaired differences of NLL gap recovery (bootstrap over test examples, then seeds):")
        print(report.format_comparisons(result["comparisons"]))
    print("\nCost (TinyLM fine-tune + generation + refinement vs the LLM fine-tune):")
    print(report.format_cost(result["cost"]))
    print("\nTargets:")
    print(report.format_targets(result["targets"]))
    print(f"\nwrote {out} ({len(result['rows'])} rows, {result['timings'].get('total_s', float('nan')):.0f}s)")
