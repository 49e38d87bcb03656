"""Task libraries for shadow pairs: which tasks a provider fine-tunes on for a protocol
(torch-free, so presets and job checks can name them)."""

from __future__ import annotations

from typing import Iterable

from gtapp.tasks.universe import task_names

DATASET_PREFIX = "dataset:"  # a shadow task read from a real public dataset's train split


def task_library(exclude: Iterable[str] = (), datasets: Iterable[str] = ()) -> tuple[str, ...]:
    """Every generated task variant (all five families) but the ``exclude``d ones (the
    protocol's private tasks), then ``dataset:<name>`` for each real public dataset given
    (its train split; ``gtapp.shadow.ShadowConfig.dataset_paths`` says where)."""
    skip = set(exclude)
    return tuple(t for t in task_names() if t not in skip) + tuple(f"{DATASET_PREFIX}{d}" for d in datasets)
