"""`gtapp mapper train|info|eval`: train a mapper version on a pair set, describe it, score it."""

from __future__ import annotations

import json
from pathlib import Path


def _config(pairs: list[str]) -> dict:
    """--set key=value (value parsed as JSON when it parses, else kept as text)."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def register(sub) -> None:
    p = sub.add_parser("mapper", help="train, inspect or score TinyLM->LLM update mappers")
    msub = p.add_subparsers(dest="mapper_command", required=True)
    t = msub.add_parser("train", help="fit a mapper on a pair set and save a mapper version folder")
    t.add_argument("--pairs", required=True, type=Path, help="pair set folder (`gtapp shadow`)")
    t.add_argument("--kind", default="gt", choices=["gt", "ridge", "mean"])
    t.add_argument("--out", required=True, type=Path, help="mapper version folder to write")
    t.add_argument("--tasks", default="", help="train only on these tasks (comma-separated; default all)")
    t.add_argument("--exclude-tasks", default="", help="hold these tasks out entirely")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="mapper config, e.g. --set steps=500 --set d_model=64 (see `gtapp mapper defaults`)")
    t.set_defaults(func=_train)
    d = msub.add_parser("defaults", help="print a mapper kind's default config")
    d.add_argument("--kind", default="gt", choices=["gt", "ridge", "mean"])
    d.set_defaults(func=_defaults)
    i = msub.add_parser("info", help="print a mapper version's model card")
    i.add_argument("dir", type=Path)
    i.set_defaults(func=_info)
    e = msub.add_parser("eval", help="relative error and cosine of a mapper on (held-out) pairs")
    e.add_argument("--mapper", required=True, type=Path)
    e.add_argument("--pairs", required=True, type=Path)
    e.add_argument("--tasks", default="", help="only pairs of these tasks")
    e.set_defaults(func=_eval)
    s = msub.add_parser("scaling", help="held-out quality against the number of shadow runs trained on")
    s.add_argument("--pairs", required=True, type=Path)
    s.add_argument("--kinds", default="mean,ridge,gt", help="comma-separated mapper kinds")
    s.add_argument("--runs", default="2,4,8,16", help="comma-separated numbers of training runs")
    s.add_argument("--holdout-tasks", default="", help="test on these tasks (cross-task); default: held-out runs")
    s.add_argument("--holdout-fraction", type=float, default=0.25, help="fraction of runs held out (in-distribution)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config for every kind that knows the key")
    s.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    s.set_defaults(func=_scaling)


def _tasks(text: str):
    return [x.strip() for x in text.split(",") if x.strip()] or None


def _train(args) -> int:
    from gtapp.cli.progress_line import print_progress
    from gtapp.mapper import make_mapper
    from gtapp.pairset import PairSet

    ps = PairSet.load(args.pairs)
    tasks = _tasks(args.tasks) or ps.tasks()
    tasks = [t for t in tasks if t not in (_tasks(args.exclude_tasks) or [])]
    pairs = ps.select(tasks=tasks)
    if not pairs:
        raise ValueError(f"no pairs of tasks {tasks} in {args.pairs}")
    mapper = make_mapper(args.kind, ps.recipes, _config(args.set))
    card = mapper.fit(pairs, progress=print_progress)
    card["pair_set"] = {**ps.summary(), "path": str(args.pairs), "tasks_used": tasks, "n_pairs_used": len(pairs)}
    mapper.card = card
    mapper.save(args.out)
    card = dict(mapper.card)
    card.get("fit", {}).pop("history", None)
    print(json.dumps(card, indent=2, default=str))
    return 0


def _defaults(args) -> int:
    from gtapp.mapper import mapper_classes

    print(json.dumps(mapper_classes()[args.kind].default_config(), indent=2))
    return 0


def _info(args) -> int:
    from gtapp.mapper import read_card

    card = read_card(args.dir)
    card.get("fit", {}).pop("history", None)
    print(json.dumps(card, indent=2))
    return 0


def _eval(args) -> int:
    from gtapp.mapper import load_mapper
    from gtapp.pairset import PairSet

    mapper = load_mapper(args.mapper)
    ps = PairSet.load(args.pairs)
    pairs = ps.select(tasks=_tasks(args.tasks))
    res = mapper.evaluate(pairs)
    res.pop("per_pair")
    print(json.dumps({"mapper": str(args.mapper), "pairs": str(args.pairs), **res}, indent=2))
    return 0


def _scaling(args) -> int:
    from gtapp.mapper import learning_curve, mapper_classes, split_by_run
    from gtapp.pairset import PairSet

    ps = PairSet.load(args.pairs)
    held = _tasks(args.holdout_tasks)
    if held:
        unknown = set(held) - set(ps.tasks())
        if unknown:
            raise ValueError(f"tasks {sorted(unknown)} are not in the pair set")
        train = ps.select(tasks=[t for t in ps.tasks() if t not in held])
        test = ps.select(tasks=held)
    else:
        train, test = split_by_run(list(ps), args.holdout_fraction, seed=123)
    config = _config(args.set)
    rows = []
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        known = mapper_classes()[kind].default_config()
        cfg = {k: v for k, v in config.items() if k in known}
        rows += learning_curve(kind, ps.recipes, train, test, [int(x) for x in args.runs.split(",")], cfg)
    print(f"{'kind':<6} {'runs':>5} {'pairs':>6} {'rel_err':>8} {'cosine':>7}")
    for r in rows:
        print(f"{r['kind']:<6} {r['runs']:>5} {r['pairs']:>6} {r['rel_err_mean']:>8.3f} {r['cosine_mean']:>7.3f}")
    if args.out:
        args.out.write_text(json.dumps({"pairs": str(args.pairs), "version": ps.version,
                                        "protocol": "cross-task" if held else "held-out runs", "rows": rows}, indent=2))
    return 0
