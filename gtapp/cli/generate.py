"""`gtapp generate`: TinyLM adapter(s) -> LLM adapter with a trained mapper."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("generate", help="map TinyLM adapter(s) to a stock peft LLM adapter",
                       description="Validates each TinyLM adapter against the mapper's recipe, maps it (several: "
                                   "combined), writes a peft adapter for the LLM, and reports an OOD score and timing.")
    p.add_argument("--mapper", required=True, type=Path, help="mapper version folder (`gtapp mapper train`)")
    p.add_argument("--tiny-adapter", required=True, action="append", type=Path,
                   help="TinyLM adapter folder or .zip; repeat for several organisations")
    p.add_argument("--weight", action="append", type=float,
                   help="weight of each --tiny-adapter, in the same order (default: data size from finetune.json)")
    p.add_argument("--zoo", type=Path, help="model pair folder; its recipes must be the mapper's")
    p.add_argument("--llm", default=None, help="LLM path or hub id (default: ZOO/llm)")
    p.add_argument("--out", required=True, type=Path, help="folder for the LLM adapter")
    p.add_argument("--merged", action="store_true", help="also save the merged LLM in OUT/merged")
    p.add_argument("--organisation", default="average_then_map", choices=["average_then_map", "map_then_average"])
    p.add_argument("--method", default="mean", choices=["mean", "median", "clip"],
                   help="how several updates are combined (median/clip resist a hostile update)")
    p.add_argument("--refine", nargs="?", const="always", default=None, choices=["always", "auto"],
                   help="then refine the adapter towards the proxy-tuned distribution on the provider's text "
                        "(gtapp.refine; one TinyLM adapter, needs --zoo; DP carries over by post-processing); "
                        "'auto': only where the update's task score is above gtapp.refine.AUTO_REFINE_TASK_OOD, "
                        "and then towards the base LLM's proxy-tuning, not proxy-tuning over the mapped adapter")
    p.add_argument("--pairs", type=Path, default=None,
                   help="with --refine: the pair set whose shadow tasks give the provider's text (default: the "
                        "one the mapper's card names)")
    p.add_argument("--refine-prompts", type=Path, default=None, metavar="FILE",
                   help="with --refine: a file of your *public* prompts (the --dataset formats of `gtapp finetune`; "
                        "answers are not read) that the refinement's samples are written after instead of the "
                        "provider's prompts; nothing is charged for them, so never give private data here")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from gtapp.generate import generate

    if args.refine and (args.zoo is None or len(args.tiny_adapter) != 1):
        print("error: --refine needs --zoo and exactly one --tiny-adapter", file=sys.stderr)
        return 2
    if args.refine_prompts is not None and not args.refine:
        print("error: --refine-prompts gives the refinement its prompts: add --refine", file=sys.stderr)
        return 2
    out = args.out / "mapped" if args.refine else args.out
    res = generate(args.mapper, [str(a) for a in args.tiny_adapter], out, weights=args.weight, zoo=args.zoo,
                   llm_path=args.llm, merged=args.merged and not args.refine, organisation=args.organisation,
                   method=args.method)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    report = {"adapter_dir": str(res.adapter_dir), "merged_dir": str(res.merged_dir) if res.merged_dir else None,
              "ood": res.ood, "warnings": res.warnings, "timing": res.timing}
    if args.refine:
        from gtapp.refine import refine_wanted

        wanted, why = refine_wanted(args.refine, res.ood[0] if res.ood and isinstance(res.ood[0], dict) else None)
        print(f"refine={args.refine}: {why}", file=sys.stderr)
        report["refine"] = {"mode": args.refine, "refined": wanted, "reason": why}
        if wanted:
            report["refine"].update(_refine(args, res.adapter_dir))
            report["adapter_dir"] = str(args.out)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _refine(args, mapped_dir: Path) -> dict:
    from gtapp.mapper.registry import load_mapper
    from gtapp.models import ModelPair
    from gtapp.pairset import PairSet
    from gtapp.refine import RefineConfig, mode_config, provider_text, public_prompts, refine

    pairs = args.pairs
    if pairs is None:
        pairs = Path(((load_mapper(args.mapper).card or {}).get("pair_set") or {}).get("path") or "")
    if not (pairs / "pairset.json").is_file():
        raise SystemExit(f"error: --refine needs the provider's text: give --pairs (a pair set folder); "
                         f"'{pairs}' is not one")
    text = provider_text(PairSet.load(pairs).manifest, limit=1024, seed=args.seed)
    prompts = None
    if args.refine_prompts is not None:
        from gtapp.datasets import load_user_dataset

        own = load_user_dataset(args.refine_prompts, seed=args.seed)
        prompts = public_prompts(own.train + own.test)
    rec = refine(ModelPair.from_dir(args.zoo), args.tiny_adapter[0], text, args.out,
                 mode_config(args.refine, RefineConfig(steps=args.refine_steps, seed=args.seed)),
                 start_adapter=mapped_dir, organisation_prompts=prompts)
    return {k: rec[k] for k in ("lr", "steps", "text", "privacy", "wall_s", "final_loss", "teacher")}
