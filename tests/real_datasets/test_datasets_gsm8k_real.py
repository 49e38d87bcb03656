"""GSM8K loader against the real published files in ../shared/datasets/gsm8k (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gtapp import datasets

# ../shared beside the checkout (CI lays a copy there too).
GSM8K = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gsm8k"

pytestmark = pytest.mark.skipif(
    not (GSM8K / "train.jsonl").is_file() or not (GSM8K / "test.jsonl").is_file(),
    reason=f"real GSM8K copy not found at {GSM8K} (train.jsonl, test.jsonl)")


@pytest.fixture(scope="module")
def task():
    return datasets.load("gsm8k", path=GSM8K)


def test_published_counts(task):
    assert len(task.train) == 7473
    assert len(task.test) == 1319
    assert task.source["split"] == "files"
    assert task.source["train_path"].endswith("train.jsonl")
    assert task.metric == "numeric_exact_match" and task.metric_name == "exact_match"


def test_answers_are_the_numbers_after_hashes(task):
    raw = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text(encoding="utf-8").splitlines()
           if line.strip()]
    assert len(raw) == len(task.test)
    for rec, ex in zip(raw, task.test):
        assert ex.answer == rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert ex.prompt == f"Question: {rec['question'].strip()}\nAnswer:"
        assert "####" not in ex.meta["rationale"]
    assert task.test[0].answer == "18"  # Janet's ducks
    # numbers with thousands separators in the file are stored without them
    assert any(len(e.answer) >= 4 for e in task.train)
    assert all("," not in e.answer for e in task.train)


def test_gold_scores_one_and_wrong_scores_zero(task):
    gold = [e.answer for e in task.test]
    assert task.score(gold, task.test) == 1.0
    assert task.score([f"#### {a}" for a in gold], task.test) == 1.0
    assert task.score([f"The answer is {a}." for a in gold], task.test) == 1.0
    wrong = [str(int(float(a)) + 1) for a in gold]
    assert task.score(wrong, task.test) == 0.0
    assert task.extract("Some work: 3 + 4 = 7\n#### 1,234") == "1,234"
    assert task.score(["1,234"], [datasets.REGISTRY["gsm8k"].parse("x", {"question": "q", "answer": "#### 1234"})[0]]) == 1.0


def test_seeded_split_and_limit_of_train_file():
    a = datasets.load("gsm8k", GSM8K / "train.jsonl", seed=3, limit=40)
    b = datasets.load("gsm8k", GSM8K / "train.jsonl", seed=3, limit=40)
    c = datasets.load("gsm8k", GSM8K / "train.jsonl", seed=4, limit=40)
    assert len(a.train) == len(a.test) == 40
    assert a.source["full_sizes"] == {"train": 6726, "test": 747}
    assert [e.prompt for e in a.test] == [e.prompt for e in b.test]
    assert [e.prompt for e in a.test] != [e.prompt for e in c.test]
    assert not {e.prompt for e in a.train} & {e.prompt for e in a.test}
