"""Many LoRA fine-tunes of one model in one batched pass (the shadow pairs' engine).

A provider fine-tunes the same base model thousands of times (shadow runs). Done one run at
a time, each run pays a model load, a LoRA attachment and a Python loop of small steps.
:func:`batched_finetune` advances K runs together instead:

* the base model is loaded once and frozen; the recipe's K LoRA factor sets are stacked,
  ``A [K, r, in]`` and ``B [K, out, r]`` per target module, all starting at the recipe's
  seeded ``A0`` and ``B = 0`` (what :func:`gtapp.lora.peft_model.attach_lora` sets);
* a step's batch holds every run's own examples, run after run; each target Linear adds its
  LoRA term ``scale · B_k A_k x`` for the rows of run k, as one batched matmul over the run
  axis (a forward hook on the module, so any Llama/Qwen2 shape, GQA included, works);
* one backward through the sum of the runs' losses gives each run the gradient of its own
  loss only (run k's factors touch only run k's rows), and one optimiser step updates every
  run: AdamW is elementwise, so each run keeps its own moments; the learning rate is per run.

Same semantics as K separate :func:`gtapp.finetune.finetune` runs (non-DP): the same examples,
the same order (:func:`gtapp.finetune.epoch_batches` with the run's seed), the same initial
factors, the same loss (each example's mean NLL over its answer tokens, averaged over the
run's batch) and AdamW with the same settings; snapshots at the same steps. Rows of runs with
fewer examples than the others in a step are padded with a copy of a real row whose labels
are all ignored, so they add nothing. A run's results differ from its sequential twin only
by float round-off (matrix products of other shapes); ``tests/test_batched_finetune.py``
holds the agreement to a stated tolerance. LoRA dropout is not supported (the recipes' is 0):
a sequential run draws it from the global RNG, which a batched pass cannot reproduce.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from gtapp.data import IGNORE_INDEX, EncodedDataset, trim
from gtapp.finetune import FinetuneError, epoch_batches
from gtapp.lora.factors import Factors
from gtapp.lora.peft_model import check_base
from gtapp.lora.recipe import LoraRecipe, seeded_lora_a
from gtapp.progress import ProgressFn, Tracker
from gtapp.tasks.base import Example

ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, which gtapp.finetune uses
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class RunSpec:
    """One run of a batch: its examples, seed (data order) and learning rate."""

    examples: Sequence[Example]
    seed: int
    lr: float


@dataclass
class RunResult:
    factors: dict[int, Factors]  # step -> {module: (A, B)} (float32, CPU), at every snapshot and the last step
    losses: list[float]  # the run's loss at every step
    examples: int
    wall_s: float = 0.0  # the batch's wall time, shared by its runs
    meta: dict = field(default_factory=dict)

    @property
    def loss_first(self) -> float:
        return self.losses[0]

    @property
    def loss_last(self) -> float:
        return self.losses[-1]


class StackedLora:
    """K LoRA adapters of one recipe on a frozen model, each row of a batch routed to its run's.

    ``rows_per_run`` must be set before each forward pass: the batch is run-major, ``K ×
    rows_per_run`` rows."""

    def __init__(self, model: torch.nn.Module, recipe: LoraRecipe, k: int, device: torch.device):
        if recipe.dropout:
            raise ValueError(f"batched fine-tuning needs LoRA dropout 0 (the recipe's is {recipe.dropout})")
        self.recipe, self.k, self.scale = recipe, k, float(recipe.scale)
        self.rows_per_run = 0
        modules = dict(model.named_modules())
        missing = [m for m in recipe.modules() if m not in modules]
        if missing:
            raise ValueError(f"recipe modules not present in the model: {missing[:5]}")
        self.a0 = {m: seeded_lora_a(recipe.init_seed, m, recipe.rank, recipe.shapes[m][1]).to(device)
                   for m in recipe.modules()}
        self.a = {m: torch.nn.Parameter(self.a0[m].expand(k, -1, -1).clone()) for m in recipe.modules()}
        self.b = {m: torch.nn.Parameter(torch.zeros(k, recipe.shapes[m][0], recipe.rank, device=device))
                  for m in recipe.modules()}
        self._hooks = [modules[m].register_forward_hook(self._hook(m)) for m in recipe.modules()]

    def _hook(self, module: str):
        def hook(_mod, inputs, output):
            x = inputs[0]
            k, rows = self.k, self.rows_per_run
            xs = x.reshape(k, rows * x.shape[1], x.shape[2])  # [K, rows·T, in]
            h = torch.bmm(xs, self.a[module].transpose(1, 2))  # [K, rows·T, r]
            delta = torch.bmm(h, self.b[module].transpose(1, 2))  # [K, rows·T, out]
            return output + self.scale * delta.reshape(output.shape)
        return hook

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.recipe.modules() for p in (self.a[m], self.b[m])]

    def factors(self, run: int) -> Factors:
        return {m: (self.a[m][run].detach().float().cpu().clone(), self.b[m][run].detach().float().cpu().clone())
                for m in self.recipe.modules()}

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


class StackedAdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias correction), on stacked
    ``[K, ...]`` parameters with one learning rate per run."""

    def __init__(self, params: Sequence[torch.nn.Parameter], lrs: Sequence[float], weight_decay: float = 0.0):
        self.params = list(params)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lrs = torch.tensor([float(x) for x in lrs], dtype=self.params[0].dtype, device=self.params[0].device)

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        b1, b2 = ADAM_BETAS
        bc1, bc2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            lr = self.lrs.view(-1, *([1] * (p.dim() - 1)))
            g = p.grad
            p.mul_(1 - lr * self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(ADAM_EPS)
            p.sub_((lr / bc1) * m / denom)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _labelled_nll(model: torch.nn.Module, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed next-token NLL over labelled positions and their counts, as
    :func:`gtapp.evaluate.sequence_nll`, with the output layer applied to the labelled
    positions only (answers are a few tokens of each sequence: the vocabulary projection of
    every other position is work whose result is never used)."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    rows = keep.nonzero(as_tuple=True)[0]
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    nll = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
    sums = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    return sums, keep.sum(dim=1)


def _step_batch(datasets: Sequence[EncodedDataset], indices: Sequence[torch.Tensor], device):
    """Every run's rows of one step, run-major, padded to the same number of rows per run (a
    copy of the run's first row with every label ignored) and to one common length."""
    rows = max(len(ix) for ix in indices)
    ids, mask, labels, real = [], [], [], []
    for d, ix in zip(datasets, indices):
        pad_rows = rows - len(ix)
        full = torch.cat([ix, ix[:1].expand(pad_rows)]) if pad_rows else ix
        i, a, lab = d.input_ids[full], d.attention_mask[full], d.labels[full].clone()
        if pad_rows:
            lab[len(ix):] = IGNORE_INDEX
        ids.append(i)
        mask.append(a)
        labels.append(lab)
        real.append(len(ix))
    ids, mask, labels = trim(torch.cat(ids), torch.cat(mask), torch.cat(labels))
    return ids.to(device), mask.to(device), labels.to(device), rows, real


def batched_finetune(model: torch.nn.Module, tokenizer, recipe: LoraRecipe, runs: Sequence[RunSpec], *,
                     steps: int, batch_size: int, max_length: int = 128, snapshot_steps: Sequence[int] = (),
                     weight_decay: float = 0.0, progress: Optional[ProgressFn] = None,
                     verify_base: bool = True) -> list[RunResult]:
    """Fine-tune ``len(runs)`` LoRA adapters of ``recipe`` on a loaded ``model`` together; returns
    each run's factors at every snapshot step and the last step, and its per-step losses.
    ``model`` is used frozen and left as it was (the LoRA terms are hooks, removed at the end)."""
    if not runs:
        return []
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    snaps = sorted({int(s) for s in snapshot_steps} | {steps})
    if snaps[0] < 1 or snaps[-1] > steps:
        raise ValueError(f"snapshot steps must lie in 1..{steps}")
    if verify_base:
        check_base(model, recipe)
    device = next(model.parameters()).device
    t0 = time.monotonic()
    tracker = Tracker(progress, "batched finetune", steps)
    datasets = []
    for r in runs:
        if not r.examples:
            raise ValueError("a run has no training examples")
        # one common length (right padding, trimmed per step): rows of different runs stack
        datasets.append(EncodedDataset(tokenizer, list(r.examples), max_length=max_length, pad_to="max_length"))
    order = [epoch_batches(len(d), batch_size, torch.Generator().manual_seed(int(r.seed)))
             for d, r in zip(datasets, runs)]
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    model.train()
    lora = StackedLora(model, recipe, len(runs), device)
    opt = StackedAdamW(lora.parameters(), [r.lr for r in runs], weight_decay)
    losses: list[list[float]] = [[] for _ in runs]
    kept: list[dict[int, Factors]] = [{} for _ in runs]
    try:
        for step in range(1, steps + 1):
            ids, mask, labels, rows, real = _step_batch(datasets, [next(o) for o in order], device)
            lora.rows_per_run = rows
            s, cnt = _labelled_nll(model, ids, mask, labels)
            per_row = (s / cnt.clamp(min=1)).view(len(runs), rows)
            run_loss = torch.stack([per_row[k, :n].mean() for k, n in enumerate(real)])
            run_loss.sum().backward()
            opt.step()
            opt.zero_grad()
            values = run_loss.detach().cpu().tolist()
            bad = [k for k, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise FinetuneError(f"loss became non-finite at step {step} in run(s) {bad} (lower the learning rate)")
            for k, v in enumerate(values):
                losses[k].append(v)
            if step in snaps:
                for k in range(len(runs)):
                    kept[k][step] = lora.factors(k)
            tracker.update(step, f"mean loss {sum(values) / len(values):.4f} over {len(runs)} runs",
                           **{"mean train loss": sum(values) / len(values)})
    finally:
        lora.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    wall = time.monotonic() - t0
    for k, f in enumerate(kept):
        last = f[steps]
        if not all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in last.values()):
            raise FinetuneError(f"run {k}: non-finite LoRA weights (lower the learning rate)")
        if max(float(b.abs().max()) for _, b in last.values()) == 0.0:
            raise FinetuneError(f"run {k}: the LoRA adapter did not change during training")
    return [RunResult(kept[k], losses[k], len(runs[k].examples), wall) for k in range(len(runs))]
