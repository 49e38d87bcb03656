"""Task metrics: exact match, ROUGE-L (F1 over tokens), perplexity from token NLL.

All return floats where higher is better except perplexity; ``higher_is_better`` says which.
"""

from __future__ import annotations

import math
import re
import string
from typing import Sequence

HIGHER_IS_BETTER = {"exact_match": True, "rouge_l": True, "perplexity": False, "answer_nll": False,
                    "f1": True}


def normalize_text(s: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze spaces (SQuAD/DROP style)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_number(s: str) -> str:
    """'1,234.50' -> '1234.5'; leaves non-numbers to normalize_text."""
    t = s.strip().replace(",", "").rstrip(".")
    t = t.lstrip("$")
    try:
        x = float(t)
    except ValueError:
        return normalize_text(s)
    if math.isfinite(x) and x == int(x):
        return str(int(x))
    return repr(x)


def exact_match(predictions: Sequence[str], references: Sequence[str], numeric: bool = False) -> float:
    """Fraction of predictions equal to their reference after normalisation (0..1)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return float("nan")
    norm = normalize_number if numeric else normalize_text
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / len(references)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence over lower-cased word tokens), 0..1."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return float("nan")
    total = 0.0
    for p, r in zip(predictions, references):
        pt, rt = normalize_text(p).split(), normalize_text(r).split()
        if not pt or not rt:
            continue
        lcs = _lcs(pt, rt)
        if lcs == 0:
            continue
        prec, rec = lcs / len(pt), lcs / len(rt)
        total += 2 * prec * rec / (prec + rec)
    return total / len(references)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(mean token NLL in nats)."""
    if total_tokens <= 0:
        return float("nan")
    return math.exp(total_nll / total_tokens)
