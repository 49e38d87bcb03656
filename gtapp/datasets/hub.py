"""Optional: the same datasets from the Hugging Face hub, where a network exists.

The ``datasets`` library is imported only here, only when called, and is never required.
Hub copies store the data as Parquet/CSV (no loading scripts are run: ``trust_remote_code``
is off). Rows are converted back to the authors' original record layout and go through the
same parsers as local files, so prompts, answers and metrics are identical.
"""

from __future__ import annotations

from typing import Any, Iterable

from gtapp.datasets._io import DatasetError, Limits, string_chars
from gtapp.datasets.formats import resolve_name
from gtapp.datasets.split import build_task
from gtapp.tasks.base import Example, Task


def _csqa(row: dict) -> dict:
    ch = row.get("choices") or {}
    labels, texts = ch.get("label", []), ch.get("text", [])
    return {"id": row.get("id", ""), "answerKey": row.get("answerKey", ""),
            "question": {"stem": row.get("question", ""),
                         "question_concept": row.get("question_concept", ""),
                         "choices": [{"label": lab, "text": t} for lab, t in zip(labels, texts)]}}


def _drop(row: dict) -> tuple[str, dict]:
    ans = row.get("answers_spans") or {}
    spans, types = list(ans.get("spans", [])), list(ans.get("types", []))
    answer: dict[str, Any] = {"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": []}
    if spans and types and all(t == "number" for t in types):
        answer["number"] = spans[0]
    else:  # span(s); a date is kept as its text
        answer["spans"] = spans
    key = str(row.get("section_id", ""))
    return key, {"passage": row.get("passage", ""),
                 "qa_pairs": [{"question": row.get("question", ""), "answer": answer,
                               "query_id": row.get("query_id", "")}]}


def _dialogsum(rows: Iterable[dict]) -> Iterable[dict]:
    """Hub test rows repeat each dialogue once per reference summary: regroup them."""
    current: dict | None = None
    for row in rows:
        if current is not None and row.get("dialogue") == current["dialogue"]:
            n = sum(k.startswith("summary") for k in current) + 1
            current[f"summary{n}"] = row.get("summary", "")
            continue
        if current is not None:
            yield current
        current = {"fname": row.get("id", ""), "dialogue": row.get("dialogue", ""),
                   "summary1": row.get("summary", ""), "topic": row.get("topic", "")}
    if current is not None:
        yield current


def _convert(name: str, rows: Iterable[dict]) -> Iterable[tuple[dict, str | None]]:
    if name == "commonsenseqa":
        return ((_csqa(r), None) for r in rows)
    if name == "drop":
        return ((rec, key) for key, rec in map(_drop, rows))
    if name == "dialogsum":
        return ((r, None) for r in _dialogsum(rows))
    return ((dict(r), None) for r in rows)


def load_hub(name: str, *, limit: int | None = None, seed: int = 0, max_rows: int | None = None,
             max_row_chars: int | None = None, cache_dir: str | None = None) -> Task:
    """Download (or reuse the cached copy of) a registered dataset from the hub."""
    spec = resolve_name(name)
    if spec.hub is None:
        raise DatasetError(f"{spec.name}: no hub copy is known; load it from local files")
    try:
        import datasets as hf_datasets  # noqa: PLC0415  (optional dependency, imported lazily)
    except ImportError:
        raise DatasetError(f"{spec.name}: loading from the hub needs the 'datasets' package "
                           "(pip install datasets); or pass local files") from None
    if not callable(getattr(hf_datasets, "load_dataset", None)):  # e.g. a folder named datasets/
        raise DatasetError(f"{spec.name}: the 'datasets' module found "
                           f"({getattr(hf_datasets, '__path__', None) or getattr(hf_datasets, '__file__', '?')}) "
                           "is not the Hugging Face datasets library")
    repo, config, train_split, test_split = spec.hub
    limits = Limits.make(max_rows=max_rows, max_row_chars=max_row_chars)
    splits: dict[str, list[Example]] = {}
    for which, split in (("train", train_split), ("test", test_split)):
        kwargs: dict[str, Any] = {"split": split}
        if cache_dir:
            kwargs["cache_dir"] = cache_dir
        args = (repo, config) if config else (repo,)
        try:
            rows = hf_datasets.load_dataset(*args, trust_remote_code=False, **kwargs)
        except TypeError:  # newer versions dropped the argument (and never run scripts)
            rows = hf_datasets.load_dataset(*args, **kwargs)
        out: list[Example] = []
        for i, (rec, key) in enumerate(_convert(spec.name, rows)):
            where = f"{repo}[{split}] row {i}"
            if i >= limits.max_rows:
                raise DatasetError(f"{repo}[{split}]: more than {limits.max_rows:,} rows; raise max_rows")
            if string_chars(rec) > limits.max_row_chars:
                raise DatasetError(f"{where}: row is over {limits.max_row_chars:,} characters "
                                   "(max_row_chars)")
            out.extend(e for e in spec.parse(where, rec, key) if e is not None)
        splits[which] = out
    source = {"dataset": spec.name, "hub": repo, "config": config,
              "splits": [train_split, test_split], "train_path": None, "test_path": None,
              "seed": seed, "limit": limit, "skipped": 0}
    return build_task(spec.name, spec, splits["train"], splits["test"], source, limit=limit, seed=seed,
                      test_fraction=0.1)
