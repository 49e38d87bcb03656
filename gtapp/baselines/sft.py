"""Baselines trained by plain supervised fine-tuning through :func:`gtapp.finetune.finetune`.

* ``oracle`` — the LLM's LoRA fine-tuned on the private train data (upper bound; needs
  the private data, so it breaks the privacy setting).
* ``public_ft`` — the LLM's LoRA fine-tuned on the provider's public data only.
* ``weak_to_strong`` — the LLM's LoRA fine-tuned on the private prompts with the
  fine-tuned TinyLM's greedy answers as labels (never the gold answers).
* ``tiny_ft`` — the fine-tuned TinyLM itself (fine-tuned here when no adapter is given).

All use the model's recipe (seeded LoRA init) and the same :class:`Budget`; with a
:class:`~gtapp.baselines.selection.Selection` they first pick their learning rate and stopping
step on a held-out part of their own training examples (answer NLL there).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from gtapp.baselines.common import Budget, CostMeter, sft_tokens
from gtapp.baselines.selection import Selection, choose
from gtapp.data import encode, prompt_ids
from gtapp.evaluate import answer_nll, greedy_decode, load_with_adapter
from gtapp.finetune import DPConfig, FinetuneConfig, finetune
from gtapp.models import ModelPair, load_tokenizer
from gtapp.progress import ProgressFn
from gtapp.tasks.base import Example


def finetune_config(budget: Budget, seed: int, device: str = "cpu", dp: DPConfig | None = None) -> FinetuneConfig:
    return FinetuneConfig(steps=budget.steps, lr=budget.lr, batch_size=budget.batch_size,
                          max_length=budget.max_length, seed=seed, dp=dp, device=str(device))


def encoded_lengths(tokenizer, examples: Sequence[Example], max_length: int) -> list[int]:
    return [len(encode(tokenizer, e, max_length).input_ids) for e in examples]


def run_sft(model_path: str, recipe, examples: Sequence[Example], budget: Budget, out_dir: str | Path,
            seed: int, meter: CostMeter, progress: ProgressFn | None = None, device: str = "cpu",
            dp: DPConfig | None = None, overwrite: bool = False, selection: Selection | None = None) -> dict:
    """One fine-tune (after choosing lr and steps when ``selection`` is given); adds its
    training tokens to ``meter``; returns the fine-tune record."""
    examples = list(examples)
    chosen = None
    if selection is not None:
        if dp is not None:
            raise ValueError("learning-rate selection is for non-private baselines (it would spend privacy budget)")
        chosen = choose(selection, budget.steps, len(examples), seed,
                        lambda lr, tr, va, stops: _sft_curve(model_path, recipe, examples, tr, va, stops, lr,
                                                             budget, seed, meter, device))
        budget = replace(budget, lr=chosen.lr, steps=chosen.steps)
    res = _sft(model_path, recipe, examples, budget, Path(out_dir), seed, meter, progress, device, dp, overwrite)
    if chosen is not None:
        res["selection"] = chosen.to_dict() | {"procedure": selection.to_dict()}
    return res


def _sft(model_path, recipe, examples, budget, out_dir, seed, meter, progress, device, dp, overwrite,
         snapshot_steps=()) -> dict:
    cfg = replace(finetune_config(budget, seed, device, dp), snapshot_steps=tuple(snapshot_steps))
    res = finetune(model_path, recipe, examples, cfg, Path(out_dir), progress=progress, overwrite=overwrite)
    record = res.record
    if "tokens" in record:
        tokens = int(record["tokens"])
    elif dp is None:
        tokens = sft_tokens(encoded_lengths(load_tokenizer(model_path), examples, budget.max_length),
                            budget.steps, budget.batch_size, seed)
    else:  # Poisson batches: expected size batch_size; mean encoded length
        lengths = encoded_lengths(load_tokenizer(model_path), examples, budget.max_length)
        tokens = round(budget.steps * budget.batch_size * sum(lengths) / len(lengths))
    meter.add_tokens(tokens, "train")
    return {"adapter_dir": str(res.adapter_dir), "finetune_wall_s": record.get("wall_s"),
            "loss": record.get("loss"), "examples": record.get("examples"),
            "data_fingerprint": record.get("data_fingerprint"), "epsilon": record.get("epsilon"),
            "steps": budget.steps, "batch_size": budget.batch_size, "lr": budget.lr,
            "snapshots": {int(k): str(Path(out_dir) / v) for k, v in record.get("snapshots", {}).items()}}


def _sft_curve(model_path, recipe, examples, train_idx, val_idx, stops, lr, budget, seed, meter, device) -> dict:
    """Held-out answer NLL at each stopping step of one fine-tune on the training part."""
    work = Path(tempfile.mkdtemp(prefix="gtapp_select_"))
    try:
        train = [examples[i] for i in train_idx]
        val = [examples[i] for i in val_idx]
        rec = _sft(model_path, recipe, train, replace(budget, lr=lr, steps=stops[-1]), work, seed, meter, None,
                   device, None, True, snapshot_steps=stops[:-1])
        folders = {**rec["snapshots"], stops[-1]: rec["adapter_dir"]}
        curve = {}
        for step in stops:
            model, tok = load_with_adapter(model_path, folders[step], device=device)
            curve[step], _ = answer_nll(model, tok, val, max_length=budget.max_length)
            meter.add_tokens(sum(encoded_lengths(tok, val, budget.max_length)), "selection")
        return curve
    finally:
        shutil.rmtree(work, ignore_errors=True)


def teacher_labels(pair: ModelPair, tiny_adapter_dir: str | Path, examples: Sequence[Example],
                   max_new_tokens: int, meter: CostMeter, max_length: int = 256, batch_size: int = 32,
                   device: str = "cpu") -> list[Example]:
    """The private prompts labelled with the fine-tuned TinyLM's greedy answers.

    Generative examples keep their prompt. Language-modelling examples (empty prompt) are
    split: the first half of the text's tokens becomes the prompt and the TinyLM continues it
    for as many tokens as the second half had (so the gold continuation is never a label).
    """
    teacher, tokenizer = load_with_adapter(pair.tiny_path, tiny_adapter_dir, device=device)
    prompts, budgets = [], []
    for e in examples:
        if e.prompt:
            prompts.append(e.prompt)
            budgets.append(max_new_tokens)
        else:
            ids = tokenizer(e.answer, add_special_tokens=False)["input_ids"][:max_length]
            half = max(1, len(ids) // 2)
            prompts.append(tokenizer.decode(ids[:half]))
            budgets.append(max(1, len(ids) - half))
    out: list[tuple[int, Example]] = []
    # Group by generation length so each group is one greedy_decode() call.
    for n_new in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == n_new]
        gens = greedy_decode(teacher, tokenizer, [prompts[i] for i in idx], n_new, batch_size=batch_size)
        for i, g in zip(idx, gens):
            out.append((i, Example(prompts[i], g)))
            meter.add_tokens(len(prompt_ids(tokenizer, prompts[i])) or 1, "teacher_generate")
            meter.add_tokens(len(tokenizer(g, add_special_tokens=False)["input_ids"]) + 1, "teacher_generate")
    del teacher
    return [e for _, e in sorted(out, key=lambda x: x[0])]
