"""``gtapp datasets``: list the real-dataset loaders and preview a dataset's files."""

from __future__ import annotations

import argparse
import textwrap

PREVIEW_CHARS = 700  # long prompts (DROP passages) are cut in previews


def register(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list real-dataset loaders; preview dataset files",
                              description=__doc__)
    sub = p.add_subparsers(dest="datasets_command", required=True)

    pl = sub.add_parser("list", help="names, metrics and descriptions of the dataset loaders")
    pl.add_argument("--files", action="store_true", help="also show the expected file names and schema")
    pl.set_defaults(func=cmd_list)

    ps = sub.add_parser("show", help="load a dataset from local files; print sizes and a few examples")
    ps.add_argument("name", help="a dataset name from 'gtapp datasets list', or 'user' for your own "
                                 "JSONL/CSV file with prompt and answer columns")
    ps.add_argument("--train", help="the training file")
    ps.add_argument("--test", help="the test file (without one, the training file is split by --seed)")
    ps.add_argument("--path", help="a folder holding the dataset's published file names")
    ps.add_argument("--n", type=int, default=3, help="examples to print from each split (default 3)")
    ps.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    ps.add_argument("--limit", type=int, default=None, help="cap each split at this many examples")
    ps.add_argument("--metric", default="exact_match",
                    help="metric of a 'user' dataset (exact_match, numeric_exact_match, "
                         "letter_exact_match, rouge_l)")
    ps.add_argument("--skip-invalid", action="store_true",
                    help="skip records of the wrong shape (listed) instead of stopping at the first")
    ps.add_argument("--hub", action="store_true", help="download from the hub if no files are given "
                                                      "(needs the 'datasets' package and a network)")
    ps.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    from gtapp.datasets import REGISTRY

    width = max(len(n) for n in REGISTRY)
    mwidth = max(len(s.metric_name) for s in REGISTRY.values())
    for name, spec in REGISTRY.items():
        print(f"{name:<{width}}  {spec.metric_name:<{mwidth}}  {spec.description}")
        if getattr(args, "files", False):
            print(f"{'':<{width}}  files: train {' | '.join(spec.train_files)}; "
                  f"test {' | '.join(spec.test_files)}")
            print(f"{'':<{width}}  schema: {spec.schema}")
    print(f"{'user':<{width}}  {'(chosen)':<{mwidth}}  your own JSONL/CSV file with prompt and answer "
          "columns ('datasets show user --train FILE')")
    return 0


def _indent(text: str, limit: int = PREVIEW_CHARS) -> str:
    if len(text) > limit:
        text = text[:limit].rstrip() + f" … [{len(text) - limit:,} more characters]"
    return textwrap.indent(text, "    ")


def cmd_show(args: argparse.Namespace) -> int:
    from gtapp.datasets import DatasetError, load, load_user_dataset

    if args.n < 0:
        raise DatasetError("--n must be >= 0")
    if args.name.lower() == "user":
        if not args.train:
            raise DatasetError("'datasets show user' needs --train FILE")
        task = load_user_dataset(args.train, seed=args.seed, test_path=args.test, metric=args.metric,
                                 limit=args.limit)
    else:
        if not (args.train or args.test or args.path or args.hub):
            raise DatasetError(f"give --train FILE [--test FILE] or --path FOLDER for {args.name!r}")
        task = load(args.name, args.train, args.test, path=args.path, limit=args.limit, seed=args.seed,
                    hub=args.hub, skip_invalid=args.skip_invalid)
    src = task.source
    print(f"{task.name}: {len(task.train):,} train, {len(task.test):,} test "
          f"(metric {task.metric}, family {task.family}, max_new_tokens {task.max_new_tokens})")
    for key in ("train_path", "test_path", "hub"):
        if src.get(key):
            print(f"  {key.replace('_path', '')}: {src[key]}")
    print(f"  split: {src.get('split', '?')}")
    if src.get("skipped"):
        print(f"  skipped {src['skipped']:,} record(s): empty answer/text or invalid")
        for msg in src.get("invalid", []):
            print(f"    {msg}")
    for split_name, examples in (("train", task.train), ("test", task.test)):
        for i, ex in enumerate(examples[: args.n]):
            print(f"\n--- {split_name} example {i + 1} ---")
            print("prompt:")
            print(_indent(ex.prompt))
            print("answer:")
            print(_indent(ex.answer))
            if ex.references:
                print("also accepted:")
                for r in ex.references:
                    print(_indent(r))
    return 0
