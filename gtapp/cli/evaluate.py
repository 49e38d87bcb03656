"""`gtapp evaluate`: a zoo model (optionally with a peft adapter) on a task's test split;
prints the metric, the answer NLL and the wall time as JSON.

Examples:
    gtapp evaluate --zoo zoo/ci --which tiny --task math/add-fruit-easy --limit 64
    gtapp evaluate --zoo zoo/ci --which tiny --adapter runs/a --task math/add-fruit-easy
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a model (+ optional adapter) on a task",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", required=True, help="zoo folder holding tiny/, llm/ and recipe.json")
    p.add_argument("--which", choices=("tiny", "llm"), default="tiny", help="which model (default tiny)")
    p.add_argument("--adapter", default=None, help="a peft adapter folder (adapter_model.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="a generated task name (see `gtapp tasks list`)")
    src.add_argument("--dataset", help="your own JSONL/JSON/CSV/TSV file (its held-out split is scored)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the generated task / dataset split (default 0)")
    p.add_argument("--n-train", type=int, default=512,
                   help="train size of a generated task (its test split avoids train prompts; default 512)")
    p.add_argument("--n-test", type=int, default=128, help="test examples of a generated task (default 128)")
    p.add_argument("--metric", default="exact_match",
                   help="metric of a --dataset (exact_match, numeric_exact_match, letter_exact_match, rouge_l)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress line (or JSON) is the output
    from gtapp.evaluate import evaluate_paths
    from gtapp.models import ModelPair

    pair = ModelPair.from_dir(args.zoo)
    if args.task:
        from gtapp.tasks.universe import make_task

        task = make_task(args.task, seed=args.task_seed, n_train=args.n_train, n_test=args.n_test)
    else:
        from gtapp.datasets import load_user_dataset

        task = load_user_dataset(args.dataset, seed=args.task_seed, metric=args.metric)
    result = evaluate_paths(pair.path(args.which), task, adapter_dir=args.adapter, split=args.split,
                            limit=args.limit, batch_size=args.batch_size, device=args.device)
    result["which"] = args.which
    print(json.dumps(result, indent=2))
    return 0
