"""Examples -> padded, labelled tensors; Poisson batches; fingerprints."""

from __future__ import annotations

import pytest
import torch

from gtapp.data import (IGNORE_INDEX, EncodedDataset, answer_ids, data_fingerprint, encode, iter_batches,
                        prompt_ids, trim)
from gtapp.tasks.base import Example


@pytest.fixture(scope="module")
def tok(micro_zoo):
    from gtapp.models import load_tokenizer

    return load_tokenizer(micro_zoo / "tiny")


def test_labels_cover_answer_and_eos_only(tok):
    ex = Example("Question: Ann has 3 pears and gets 4 more. How many?\nAnswer:", " 7")
    enc = encode(tok, ex, max_length=128)
    p = prompt_ids(tok, ex.prompt)
    assert enc.input_ids[:len(p)] == p
    assert enc.labels[:len(p)] == [IGNORE_INDEX] * len(p)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert answer == answer_ids(tok, " 7")
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]) == " 7"
    assert not enc.truncated


def test_language_modelling_example_scores_every_token(tok):
    ex = Example("", "The cat sat on the mat. The dog ran.")
    enc = encode(tok, ex, max_length=128)
    start = prompt_ids(tok, "")  # the tokenizer's BOS, or EOS as a document break (the zoo)
    assert start == [tok.eos_token_id]
    assert enc.labels[:1] == [IGNORE_INDEX]
    assert enc.labels[1:] == enc.input_ids[1:]
    assert enc.n_answer_tokens == len(enc.input_ids) - 1
    assert enc.n_answer_tokens == len(answer_ids(tok, ex.answer))
    assert enc.input_ids[-1] == tok.eos_token_id


def test_truncation_keeps_the_answer(tok):
    long_prompt = "word " * 200 + "\nAnswer:"
    ex = Example(long_prompt, " 42")
    enc = encode(tok, ex, max_length=32)
    assert len(enc.input_ids) == 32 and enc.truncated
    a = answer_ids(tok, " 42")
    assert enc.input_ids[-len(a):] == a
    assert [t for t in enc.labels if t != IGNORE_INDEX] == a
    # The prompt lost its start, not its end (the part next to the answer).
    p = prompt_ids(tok, long_prompt)
    assert enc.input_ids[:-len(a)] == p[-(32 - len(a)):]
    # An answer longer than the budget is cut at its end; a prompt token stays.
    enc2 = encode(tok, Example("Q:", " one two three four five six seven eight nine ten" * 5), max_length=16)
    assert len(enc2.input_ids) == 16 and enc2.labels[0] == IGNORE_INDEX
    # Language modelling: the text is cut at its end.
    enc3 = encode(tok, Example("", "alpha beta gamma delta " * 30), max_length=20)
    assert len(enc3.input_ids) == 20 and enc3.labels[1:] == enc3.input_ids[1:]
    assert enc3.input_ids[1:] == answer_ids(tok, "alpha beta gamma delta " * 30)[:19]


def test_dataset_is_fixed_length_right_padded(tok):
    exs = [Example("Q: a?\nAnswer:", " 1"), Example("Q: a longer question here?\nAnswer:", " 12"),
           Example("", "some text to model")]
    ds = EncodedDataset(tok, exs, max_length=64)
    assert len(ds) == 3
    ids, mask, labels = ds[0]
    assert ids.shape == mask.shape == labels.shape == (ds.length,)
    assert ds.input_ids.shape == (3, ds.length)
    for i in range(3):
        m = ds.attention_mask[i]
        k = int(m.sum())
        assert m[:k].all() and not m[k:].any()  # ones then zeros: right padding
        assert (ds.input_ids[i, k:] == tok.pad_token_id).all()
        assert (ds.labels[i, k:] == IGNORE_INDEX).all()
    assert ds.n_answer_tokens == int((ds.labels != IGNORE_INDEX).sum())
    full = EncodedDataset(tok, exs, max_length=64, pad_to="max_length")
    assert full.length == 64
    # trim() drops only all-padding columns.
    b = full.batch([0, 1])
    assert b[0].shape[1] == int(full.attention_mask[:2].sum(1).max())
    assert torch.equal(b[2], full.labels[:2, :b[0].shape[1]])
    assert sum(x[0].shape[0] for x in iter_batches(full, 2)) == 3
    with pytest.raises(ValueError):
        EncodedDataset(tok, [], max_length=64)


def test_poisson_loader_handles_empty_batches(tok):
    from opacus.data_loader import DPDataLoader

    exs = [Example(f"Q: {i}?\nAnswer:", f" {i}") for i in range(6)]
    ds = EncodedDataset(tok, exs, max_length=32)
    loader = DPDataLoader(ds, sample_rate=0.05, generator=torch.Generator().manual_seed(0))
    sizes = []
    for _ in range(3):
        for ids, mask, labels in loader:
            assert ids.shape[1:] == (ds.length,) and mask.shape == ids.shape == labels.shape
            assert ids.dtype == torch.long
            sizes.append(ids.shape[0])
            t = trim(ids, mask, labels)
            assert t[0].shape[0] == ids.shape[0]
    assert 0 in sizes  # empty batches happened and had the right shape
    assert any(s > 0 for s in sizes)


def test_fingerprint():
    a = [Example("p1", "a1"), Example("p2", "a2", references=("x",))]
    b = list(reversed(a))
    fa = data_fingerprint(a)
    assert fa == data_fingerprint([Example("p1", "a1"), Example("p2", "a2", references=("x",))])
    assert len(fa) == 64
    assert data_fingerprint(b) != fa  # ordered by default
    assert data_fingerprint(b, ordered=False) == data_fingerprint(a, ordered=False)
    assert data_fingerprint([Example("p1", "a1"), Example("p2", "a2")]) != fa  # references count
    assert data_fingerprint([Example("p1", "a1 "), Example("p2", "a2", references=("x",))]) != fa
    # No ambiguity between field boundaries.
    assert data_fingerprint([Example("ab", "c")]) != data_fingerprint([Example("a", "bc")])
