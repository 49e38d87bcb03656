"""The ``gtapp`` command line. Each sub-command lives in its own module under ``gtapp.cli``
and exposes ``register(subparsers)``; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module). A module's register() adds its parser with set_defaults(func=...).
COMMANDS = [
    ("zoo", "gtapp.cli.zoo"),
    ("tasks", "gtapp.cli.tasks"),
    ("datasets", "gtapp.cli.datasets"),
    ("finetune", "gtapp.cli.finetune"),
    ("evaluate", "gtapp.cli.evaluate"),
    ("update", "gtapp.cli.update"),
    ("jobs", "gtapp.cli.jobs"),
    ("admin", "gtapp.cli.admin"),
    ("shadow", "gtapp.cli.shadow"),
    ("mapper", "gtapp.cli.mapper"),
    ("generate", "gtapp.cli.generate"),
    ("collab", "gtapp.cli.collab"),
    ("bench", "gtapp.cli.bench"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtapp", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for _, module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:  # user errors: say what was wrong, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
