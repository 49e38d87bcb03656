"""Turn dataset files (or a hub download) into a :class:`~gtapp.tasks.base.Task`."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from gtapp.datasets._io import DatasetError, Limits, check_extension, iter_records, read_json_object
from gtapp.datasets.formats import REGISTRY, DatasetSpec, resolve_name
from gtapp.tasks.base import Example, Task

DEFAULT_TEST_FRACTION = 0.1


def available() -> list[str]:
    """Names of the registered datasets."""
    return list(REGISTRY)


# ------------------------------------------------------------------------------- splitting

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

def read_examples(spec: DatasetSpec, path: str | os.PathLike, limits: Limits,
                  skip_invalid: bool = False, problems: list[str] | None = None
                  ) -> tuple[list[Example], int]:
    """Parse one file of ``spec``'s published layout; returns (examples, skipped records).

    With ``skip_invalid``, records of the wrong shape are skipped (their messages appended to
    ``problems``) instead of raising; unreadable files (encoding, JSON syntax, bounds) still raise.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    check_extension(p, spec.extensions, spec.name)
    examples: list[Example] = []
    skipped = 0
    if spec.layout == "object":
        items: Iterable = ((w, r, k) for w, k, r in read_json_object(p, limits))
    else:
        items = ((w, r, None) for w, r in iter_records(p, limits))
    for where, rec, key in items:
        try:
            parsed = spec.parse(where, rec, key)
        except DatasetError as e:
            if not skip_invalid:
                raise
            if problems is not None:
                problems.append(str(e))
            skipped += 1
            continue
        for ex in parsed:
            if ex is None:
                skipped += 1
                continue
            examples.append(ex)
            if len(examples) > limits.max_rows:
                raise DatasetError(f"{p}: more than {limits.max_rows:,} examples (at {where}); "
                                   "raise max_rows to load it")
    if not examples:
        raise DatasetError(f"{p}: no usable examples ({skipped} records skipped as empty or invalid); "
                           f"expected records like {spec.schema}")
    return examples, skipped


def _find(folder: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _resolve_paths(spec: DatasetSpec, train_path, test_path, path) -> tuple[Path | None, Path | None]:
    if path is not None:
        if train_path is not None or test_path is not None:
            raise DatasetError("give either path= or train_path/test_path, not both")
        p = Path(path)
        if p.is_dir():
            tr, te = _find(p, spec.train_files), _find(p, spec.test_files)
            if tr is None and te is None:
                raise FileNotFoundError(
                    f"{p}: no {spec.name} files found; expected {' or '.join(spec.train_files)} "
                    f"(train) and/or {' or '.join(spec.test_files)} (test)")
            return tr, te
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        return p, None
    return (Path(train_path) if train_path is not None else None,
            Path(test_path) if test_path is not None else None)


def load(name: str, train_path: str | os.PathLike | None = None,
         test_path: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None,
         limit: int | None = None, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION,
         hub: bool = False, max_rows: int | None = None, max_row_chars: int | None = None,
         skip_invalid: bool = False, datasets_dir: str | os.PathLike | None = None,
         max_file_bytes: int | None = None) -> Task:
    """Load a registered dataset from its original files.

    ``path`` is a folder holding the published file names (``REGISTRY[name].train_files`` /
    ``test_files``) or a single file. When only one file is available it is split
    deterministically by ``seed`` (``test_fraction`` goes to test; DROP splits by passage).
    ``limit`` caps each split at a seeded random subset. ``skip_invalid`` skips (and lists in
    ``task.source["invalid"]``) records of the wrong shape instead of raising. Without any path, the folder
    ``datasets_dir/<name>`` is used if it exists (the deployment's settings pass it), else the hub copy when ``hub=True``.
    """
    spec = resolve_name(name)
    limits = Limits.make(max_rows=max_rows, max_row_chars=max_row_chars, max_file_bytes=max_file_bytes)
    if train_path is None and test_path is None and path is None:
        root = datasets_dir
        if root and (Path(root) / spec.name).is_dir():
            path = Path(root) / spec.name
        elif hub:
            from gtapp.datasets.hub import load_hub
            return load_hub(spec.name, limit=limit, seed=seed, max_rows=max_rows,
                            max_row_chars=max_row_chars)
        else:
            raise DatasetError(
                f"no files given for {spec.name!r}: pass train_path/test_path, or path=FOLDER holding "
                f"{' / '.join(spec.train_files + spec.test_files)}, or pass datasets_dir=ROOT holding {spec.name}/"
                + (f", or hub=True to download {spec.hub[0]}" if spec.hub else ""))
    tr, te = _resolve_paths(spec, train_path, test_path, path)
    problems: list[str] = []
    train, skipped_tr = read_examples(spec, tr, limits, skip_invalid, problems) if tr is not None else ([], 0)
    test, skipped_te = read_examples(spec, te, limits, skip_invalid, problems) if te is not None else ([], 0)
    source: dict[str, Any] = {"dataset": spec.name, "train_path": str(tr.resolve()) if tr else None,
                              "test_path": str(te.resolve()) if te else None, "seed": seed,
                              "limit": limit, "skipped": skipped_tr + skipped_te}
    if problems:
        source["invalid"] = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
    return build_task(spec.name, spec, train, test, source, limit=limit, seed=seed,
                      test_fraction=test_fraction, origin=str(tr if train else te))


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
