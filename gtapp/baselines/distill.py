"""Distillation from the fine-tuned TinyLM (teacher) into an LLM LoRA (student).

* ``kd_logit`` — word-level logit distillation on the organisation's private data: the
  sequences are the private **prompts + gold answers** (tokenised by :mod:`gtapp.data`,
  exactly as the oracle's fine-tune sees them), and the loss is
  ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` averaged over the answer (+EOS)
  positions — the positions the fine-tunes are trained on. No cross-entropy on the gold
  tokens: the gold answer is only the context the teacher is queried in.
  (``targets="teacher"`` uses the teacher's own greedy answers instead of the gold ones.)
* ``datafree_kd`` — no private data at all: texts are **sampled** from the fine-tuned
  TinyLM (temperature sampling from a document start, i.e. EOS, or from given generic
  prefixes) and the same KL is applied on every sampled position.

Both attach the LLM recipe's seeded LoRA (:func:`gtapp.models.attach_lora`) and train it
with the oracle's budget and optimiser (same optimizer steps x batch size, same constant
learning rate, AdamW without weight decay, the same epoch-wise shuffled batches as
:mod:`gtapp.finetune`), then save a stock peft adapter (safetensors) in ``out_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from gtapp.baselines.common import (
    Budget,
    CostMeter,
    batch_indices,
    cut_at_eos,
    decode,
    left_pad,
    model_step,
)
from gtapp.baselines.selection import Selection, choose
from gtapp.data import IGNORE_INDEX, EncodedDataset, _pad_id, iter_batches, prompt_ids
from gtapp.lora.peft_model import attach_lora
from gtapp.models import load_model
from gtapp.progress import ProgressFn, Tracker
from gtapp.lora.recipe import LoraRecipe
from gtapp.tasks.base import Example


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target_mask: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Mean over target positions of T^2 KL(p_teacher^T || p_student^T).

    ``*_logits`` are [B, L, V] from one forward pass over the same ids; ``target_mask`` [B, L]
    marks the tokens to distil (position t's distribution is read from logits at t - 1).
    """
    return kd_loss_at_targets(student_logits, at_targets(teacher_logits, target_mask), target_mask, temperature)


