"""`gtapp finetune`: fine-tune a zoo model's LoRA (the recipe's seeded init) on a task or a
user dataset, optionally with DP-SGD; writes a peft adapter folder plus finetune.json.

Examples:
    gtapp finetune --zoo zoo/ci --which tiny --task math/add-fruit-easy --steps 100 --out runs/a
    gtapp finetune --zoo zoo/ci --task math/add-fruit-easy --dp-epsilon 4 --out runs/dp
    gtapp finetune --zoo zoo/ci --dataset mine.jsonl --snapshot-steps 50,100 --out runs/mine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model's LoRA adapter (optionally with DP-SGD)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", required=True, help="zoo folder holding tiny/, llm/ and recipe.json")
    p.add_argument("--which", choices=("tiny", "llm"), default="tiny", help="which model to fine-tune (default tiny)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="a generated task name (see `gtapp tasks list`)")
    src.add_argument("--dataset", help="your own JSONL/JSON/CSV/TSV file with prompt and answer fields")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the generated task / dataset split (default 0)")
    p.add_argument("--n-train", type=int, default=512, help="training examples of a generated task (default 512)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16, help="batch size (expected batch size under DP-SGD)")
    p.add_argument("--max-length", type=int, default=128, help="max tokens per example (prompt is cut first)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, DP noise)")
    dp = p.add_mutually_exclusive_group()
    dp.add_argument("--dp-epsilon", type=float, default=None, help="train with DP-SGD to this target epsilon")
    dp.add_argument("--noise-multiplier", type=float, default=None, help="train with DP-SGD at this noise multiplier")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="delta of the DP guarantee (default 1e-5)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="DP-SGD per-example clipping norm (default 1)")
    p.add_argument("--snapshot-steps", type=_int_list, default=(), help="save adapters at these steps, e.g. 10,20")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", required=True, help="output folder for the adapter and finetune.json")
    p.add_argument("--overwrite", action="store_true", help="replace a previous result in --out")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def load_examples(args):
    """The training examples and a short description of where they came from."""
    if args.task:
        from gtapp.tasks.universe import make_task

        task = make_task(args.task, seed=args.task_seed, n_train=args.n_train, n_test=1)
        return task.train, {"task": args.task, "task_seed": args.task_seed}
    from gtapp import datasets

    loader = getattr(datasets, "load_user_dataset", None)
    if loader is None:  # pragma: no cover - depends on the datasets module
        raise ValueError("--dataset is not available in this build (no gtapp.datasets.load_user_dataset)")
    task = loader(args.dataset, seed=args.task_seed)
    return task.train, {"dataset": str(args.dataset), "task_seed": args.task_seed}


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress line (or JSON) is the output
    from gtapp.cli.progress_line import print_progress
    from gtapp.finetune import DPConfig, FinetuneConfig, FinetuneError, finetune
    from gtapp.models import ModelPair

    pair = ModelPair.from_dir(args.zoo)
    dp = None
    if args.dp_epsilon is not None or args.noise_multiplier is not None:
        dp = DPConfig(target_epsilon=args.dp_epsilon, noise_multiplier=args.noise_multiplier,
                      delta=args.dp_delta, max_grad_norm=args.max_grad_norm)
    config = FinetuneConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, max_length=args.max_length,
                            seed=args.seed, dp=dp, snapshot_steps=args.snapshot_steps,
                            weight_decay=args.weight_decay, device=args.device)
    examples, source = load_examples(args)
    try:
        result = finetune(pair.path(args.which), pair.recipe(args.which), examples, config, Path(args.out),
                          progress=None if args.quiet else print_progress, overwrite=args.overwrite)
    except FinetuneError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = result.record
    summary = {
        "adapter_dir": str(result.adapter_dir), "which": args.which, **source,
        "examples": r["examples"], "steps": r["steps"], "seed": r["seed"],
        "dp": r["dp"], "epsilon": r["epsilon"], "delta": r["delta"],
        "noise_multiplier": r["noise_multiplier"], "sample_rate": r["sample_rate"],
        "loss_first": r["loss"]["first"], "loss_last": r["loss"]["last"],
        "snapshots": {str(k): str(v) for k, v in result.snapshots.items()}, "wall_s": r["wall_s"],
    }
    print(json.dumps(summary, indent=2))
    return 0
