"""``gtapp update``: validate an uploaded adapter, extract its update vector, show an update file.

    gtapp update validate --adapter PATH --zoo DIR --which tiny|llm [--json]
    gtapp update extract  --adapter PATH --zoo DIR --which tiny --out FILE.safetensors
    gtapp update show FILE [--json]

``--recipe FILE`` (a recipe.json) may replace ``--zoo DIR``. ``PATH`` is an adapter folder,
a ``.zip`` of one, or (repeat ``--adapter``) its two files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _recipe(args):
    from gtapp.lora.recipe import RecipePair

    source = args.recipe if args.recipe else Path(args.zoo) / "recipe.json"
    pair = RecipePair.load(source)
    return pair.tiny if args.which == "tiny" else pair.llm


def _source(args):
    return args.adapter[0] if len(args.adapter) == 1 else list(args.adapter)


def _add_recipe_args(p: argparse.ArgumentParser, default_which: str | None) -> None:
    p.add_argument("--adapter", action="append", required=True, metavar="PATH",
                   help="adapter folder, .zip, or (repeated) adapter_config.json + adapter_model.safetensors")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--zoo", help="zoo folder holding recipe.json")
    src.add_argument("--recipe", help="a recipe.json file")
    p.add_argument("--which", choices=["tiny", "llm"], default=default_which, required=default_which is None,
                   help="which model's recipe the adapter is for")


def cmd_validate(args) -> int:
    from gtapp.lora.validate import AdapterError, validate_adapter

    recipe = _recipe(args)
    try:
        summary = validate_adapter(_source(args), recipe)
    except AdapterError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        else:
            print(f"adapter refused: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": True, **summary.to_dict()}, indent=2) if args.json else summary.format())
    return 0


def cmd_extract(args) -> int:
    from gtapp.lora.update import UpdateVector
    from gtapp.lora.validate import AdapterError

    recipe = _recipe(args)
    try:
        update = UpdateVector.from_adapter(_source(args), recipe)
    except AdapterError as e:
        print(f"adapter refused: {e}", file=sys.stderr)
        return 2
    out = update.save(args.out)
    print(f"wrote {out} (+ {out.with_suffix('.json').name}): {len(update.modules)} modules, "
          f"‖ΔW‖_F = {update.frobenius_norm():.6g}")
    return 0


def cmd_show(args) -> int:
    from gtapp.lora.update import UpdateVector

    update = UpdateVector.load(args.file)
    s = update.summary()
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    fp = s["recipe_fingerprints"]
    print(f"{args.file}: {s['modules']} modules, rank(s) {s['ranks']}, {s['parameters']} parameters, "
          f"‖ΔW‖_F = {s['frobenius_norm']:.6g}")
    if fp:
        print(f"  recipe {str(fp.get('recipe'))[:12]}  base {str(fp.get('base_fingerprint'))[:12]}  "
              f"init {str(fp.get('init_fingerprint'))[:12]}  r={fp.get('rank')} alpha={fp.get('alpha')}")
    print(f"  source: {update.meta.get('source')}" + (
        f", dropped energy {update.meta['dropped_energy']:.3g}" if "dropped_energy" in update.meta else ""))
    for m, mu in update.modules.items():
        print(f"  {m:48s} {mu.shape[0]}x{mu.shape[1]} r={mu.rank}  ‖ΔW‖={mu.norm():.4g}  "
              f"‖ΔA‖={float(mu.delta_a.norm()):.4g}  ‖B‖={float(mu.b.norm()):.4g}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("update", help="validate adapters and work with update vectors",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="update_command", required=True)

    v = sub.add_parser("validate", help="check an uploaded adapter against a recipe")
    _add_recipe_args(v, None)
    v.add_argument("--json", action="store_true", help="print the summary (or error) as JSON")
    v.set_defaults(func=cmd_validate)

    e = sub.add_parser("extract", help="validate an adapter and save its update vector")
    _add_recipe_args(e, "tiny")
    e.add_argument("--out", required=True, help="output FILE.safetensors (a FILE.json sidecar is written too)")
    e.set_defaults(func=cmd_extract)

    s = sub.add_parser("show", help="describe an update file")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