def at_targets(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """[n_targets, V] (float): the logits that predict each target token of ``target_mask``."""
    return logits[:, :-1][target_mask[:, 1:].bool()].float()


def kd_loss_at_targets(student_logits: torch.Tensor, teacher_targets: torch.Tensor, target_mask: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """:func:`kd_loss` with the teacher's logits already read at the targets (:func:`at_targets`)."""
    m = target_mask[:, 1:].bool()
    if not bool(m.any()):
        return student_logits.sum() * 0.0
    s = student_logits[:, :-1][m].float() / temperature
    t = teacher_targets / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    return kl * temperature * temperature


class TeacherTargets:
    """The fixed teacher's logits at a batch's targets, computed once per batch of rows.

    The selection's candidate learning rates train on the same batches of the same rows and
    score the same held-out rows at every checkpoint; without this each of them ran the
    teacher (an LLM and two TinyLMs for proxy-tuning) again on identical input. On a ci
    refinement that was about a third of its time: cached, it takes 0.68x as long and runs
    0.63x the tokens. The same ids give the same logits, so results are unchanged. Batches are
    keyed by their rows' indices; the cache (on the teacher's device) stops growing at ``max_mb``.
    """

    def __init__(self, teacher: torch.nn.Module, meter: CostMeter, max_mb: float = 1024):
        self.teacher, self.meter = teacher.eval(), meter
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.free_bytes = int(max_mb * 2 ** 20)
        self.computed = 0  # teacher forward passes run

    @torch.no_grad()
    def __call__(self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        key = tuple(int(i) for i in rows)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        out = at_targets(self.teacher(input_ids=ids, attention_mask=mask).logits, tgt)
        self.meter.add_tokens(int(mask.sum()), "teacher")
        self.computed += 1
        if out.numel() * out.element_size() <= self.free_bytes:
            self.cache[key] = out
            self.free_bytes -= out.numel() * out.element_size()
        return out


@torch.no_grad()
def kl_to_teacher(student: torch.nn.Module, teacher: torch.nn.Module, tokenizer, examples: Sequence[Example],
                  temperature: float = 1.0, batch_size: int = 32, max_length: int = 256) -> float:
    """Mean KL(teacher || student) per answer token on ``examples`` (prompt + gold answer)."""
    ds = EncodedDataset(tokenizer, examples, max_length=max_length)
    total, count = 0.0, 0
    for model in (student, teacher):
        model.eval()
    dev = next(student.parameters()).device
    for ids, mask, labels in iter_batches(ds, batch_size):
        ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
        target = labels != IGNORE_INDEX
        n = int(target[:, 1:].sum())
        if n == 0:
            continue
        s = student(input_ids=ids, attention_mask=mask).logits
        t = teacher(input_ids=ids, attention_mask=mask).logits
        total += float(kd_loss(s, t, target, temperature)) * n
        count += n
    return total / count if count else float("nan")


def encoded_examples(tokenizer, examples: Sequence[Example], max_length: int):
    """(input_ids, attention_mask, target_mask) right-padded, targets = answer + EOS."""
    ds = EncodedDataset(tokenizer, list(examples), max_length=max_length)
    return ds.input_ids, ds.attention_mask, ds.labels != IGNORE_INDEX


def distill(llm_path: str | Path, recipe: LoraRecipe, teacher: torch.nn.Module, input_ids: torch.Tensor,
            attention_mask: torch.Tensor, target_mask: torch.Tensor, budget: Budget, out_dir: str | Path,
            seed: int, meter: CostMeter, temperature: float = 1.0, progress: ProgressFn | None = None,
            stage: str = "distil", device: str | torch.device = "cpu", *, selection: Selection | None = None,
            init_adapter: str | Path | None = None) -> dict:
    """Train the LLM recipe's LoRA to match ``teacher`` on the given sequences; save the adapter.

    Batches of ``budget.batch_size`` rows are drawn epoch by epoch from a permutation seeded
    by ``seed``; exactly ``budget.steps`` AdamW steps (after ``selection``, if given, chose
    the learning rate and step count on held-out rows: KL to the teacher there). The student
    starts from the recipe's seeded LoRA, or from the adapter in ``init_adapter``. Returns a
    record (losses, adapter dir, the selection).
    """
    n = input_ids.shape[0]
    if n == 0:
        raise ValueError("no sequences to distil on")
    rows = (input_ids, attention_mask, target_mask)
    targets = TeacherTargets(teacher, meter)
    chosen = None
    if selection is not None:
        def curve(lr, train_idx, val_idx, stops):
            held_out, _ = _train(llm_path, recipe, targets, rows, torch.as_tensor(train_idx),
                                 replace(budget, lr=lr, steps=stops[-1]), seed, meter, temperature, None, stage,
                                 device, init_adapter, val_idx=torch.as_tensor(val_idx), stops=stops)
            return held_out
        chosen = choose(selection, budget.steps, n, seed, curve)
        budget = replace(budget, lr=chosen.lr, steps=chosen.steps)
    student, losses = _train(llm_path, recipe, targets, rows, torch.arange(n), budget, seed, meter, temperature,
                             progress, stage, device, init_adapter)
    adapter_dir = Path(out_dir)
    student.save_pretrained(str(adapter_dir), safe_serialization=True)
    rec = {"adapter_dir": str(adapter_dir), "losses": [round(x, 6) for x in losses],
           "first_loss": losses[0], "final_loss": losses[-1], "sequences": n, "temperature": temperature,
           "steps": budget.steps, "batch_size": budget.batch_size, "lr": budget.lr,
           "init_adapter": str(init_adapter) if init_adapter is not None else None}
    if chosen is not None:
        rec["selection"] = chosen.to_dict() | {"procedure": selection.to_dict()}
    return rec


def _train(llm_path, recipe, targets, rows, train_idx, budget, seed, meter, temperature, progress, stage, device,
           init_adapter, val_idx=None, stops=()):
    """The distillation loop on the rows ``train_idx`` of ``rows``, with the teacher's logits from
    ``targets`` (TeacherTargets). Without ``val_idx``: returns (student, losses). With it: returns
    (held-out KL on those rows at each step in ``stops``, losses)."""
    input_ids, attention_mask, target_mask = rows
    torch.manual_seed(seed)
    student = attach_lora(load_model(llm_path, device=device), recipe)
    if init_adapter is not None:
        load_lora_weights(student, init_adapter)
    student.to(device)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=0.0)
    batches = batch_indices(len(train_idx), budget.batch_size, seed)
    tracker = Tracker(progress, stage, budget.steps)
    losses, curve = [], {}
    student.train()
    for step in range(budget.steps):
        idx = train_idx[next(batches)]
        ids, mask, tgt = _trimmed(input_ids[idx], attention_mask[idx], target_mask[idx], device)
        t_targets = targets(idx, ids, mask, tgt)
        s_logits = student(input_ids=ids, attention_mask=mask).logits
        loss = kd_loss_at_targets(s_logits, t_targets, tgt, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        meter.add_tokens(int(mask.sum()), "student")
        losses.append(loss.item())
        tracker.update(step + 1, f"kl {losses[-1]:.4f}")
        if val_idx is not None and step + 1 in stops:
            curve[step + 1] = _held_out_kl(student, targets, rows, val_idx, budget.batch_size, temperature, meter,
                                           device)
            student.train()
    student.eval()
    if not all(torch.isfinite(p).all() for p in params):
        if val_idx is not None:  # this learning rate diverged: not a candidate
            return {k: float("nan") for k in stops}, losses
        raise FloatingPointError("distillation diverged: non-finite LoRA weights (lower the learning rate)")
    return (curve if val_idx is not None else student), losses


def _trimmed(ids, mask, tgt, device):
    k = int(mask.any(dim=0).nonzero().max()) + 1  # trim all-padding right columns
    return ids[:, :k].to(device), mask[:, :k].to(device), tgt[:, :k].to(device)


@torch.no_grad()
def _held_out_kl(student, targets, rows, val_idx, batch_size, temperature, meter, device) -> float:
    student.eval()
    total, count = 0.0, 0
    ids_all, mask_all, tgt_all = rows
    for start in range(0, len(val_idx), batch_size):
        idx = val_idx[start:start + batch_size]
        ids, mask, tgt = _trimmed(ids_all[idx], mask_all[idx], tgt_all[idx], device)
        n = int(tgt[:, 1:].sum())
        if n == 0:
            continue
        kl = kd_loss_at_targets(student(input_ids=ids, attention_mask=mask).logits, targets(idx, ids, mask, tgt),
                                tgt, temperature)
        total += float(kl) * n
        count += n
        meter.add_tokens(int(mask.sum()), "selection")
    return total / count if count else float("nan")


def load_lora_weights(peft_model: torch.nn.Module, adapter_dir: str | Path) -> None:
    """Set a LoRA-wrapped model's adapter weights from a peft adapter folder of the same recipe."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from gtapp.evaluate import check_adapter_dir
    from gtapp.lora.peft_format import WEIGHTS_NAME

    state = load_file(str(check_adapter_dir(adapter_dir) / WEIGHTS_NAME))
    result = set_peft_model_state_dict(peft_model, state)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise ValueError(f"{adapter_dir}: adapter keys the model does not have: {missing[:3]}")


def start_ids(tokenizer, prefix: str) -> list[int]:
    """The ids a sample starts from: the prefix as a prompt, or EOS (a document break) if empty
    (the same convention as :func:`gtapp.evaluate.greedy_decode`)."""
    ids = prompt_ids(tokenizer, prefix)
    return ids if ids else [int(tokenizer.eos_token_id)]


@torch.no_grad()
def sample_sequences(teacher: torch.nn.Module, tokenizer, n: int, max_new_tokens: int, temperature: float,
                     seed: int, prefixes: Sequence[str] = ("",), batch_size: int = 32,
                     meter: CostMeter | None = None, device: str | torch.device = "cpu",
                     progress: ProgressFn | None = None, min_new_tokens: int = 0) -> list[tuple[list[int], list[int]]]:
    """``n`` samples from ``teacher``: (start ids, sampled ids incl. a final EOS if produced).

    Prefixes are used round-robin; sampling uses a generator seeded by ``seed``; EOS is
    suppressed for the first ``min_new_tokens`` tokens (a fine-tuned TinyLM, trained to end
    short answers, otherwise often ends a sample at once).
    """
    if temperature <= 0:
        raise ValueError("sampling needs temperature > 0")
    teacher.eval()
    g = torch.Generator().manual_seed(seed)
    pad, eos = _pad_id(tokenizer), tokenizer.eos_token_id
    out = []
    tracker = Tracker(progress, "sample teacher", n)
    step = model_step(teacher)
    for start in range(0, n, batch_size):
        rows = [start_ids(tokenizer, prefixes[i % len(prefixes)]) for i in range(start, min(n, start + batch_size))]
        ids, mask = left_pad(rows, pad)
        seq = decode(step, ids.to(device), mask.to(device), max_new_tokens, eos, pad, temperature=temperature,
                     generator=g, min_new_tokens=min_new_tokens).cpu()
        width = ids.shape[1]
        for r, row in zip(rows, seq[:, width:].tolist()):
            body = cut_at_eos(row, eos)
            if eos is not None and len(body) < len(row):
                body = body + [eos]
            out.append((r, body))
        if meter is not None:
            meter.add_tokens(int(mask.sum()) + (seq.shape[1] - width) * len(rows), "sampling")
        tracker.update(len(out))
    return out


def pack_samples(samples: Sequence[tuple[list[int], list[int]]], pad: int, max_length: int):
    """Right-padded (input_ids, attention_mask, target_mask) with targets = sampled tokens."""
    rows = [(s + b)[:max_length] for s, b in samples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tgt = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, ((s, _), r) in enumerate(zip(samples, rows)):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        tgt[i, len(s):len(r)] = True
    return ids, mask, tgt
