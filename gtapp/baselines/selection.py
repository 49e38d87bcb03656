"""One procedure by which every trained LLM method picks its learning rate and when to stop.

The oracle, public_ft, weak_to_strong, kd_logit, datafree_kd and the refinement all train
with a budget of ``steps`` optimizer steps. Left at one fixed learning rate, a method can
overshoot (today's oracle lowered exact match on a commonsense task, which made "gap
recovery" there meaningless). So each of them, on *its own* training data only (never the
test split, never another method's data):

1. holds out ``val_fraction`` of its training sequences (a seeded split);
2. for each learning rate in ``lrs``, trains on the rest for the full budget and measures its
   own training loss (answer NLL for fine-tunes, KL to the teacher for distillation) on the
   held-out part at ``checkpoints`` evenly spaced steps;
3. takes the (learning rate, step) with the lowest held-out loss;
4. trains once more on *all* its training sequences with that learning rate for that many
   steps (never more than the budget) — the adapter it reports.

The selection's own cost (its training and validation passes) is measured and reported
(``selection_s``) next to the final run's, so a cost table can use either.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

Curve = dict[int, float]  # step -> held-out loss


@dataclass(frozen=True)
class Selection:
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    val_fraction: float = 0.2
    checkpoints: int = 4

    def __post_init__(self):
        if not self.lrs or any(not (math.isfinite(x) and x > 0) for x in self.lrs):
            raise ValueError(f"selection lrs must be positive numbers, got {self.lrs}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.checkpoints < 1:
            raise ValueError(f"checkpoints must be >= 1, got {self.checkpoints}")

    def stops(self, steps: int) -> list[int]:
        """The candidate stopping steps: ``checkpoints`` evenly spaced, the last = ``steps``."""
        return sorted({max(1, round(steps * k / self.checkpoints)) for k in range(1, self.checkpoints + 1)})

    def split(self, n: int, seed: int) -> tuple[list[int], list[int]]:
        """(train, validation) indices of ``n`` training sequences; both non-empty."""
        if n < 2:
            raise ValueError(f"learning-rate selection needs >= 2 training sequences, got {n}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
        n_val = min(n - 1, max(1, round(n * self.val_fraction)))
        return sorted(perm[n_val:]), sorted(perm[:n_val])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Choice:
    lr: float
    steps: int
    curves: dict[float, Curve] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    selection_s: float = 0.0

    def to_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps, "n_train": self.n_train, "n_val": self.n_val,
                "selection_s": round(self.selection_s, 3),
                "curves": {f"{lr:g}": {str(k): round(v, 6) for k, v in c.items()} for lr, c in self.curves.items()}}


def choose(selection: Selection, steps: int, n: int, seed: int,
           curve: Callable[[float, list[int], list[int], list[int]], Curve]) -> Choice:
    """Run ``curve(lr, train_idx, val_idx, stops)`` for every learning rate and pick the
    (lr, step) with the lowest held-out loss (the smaller step on ties: cheaper)."""
    t0 = time.monotonic()
    train_idx, val_idx = selection.split(n, seed)
    stops = selection.stops(steps)
    curves: dict[float, Curve] = {}
    best = (math.inf, 0, selection.lrs[0], steps)
    for i, lr in enumerate(selection.lrs):
        c = curve(lr, train_idx, val_idx, stops)
        curves[lr] = c
        for step in stops:
            loss = c.get(step, math.nan)
            if math.isfinite(loss) and (loss, step) < (best[0], best[3]):
                best = (loss, i, lr, step)
    if not math.isfinite(best[0]):
        raise FloatingPointError("learning-rate selection: no learning rate gave a finite held-out loss")
    return Choice(lr=best[2], steps=best[3], curves=curves, n_train=len(train_idx), n_val=len(val_idx),
                  selection_s=time.monotonic() - t0)
