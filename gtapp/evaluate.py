"""Evaluating a causal LM (optionally with a LoRA adapter) on a task.

* :func:`answer_nll` — mean negative log-likelihood (nats) per answer token (answer + EOS,
  the tokens the fine-tune is trained on; every token for language modelling);
  :func:`example_nlls` the same per example (summed NLL and token count), what a paired
  bootstrap over test examples needs.
* :func:`generate` — greedy, left-padded batch generation up to EOS or ``max_new_tokens``;
  cutting at the first newline (single-line answers) is the task's ``extract``.
* :func:`evaluate` — the task's metric on a split: ``task.score(generations, examples)``
  for generative tasks, ``exp(answer NLL)`` (perplexity) for language modelling; with
  ``per_example=True`` also each example's score, NLL sum and token count. Examples longer
  than ``max_length`` lose the oldest prompt tokens (never the answer, see gtapp.data); how
  many were cut is reported (``n_truncated``).
* :func:`load_with_adapter` / :func:`evaluate_paths` — the same from folder paths.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from gtapp.lora.peft_format import CONFIG_NAME, WEIGHTS_NAME
from gtapp.data import IGNORE_INDEX, EncodedDataset, _pad_id, iter_batches, prompt_ids
from gtapp.progress import ProgressFn, Tracker
from gtapp.tasks.base import Example, Task



def sequence_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed next-token NLL over labelled positions, and their token counts.

    Each row's value depends on that row only (what DP-SGD's per-example clipping needs).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    target = labels[:, 1:]
    logits = logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
    counts = (target != IGNORE_INDEX).sum(dim=1)
    return nll.sum(dim=1), counts


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def example_nlls(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 32,
                 max_length: int = 256) -> tuple[list[float], list[int], int]:
    """Per example: (summed answer-token NLL in nats, answer-token count), and how many
    examples were cut to ``max_length`` (oldest prompt tokens first)."""
    if not examples:
        return [], [], 0
    was_training = model.training
    model.eval()
    device = _device(model)
    ds = EncodedDataset(tokenizer, examples, max_length=max_length)
    sums: list[float] = []
    counts: list[int] = []
    try:
        for ids, mask, labels in iter_batches(ds, batch_size):
            s, n = sequence_nll(model, ids.to(device), mask.to(device), labels.to(device))
            sums += [float(x) for x in s]
            counts += [int(x) for x in n]
    finally:
        model.train(was_training)
    return sums, counts, ds.n_truncated


def answer_nll(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 32,
               max_length: int = 256) -> tuple[float, int]:
    """(mean NLL in nats per answer token, number of answer tokens) over ``examples``."""
    sums, counts, _ = example_nlls(model, tokenizer, examples, batch_size, max_length)
    total, count = sum(sums), sum(counts)
    return (total / count if count else float("nan")), count


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  batch_size: int = 32, max_prompt_tokens: Optional[int] = None) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded new text only, stopped at EOS). A prompt
    longer than ``max_prompt_tokens`` keeps its last tokens (the ones next to the answer)."""
    if max_new_tokens <= 0:
        return ["" for _ in prompts]
    was_training = model.training
    model.eval()
    device = _device(model)
    pad = _pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
            if max_prompt_tokens is not None:
                chunk = [c[-max_prompt_tokens:] for c in chunk]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):  # left padding
                ids[i, width - len(c):] = torch.tensor(c)
                mask[i, width - len(c):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad, eos_token_id=eos)
            for row in gen[:, width:].tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                out.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def evaluate(model: torch.nn.Module, tokenizer, task: Task, split: str = "test", limit: Optional[int] = None,
             batch_size: int = 32, max_length: int = 256, per_example: bool = False,
             progress: Optional[ProgressFn] = None) -> dict:
    """The task's metric on ``split`` (first ``limit`` examples), plus answer NLL and wall time.

    Returns ``{"task", "split", "metric", "value", "answer_nll", "n", "n_tokens", "n_truncated",
    "wall_s"}``; ``value`` is the task score for generative tasks and exp(answer NLL) for
    perplexity. ``per_example`` adds ``"examples": {"score": [...], "nll_sum": [...],
    "n_tokens": [...]}`` (score is None for perplexity, whose value is a ratio over all tokens).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    examples = list(getattr(task, split))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        examples = examples[:limit]
    if not examples:
        raise ValueError(f"task '{task.name}' has no {split} examples")
    t0 = time.monotonic()
    # batch by batch (the same batches as one call: the numbers do not change) to report progress;
    # decoding costs several forward passes per batch, so it weighs more than the NLL pass
    decode_weight = 4 if task.generative else 0
    tracker = Tracker(progress, "evaluating", len(examples) * (1 + decode_weight))
    sums, counts, n_truncated = [], [], 0
    for start in range(0, len(examples), batch_size):
        s_, c_, t_ = example_nlls(model, tokenizer, examples[start:start + batch_size], batch_size=batch_size,
                                  max_length=max_length)
        sums, counts, n_truncated = sums + s_, counts + c_, n_truncated + t_
        tracker.update(len(sums))
    n_tokens = sum(counts)
    nll = sum(sums) / n_tokens if n_tokens else float("nan")
    scores: list = [None] * len(examples)
    if task.generative:
        gens = []
        for start in range(0, len(examples), batch_size):
            gens += greedy_decode(model, tokenizer, [e.prompt for e in examples[start:start + batch_size]],
                                  task.max_new_tokens, batch_size=batch_size,
                                  max_prompt_tokens=max(1, max_length - task.max_new_tokens))
            tracker.update(len(examples) + decode_weight * len(gens))
        scores = [float(task.score([g], [e])) for g, e in zip(gens, examples)]
        value = sum(scores) / len(scores)
    else:
        value = math.exp(nll) if math.isfinite(nll) else float("nan")
    out = {"task": task.name, "split": split, "metric": task.metric_name, "value": value,
           "answer_nll": nll, "n": len(examples), "n_tokens": n_tokens, "n_truncated": n_truncated,
           "wall_s": round(time.monotonic() - t0, 3)}
    if per_example:
        out["examples"] = {"score": scores, "nll_sum": sums, "n_tokens": counts}
    return out


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """A peft adapter folder with safetensors weights (never a pickle)."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {d}")
    if not (d / CONFIG_NAME).is_file():
        raise ValueError(f"{d}: no {CONFIG_NAME} (not a peft adapter folder)")
    if not (d / WEIGHTS_NAME).is_file():
        raise ValueError(f"{d}: no {WEIGHTS_NAME}; only safetensors adapters are loaded (never pickles)")
    return d


