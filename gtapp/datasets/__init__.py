"""Loaders for real datasets (GSM8K, AQuA-RAT, CommonsenseQA, DROP, SAMSum, DialogSum) and user files.

Each loader reads the authors' original published files and returns a
:class:`gtapp.tasks.base.Task` with the dataset's prompt format, answer extraction and metric::

    from gtapp import datasets
    task = datasets.load("gsm8k", path="/data/gsm8k")            # folder with train/test.jsonl
    task = datasets.load("drop", "drop_dataset_train.json", "drop_dataset_dev.json", limit=500)
    task = datasets.load_user_dataset("mine.csv")                  # prompt, answer columns

Malformed files raise :class:`DatasetError` (a ``ValueError``) naming the file, the line or
record, and what was expected. Files are only parsed (``json``/``csv``), never executed.
"""

from gtapp.datasets._io import MAX_ROW_CHARS, MAX_ROWS, DatasetError, Limits  # noqa: F401
from gtapp.datasets.formats import REGISTRY, DatasetSpec, resolve_name  # noqa: F401
from gtapp.datasets.hub import load_hub  # noqa: F401  (needs the optional `datasets` library and a network)
from gtapp.datasets.loader import available, load, read_examples  # noqa: F401
from gtapp.datasets.split import split_examples  # noqa: F401
from gtapp.datasets.user import load_user_dataset  # noqa: F401

__all__ = ["DatasetError", "DatasetSpec", "Limits", "MAX_ROWS", "MAX_ROW_CHARS", "REGISTRY", "available", "load", "load_hub",
           "load_user_dataset", "read_examples", "resolve_name", "split_examples"]
