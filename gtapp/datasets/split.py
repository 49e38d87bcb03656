"""Splitting and subsampling a dataset's examples into a Task's train and test splits,
deterministically from a seed (shared by the file loaders, the hub loader and user files)."""

from __future__ import annotations

import random
from typing import Any, Sequence

from gtapp.datasets._io import DatasetError
from gtapp.datasets.formats import DatasetSpec
from gtapp.tasks.base import Example, Task

DEFAULT_TEST_FRACTION = 0.1


def split_examples(examples: Sequence[Example], seed: int = 0,
                   test_fraction: float = DEFAULT_TEST_FRACTION,
                   group_key: str | None = None) -> tuple[list[Example], list[Example]]:
    """Deterministic train/test split (original order kept inside each part).

    With ``group_key``, examples sharing ``meta[group_key]`` (e.g. a DROP passage) land on the
    same side, so no passage is both trained and tested on.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1; got {test_fraction}")
    n = len(examples)
    if n < 2:
        raise DatasetError(f"need at least 2 examples to split into train and test; got {n}")
    target = min(n - 1, max(1, round(n * test_fraction)))
    rng = random.Random(f"gtapp-split:{seed}")
    if group_key:
        groups: dict[Any, list[int]] = {}
        for i, e in enumerate(examples):
            groups.setdefault(e.meta.get(group_key, i), []).append(i)
        keys = list(groups)
        if len(keys) >= 2:
            rng.shuffle(keys)
            test_idx: set[int] = set()
            for k in keys[:-1]:  # always leave at least one group for training
                if len(test_idx) >= target:
                    break
                test_idx.update(groups[k])
        else:
            test_idx = set(rng.sample(range(n), target))
    else:
        test_idx = set(rng.sample(range(n), target))
    train = [e for i, e in enumerate(examples) if i not in test_idx]
    test = [e for i, e in enumerate(examples) if i in test_idx]
    return train, test


def subsample(examples: Sequence[Example], limit: int | None, seed: int, tag: str) -> list[Example]:
    """At most ``limit`` examples, a seeded random subset in original order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 0:
        raise DatasetError(f"limit must be >= 0; got {limit}")
    rng = random.Random(f"gtapp-limit:{seed}:{tag}")
    keep = sorted(rng.sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


# ------------------------------------------------------------------------------- reading



def build_task(name: str, spec: DatasetSpec, train: list[Example], test: list[Example],
               source: dict, *, limit: int | None, seed: int, test_fraction: float,
               origin: str = "") -> Task:
    """Split if one side is missing, apply ``limit`` and wrap into a Task. ``origin`` (the file
    that is split) prefixes a message about too few examples to split."""
    group = "group" if spec.name == "drop" else None
    if not train or not test:
        only = train or test
        which = "train" if train else "test"
        try:
            train, test = split_examples(only, seed=seed, test_fraction=test_fraction, group_key=group)
        except DatasetError as e:
            if not origin or len(only) >= 2:
                raise
            raise DatasetError(f"{origin}: {e}; add more rows, or give a separate test file") from None
        source["split"] = f"seeded split of the {which} file (seed={seed}, test_fraction={test_fraction})"
    else:
        source["split"] = "files"
    source["full_sizes"] = {"train": len(train), "test": len(test)}
    train = subsample(train, limit, seed, "train")
    test = subsample(test, limit, seed, "test")
    return Task(name=name, family=spec.family, metric=spec.metric, train=train, test=test,
                extract=spec.extract, max_new_tokens=spec.max_new_tokens,
                description=spec.description, source=source)
