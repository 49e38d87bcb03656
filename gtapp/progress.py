"""Progress reporting shared by every long-running step (fine-tune, zoo build, shadow pairs...).

A step receives an optional ``progress`` callable and calls it with a :class:`Progress`.
The callable may raise :class:`Cancelled` to stop the step cooperatively; jobs use that
to honour a cancel request at every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional


class Cancelled(Exception):
    """Raised (usually by a progress callback) to stop a step that was asked to cancel."""


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0..1 of the whole step
    stage: str  # short human-readable stage name, e.g. "pretrain llm"
    eta_s: Optional[float] = None  # seconds left, None when unknown
    message: str = ""
    step: Optional[int] = None  # the stage's step count, where it has one
    # numbers to plot against ``step`` (e.g. {"train loss": 1.9, "val": 2.1}): live curves
    metrics: dict = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]


def noop(_: Progress) -> None:
    return None


def job_eta(fraction: float, elapsed_s: float, step_eta_s: Optional[float]) -> Optional[float]:
    """Seconds left in a whole job, from its overall pace once it has one.

    A step's own ETA, stretched over the rest of the job, swings with every change of stage
    (a 9 s estimate from a quick first stage, minutes in the next); the whole job's elapsed time
    over its fraction done does not, once a twentieth of the work is done. Before that the
    step's estimate (or none) is all there is."""
    if 0.05 <= fraction < 1.0 and elapsed_s > 0:
        return elapsed_s * (1.0 - fraction) / fraction
    return step_eta_s


class Tracker:
    """Turns 'done k of n' into Progress with an ETA from the elapsed rate.

    ``start``/``end`` map this tracker into a sub-range of a larger step's 0..1.
    """

    def __init__(self, fn: Optional[ProgressFn], stage: str, total: int,
                 start: float = 0.0, end: float = 1.0):
        self.fn = fn or noop
        self.stage = stage
        self.total = max(int(total), 1)
        self.start, self.end = start, end
        self.t0 = time.monotonic()
        self._frac = 0.0  # the local fraction last reported: progress never moves back

    def retarget(self, total: int) -> None:
        """The step count the stage now expects to end at (a run that can stop early, as on
        patience, knows a nearer end than its step budget). The fraction reported never moves
        back: where the end moves further out again, it waits for the steps to catch up."""
        self.total = max(int(total), 1)

    def update(self, done: int, message: str = "", **metrics: float) -> None:
        frac_local = max(min(max(done / self.total, 0.0), 1.0), self._frac)
        self._frac = frac_local
        elapsed = time.monotonic() - self.t0
        # from the step rate, not the reported fraction, which may be held back (retarget)
        eta = elapsed * max(self.total - done, 0) / done if done > 0 else None
        self.fn(Progress(self.start + (self.end - self.start) * frac_local, self.stage, eta, message, step=int(done),
                         metrics={k: float(v) for k, v in metrics.items() if v is not None}))
