"""Turn dataset files (or a hub download) into a :class:`~gtapp.tasks.base.Task`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from gtapp.datasets._io import DatasetError, Limits, check_extension, iter_records, read_json_object
from gtapp.datasets.formats import REGISTRY, DatasetSpec, resolve_name
from gtapp.datasets.hub import load_hub
from gtapp.datasets.split import DEFAULT_TEST_FRACTION, build_task
from gtapp.tasks.base import Example, Task



def available() -> list[str]:
    """Names of the registered datasets."""
    return list(REGISTRY)


# ------------------------------------------------------------------------------- splitting

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
