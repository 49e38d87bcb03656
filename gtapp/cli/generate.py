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
    p.set_defaults(func=_run)


def _run(args) -> int:
    from gtapp.generate import generate

    res = generate(args.mapper, [str(a) for a in args.tiny_adapter], args.out, weights=args.weight, zoo=args.zoo,
                   llm_path=args.llm, merged=args.merged, organisation=args.organisation, method=args.method)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps({"adapter_dir": str(res.adapter_dir), "merged_dir": str(res.merged_dir) if res.merged_dir else None,
                      "ood": res.ood, "warnings": res.warnings, "timing": res.timing}, indent=2, default=str))
    return 0
