"""`gtapp zoo build|info`: build the TinyLM/LLM pair, or describe a built one."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("zoo", help="build or inspect a TinyLM/LLM model pair")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    b = zsub.add_parser("build", help="pretrain a TinyLM/LLM pair from scratch on generated text")
    b.add_argument("--preset", default="ci", help="micro | ci | demo | gpu")
    b.add_argument("--out", required=True, type=Path, help="folder to write tiny/, llm/, recipe.json")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)
    i = zsub.add_parser("info", help="show a built pair's sizes, losses and recipe")
    i.add_argument("dir", type=Path)
    i.set_defaults(func=_info)


def _build(args) -> int:
    from gtapp import zoo
    from gtapp.cli.progress_line import print_progress

    if args.preset not in zoo.PRESETS:
        raise ValueError(f"unknown preset '{args.preset}'; choose one of {', '.join(zoo.PRESETS)}")
    out = zoo.build(args.preset, args.out, seed=args.seed, progress=print_progress)
    print(json.dumps(json.loads((out / "zoo.json").read_text()), indent=2))
    return 0


def _info(args) -> int:
    from gtapp.lora.recipe import RecipePair

    info_path = args.dir / "zoo.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found: is {args.dir} a zoo folder built by `gtapp zoo build`?")
    info = json.loads(info_path.read_text())
    recipes = RecipePair.load(args.dir / "recipe.json")
    info.pop("preset_config", None)
    for which, r in (("tiny", recipes.tiny), ("llm", recipes.llm)):
        info[f"{which}_recipe"] = {"layers": r.num_layers, "targets": list(r.target_modules), "rank": r.rank,
                                   "alpha": r.alpha, "lora_modules": len(r.shapes),
                                   "base_fingerprint": r.base_fingerprint[:16], "init_fingerprint": r.init_fingerprint[:16]}
    print(json.dumps(info, indent=2))
    return 0
