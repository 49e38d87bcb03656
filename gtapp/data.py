"""Turning :class:`~gtapp.tasks.base.Example` s into model batches.

One example = one sequence: ``prompt tokens + answer tokens + EOS``. The loss (``labels``)
covers the answer and EOS only; prompt and padding positions are ``-100``. Language
modelling examples have an empty prompt, so every token of the text is scored (the
empty prompt becomes a single document-break token, see :func:`prompt_ids`). The prompt is
tokenised with the tokenizer's own special-token convention (a Llama tokenizer adds BOS,
Qwen's and the zoo's add nothing), exactly as :func:`prompt_ids` does for generation, so
training and evaluation see the same token stream.

Sequences longer than ``max_length`` keep the answer: the prompt loses tokens from its
start (its end, next to the answer, is what the answer depends on most); an answer
longer than the whole budget is cut at its end (for language modelling, the text is cut
at the end).

:class:`EncodedDataset` pads every sequence to one fixed length (right padding), so any
subset collates to a rectangular batch and an empty Poisson batch has a well-defined
shape — what Opacus's ``DPDataLoader`` needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from gtapp.tasks.base import Example

IGNORE_INDEX = -100


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad nor an EOS token")
    return int(pad)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt as the model should see it: the tokenizer's BOS convention,
    never a trailing EOS; an empty prompt (language modelling) that would have no token at
    all becomes ``[EOS]``, the document break the model saw in pretraining, so the text's
    first token is predicted and scored too."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if ids and eos is not None and ids[-1] == eos:
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > len(plain) and (not plain or plain[-1] != eos):
            ids.pop()  # the tokenizer appends EOS itself (T5-style); a prompt must not end
    if not ids:
        if eos is None:
            raise ValueError("tokenizer has no EOS token")
        ids = [int(eos)]
    return ids


def answer_ids(tokenizer, text: str) -> list[int]:
    """Token ids of an answer followed by EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [int(tokenizer.eos_token_id)]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 where no loss
    truncated: bool = False

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode(tokenizer, example: Example, max_length: int) -> Encoded:
    """Tokenise one example (prompt + answer + EOS), labels on the answer only."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    p = prompt_ids(tokenizer, example.prompt)
    a = answer_ids(tokenizer, example.answer)
    truncated = len(p) + len(a) > max_length
    if truncated:
        # Keep the answer; leave the prompt at least one token if it has any.
        keep_a = min(len(a), max_length - (1 if p else 0))
        a = a[:keep_a]
        room = max_length - len(a)
        p = p[len(p) - room:] if room > 0 else []
    return Encoded(p + a, [IGNORE_INDEX] * len(p) + a, truncated)


class EncodedDataset(Dataset):
    """Fixed-length, right-padded tensors of a list of examples.

    ``dataset[i]`` is a tuple ``(input_ids, attention_mask, labels)`` of 1-D long tensors
    of length :attr:`length` (Opacus derives empty-batch shapes from ``dataset[0]``).
    ``pad_to`` is ``"longest"`` (the longest encoded example) or ``"max_length"``.
    """

    def __init__(self, tokenizer, examples: Sequence[Example], max_length: int = 128,
                 pad_to: str = "longest"):
        if not examples:
            raise ValueError("no examples to encode")
        if pad_to not in ("longest", "max_length"):
            raise ValueError(f"pad_to must be 'longest' or 'max_length', got {pad_to!r}")
        encoded = [encode(tokenizer, e, max_length) for e in examples]
        self.length = max_length if pad_to == "max_length" else max(len(e.input_ids) for e in encoded)
        pad = _pad_id(tokenizer)
        n = len(encoded)
        self.input_ids = torch.full((n, self.length), pad, dtype=torch.long)
        self.attention_mask = torch.zeros((n, self.length), dtype=torch.long)
        self.labels = torch.full((n, self.length), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(encoded):
            k = len(e.input_ids)
            self.input_ids[i, :k] = torch.tensor(e.input_ids)
            self.attention_mask[i, :k] = 1
            self.labels[i, :k] = torch.tensor(e.labels)
        self.n_answer_tokens = int((self.labels != IGNORE_INDEX).sum())
        self.n_truncated = sum(1 for e in encoded if e.truncated)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i):
        return self.input_ids[i], self.attention_mask[i], self.labels[i]

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``index`` (a tensor or list of ints), trimmed of all-padding right columns."""
        return trim(self.input_ids[index], self.attention_mask[index], self.labels[index])


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """Drop right columns that are padding in every row (exact for right padding)."""
    if input_ids.shape[0] == 0:
        return input_ids, attention_mask, labels
    used = attention_mask.any(dim=0).nonzero()
    k = int(used.max()) + 1 if used.numel() else 1
    return input_ids[:, :k], attention_mask[:, :k], labels[:, :k]


def iter_batches(dataset: EncodedDataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Consecutive batches in order (for evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield dataset.batch(list(range(start, min(start + batch_size, len(dataset)))))


def _example_record(e: Example) -> list:
    return [e.prompt, e.answer, list(e.references)]


def data_fingerprint(examples: Sequence[Example], ordered: bool = True) -> str:
    """sha256 over the examples' (prompt, answer, references).

    ``ordered=True`` (the default) fingerprints the exact sequence trained on (order
    matters for reproducibility); ``ordered=False`` fingerprints the multiset of examples,
    so a shuffled copy of a dataset has the same fingerprint (for privacy ledgers).
    """
    items = [json.dumps(_example_record(e), ensure_ascii=False, separators=(",", ":")) for e in examples]
    h = hashlib.sha256()
    h.update(b"gtapp-examples-v1|ordered|" if ordered else b"gtapp-examples-v1|multiset|")
    if not ordered:
        items = sorted(hashlib.sha256(s.encode()).hexdigest() for s in items)
    for s in items:
        b = s.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