def load_with_adapter(model_path: str | Path, adapter_dir: str | Path | None = None,
                      device: str | torch.device = "cpu"):
    """(model, tokenizer): the base model at ``model_path``, with the peft adapter in
    ``adapter_dir`` applied via ``PeftModel.from_pretrained`` when given."""
    from peft import PeftModel

    from gtapp.models import load_model, load_tokenizer

    model = load_model(model_path, device=device)
    tokenizer = load_tokenizer(model_path)
    if adapter_dir is not None:
        d = check_adapter_dir(adapter_dir)
        model = PeftModel.from_pretrained(model, str(d), is_trainable=False).to(device)
        model.eval()
    return model, tokenizer


def evaluate_paths(model_path: str | Path, task: Task, adapter_dir: str | Path | None = None,
                   split: str = "test", limit: Optional[int] = None, batch_size: int = 32,
                   device: str | torch.device = "cpu", per_example: bool = False,
                   progress: Optional[ProgressFn] = None) -> dict:
    """Load ``model_path`` (+ optional adapter) and :func:`evaluate` it on ``task``."""
    t0 = time.monotonic()
    model, tokenizer = load_with_adapter(model_path, adapter_dir, device=device)
    result = evaluate(model, tokenizer, task, split=split, limit=limit, batch_size=batch_size,
                      per_example=per_example, progress=progress)
    result.update({"model": str(model_path), "adapter": str(adapter_dir) if adapter_dir is not None else None,
                   "total_wall_s": round(time.monotonic() - t0, 3)})
    return result
