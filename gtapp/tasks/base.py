"""What a task is: examples, a prompt format, answer extraction and a metric.

Generated task families (``gtapp.tasks``) and real datasets (``gtapp.datasets``) both
produce :class:`Task` objects, so fine-tuning, evaluation and the benchmark treat them alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from gtapp import metrics


@dataclass(frozen=True)
class Example:
    """One supervised example: the model sees ``prompt`` and should produce ``answer``.

    For language modelling, ``prompt`` is empty and ``answer`` is the text to model.
    ``references`` holds extra acceptable answers (e.g. DROP's alternative spans).
    """

    prompt: str
    answer: str
    references: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def extract_number(text: str) -> str:
    """The first number in the first line of a generation ('' if none)."""
    m = re.search(r"-?\$?\d[\d,]*(?:\.\d+)?", first_line(text))
    return m.group(0).replace("$", "") if m else ""


def extract_letter(text: str) -> str:
    """The first standalone option letter A-E in a generation ('' if none)."""
    m = re.search(r"\b([A-E])\b", first_line(text).upper())
    return m.group(1) if m else ""


@dataclass
class Task:
    """A task with train/test splits.

    ``metric`` is one of ``exact_match``, ``numeric_exact_match``, ``letter_exact_match``,
    ``rouge_l``, ``perplexity``. ``extract`` turns a raw generation into an answer string.
    """

    name: str
    family: str
    metric: str
    train: list[Example]
    test: list[Example]
    extract: Callable[[str], str] = first_line
    max_new_tokens: int = 16
    description: str = ""
    source: dict = field(default_factory=dict)  # how it was made: generator params or file paths

    @property
    def metric_name(self) -> str:
        """The reported metric's name (exact_match, rouge_l or perplexity)."""
        return {"numeric_exact_match": "exact_match", "letter_exact_match": "exact_match"}.get(
            self.metric, self.metric)

    @property
    def higher_is_better(self) -> bool:
        return metrics.HIGHER_IS_BETTER[self.metric_name]

    @property
    def generative(self) -> bool:
        return self.metric != "perplexity"

    def score(self, generations: Sequence[str], examples: Sequence[Example]) -> float:
        """Score raw generations against examples' answers (any of ``references`` counts)."""
        preds = [self.extract(g) for g in generations]
        if self.metric == "rouge_l":  # best over the alternative reference summaries
            return sum(max(metrics.rouge_l([p], [r]) for r in (e.answer,) + tuple(e.references))
                       for p, e in zip(preds, examples)) / len(examples) if examples else float("nan")
        numeric = self.metric == "numeric_exact_match"
        hits = 0
        for p, e in zip(preds, examples):
            refs = (e.answer,) + tuple(e.references)
            if self.metric == "letter_exact_match":  # "A" is not an article here
                hits += p.strip().upper() in {r.strip().upper() for r in refs}
            else:
                hits += any(metrics.exact_match([p], [r], numeric=numeric) == 1.0 for r in refs)
        return hits / len(examples) if examples else float("nan")

    def summary(self) -> dict:
        return {"name": self.name, "family": self.family, "metric": self.metric_name,
                "train": len(self.train), "test": len(self.test)}
