"""User datasets: a JSONL (or JSON list) or CSV file with ``prompt`` and ``answer`` columns."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gtapp.datasets._io import DatasetError, Limits, check_extension, iter_csv, iter_records, \
    require_object, require_str, type_name
from gtapp.datasets.formats import DatasetSpec, extract_summary
from gtapp.datasets.split import DEFAULT_TEST_FRACTION, build_task
from gtapp.tasks.base import Example, Task, extract_letter, extract_number, first_line

USER_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv")
USER_METRICS = {  # metric -> answer extraction
    "exact_match": first_line,
    "numeric_exact_match": extract_number,
    "letter_exact_match": extract_letter,
    "rouge_l": extract_summary,
}


def _references(where: str, row: dict) -> tuple[str, ...]:
    refs = row.get("references")
    if refs is None or refs == "":
        return ()
    if isinstance(refs, str):  # CSV: several references separated by '|'
        return tuple(r.strip() for r in refs.split("|") if r.strip())
    if not isinstance(refs, list):
        raise DatasetError(f"{where}: expected 'references' to be a list of strings; got a "
                           f"{type_name(refs)}")
    for i, r in enumerate(refs):
        if not isinstance(r, (str, int, float)) or isinstance(r, bool):
            raise DatasetError(f"{where}: expected 'references' to be a list of strings; references[{i}] "
                               f"is a {type_name(r)}")
    return tuple(str(r) for r in refs if str(r).strip())


def _example(where: str, row: Any) -> Example:
    require_object(where, row, ("prompt", "answer"))
    prompt = require_str(where, row, "prompt", allow_number=True)
    answer = require_str(where, row, "answer", allow_number=True)
    return Example(prompt=prompt, answer=answer, references=_references(where, row))


def load_user_dataset(path: str | os.PathLike, seed: int = 0,
                      test_fraction: float = DEFAULT_TEST_FRACTION, *, test_path: str | os.PathLike | None = None,
                      metric: str = "exact_match", name: str | None = None, limit: int | None = None,
                      max_new_tokens: int | None = None, max_rows: int | None = None,
                      max_row_chars: int | None = None, max_file_bytes: int | None = None) -> Task:
    """Load a user's own examples: JSONL/JSON rows ``{"prompt", "answer"[, "references"]}`` or a
    CSV/TSV file with a header holding ``prompt`` and ``answer`` (an optional ``references``
    column with alternatives separated by ``|``). Without ``test_path`` the file is split
    deterministically by ``seed``. ``metric`` is one of exact_match, numeric_exact_match,
    letter_exact_match, rouge_l.
    """
    if metric not in USER_METRICS:
        raise DatasetError(f"unknown metric {metric!r}; expected one of {', '.join(USER_METRICS)}")
    limits = Limits.make(max_rows=max_rows, max_row_chars=max_row_chars, max_file_bytes=max_file_bytes)

    def read(p: Path) -> list[Example]:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        ext = check_extension(p, USER_EXTENSIONS, "a user dataset")
        if ext in (".csv", ".tsv"):
            rows = iter_csv(p, limits, ("prompt", "answer"), delimiter="\t" if ext == ".tsv" else ",")
        else:
            rows = iter_records(p, limits)
        return [_example(w, r) for w, r in rows]

    p = Path(path)
    train = read(p)
    test = read(Path(test_path)) if test_path is not None else []
    if max_new_tokens is None:  # room for the longest answer (~2 tokens a word), within reason
        longest = max(len(e.answer.split()) for e in train + test)
        max_new_tokens = min(256, max(8, 2 * longest + 4))
    spec = DatasetSpec(name=name or p.stem, description=f"user dataset {p.name}", family="user",
                       metric=metric, layout="records", extensions=USER_EXTENSIONS, train_files=(),
                       test_files=(), schema="prompt, answer[, references]", parse=lambda *a: [],
                       extract=USER_METRICS[metric], max_new_tokens=max_new_tokens)
    source = {"dataset": "user", "train_path": str(p.resolve()),
              "test_path": str(Path(test_path).resolve()) if test_path is not None else None,
              "seed": seed, "limit": limit, "skipped": 0}
    return build_task(spec.name, spec, train, test, source, limit=limit, seed=seed,
                      test_fraction=test_fraction, origin=str(p))

