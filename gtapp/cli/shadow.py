"""`gtapp shadow`: make (or resume) a set of shadow (TinyLM update, LLM update) pairs."""

from __future__ import annotations

import json
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip()) if text else ()


def register(sub) -> None:
    p = sub.add_parser("shadow", help="fine-tune TinyLM and LLM on shadow subsets: a resumable pair set",
                       description="Both models of a zoo pair are fine-tuned from their recipes on the same "
                                   "bootstrap subsets of the tasks' train splits; every snapshot step gives a pair. "
                                   "Rerunning the same command resumes: finished runs are skipped.")
    p.add_argument("--out", required=True, type=Path, help="pair set folder (created, or resumed)")
    p.add_argument("--zoo", type=Path, help="model pair folder (tiny/, llm/, recipe.json)")
    p.add_argument("--tasks", default="", help="comma-separated task names (`gtapp tasks list`)")
    p.add_argument("--subsets", type=int, default=4, help="bootstrap subsets per task")
    p.add_argument("--subset-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="fine-tune steps per run")
    p.add_argument("--snapshot-steps", default="", help="comma-separated steps kept as extra pairs")
    p.add_argument("--seeds", default="0", help="comma-separated fine-tune seeds (one run per subset and seed)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--llm-lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--n-train", type=int, default=512, help="size of each task's train split")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", choices=("batched", "per_run"), default="batched",
                   help="batched: many runs of a model in one pass (default); per_run: one fine-tune per run")
    p.add_argument("--batch-runs", type=int, default=16, help="runs per batched pass")
    p.add_argument("--summary", action="store_true", help="only print the existing pair set's summary")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from gtapp.pairset import PairSet
    from gtapp.shadow import ShadowConfig, make_pairs

    if args.summary:
        print(json.dumps(PairSet.load(args.out).summary(), indent=2))
        return 0
    if args.zoo is None or not args.tasks:
        raise ValueError("--zoo and --tasks are required to generate pairs (or pass --summary)")
    from gtapp.cli.progress_line import print_progress
    from gtapp.tasks.universe import task_names

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    known = set(task_names())
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; `gtapp tasks list` shows them")
    cfg = ShadowConfig(tasks=tasks, subsets=args.subsets, subset_size=args.subset_size, steps=args.steps,
                       snapshot_steps=_ints(args.snapshot_steps), seeds=_ints(args.seeds), lr=args.lr,
                       llm_lr=args.llm_lr, batch_size=args.batch_size, max_length=args.max_length,
                       n_train=args.n_train, task_seed=args.task_seed, device=args.device, engine=args.engine,
                       batch_runs=args.batch_runs)
    ps = make_pairs(args.zoo, cfg, args.out, progress=print_progress)
    print(json.dumps(ps.summary(), indent=2))
    return 0
