"""User datasets: JSONL / CSV files with prompt and answer columns."""

from __future__ import annotations

import csv
import json
import re

import pytest

from gtapp.datasets import DatasetError, load_user_dataset


def make_csv(path, rows, header=("prompt", "answer")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_user_dataset(tmp_path):
    rows = [(f"Capital of country {i}?", f"City {i}") for i in range(20)]
    rows[3] = ("Line one\nline two of a prompt", "Multi")  # a quoted multi-line field
    p = make_csv(tmp_path / "mine.csv", rows)
    task = load_user_dataset(p, seed=0)
    assert task.name == "mine" and task.family == "user" and task.metric == "exact_match"
    assert (len(task.train), len(task.test)) == (18, 2)
    assert task.source["train_path"] == str(p.resolve()) and "seeded split" in task.source["split"]
    again = load_user_dataset(p, seed=0)
    assert [e.prompt for e in again.test] == [e.prompt for e in task.test]
    other = load_user_dataset(p, seed=1, test_fraction=0.25)
    assert len(other.test) == 5
    assert {e.prompt for e in task.train} | {e.prompt for e in task.test} == {r[0] for r in rows}
    assert any(e.prompt == "Line one\nline two of a prompt" for e in task.train + task.test)
    gold = [e.answer for e in task.test]
    assert task.score(gold, task.test) == 1.0
    assert task.score([g + "\nextra lines ignored" for g in gold], task.test) == 1.0
    assert task.score(["wrong"] * len(gold), task.test) == 0.0


def test_jsonl_user_dataset_with_references_and_test_file(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"prompt": f"{i} + {i} =", "answer": 2 * i}) for i in range(8)),
                     encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"prompt": "Colour of the sky?", "answer": "blue",
                                "references": ["light blue", "azure"]}) + "\n", encoding="utf-8")
    task = load_user_dataset(train, test_path=test, metric="exact_match")
    assert (len(task.train), len(task.test)) == (8, 1)
    assert task.train[3].answer == "6"  # numbers are accepted and kept as text
    assert task.test[0].references == ("light blue", "azure")
    assert task.score(["Azure"], task.test) == 1.0
    assert task.source["split"] == "files"
    num = load_user_dataset(train, metric="numeric_exact_match", test_fraction=0.5)
    assert num.score([f"The result is {e.answer}.0" for e in num.test], num.test) == 1.0


def test_tsv_and_rouge_metric(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("prompt\tanswer\nSummarise: a b c\tthe cat sat\nSummarise: d e\tthe dog ran\n",
                 encoding="utf-8")
    task = load_user_dataset(p, metric="rouge_l", test_fraction=0.5)
    assert task.metric == "rouge_l" and len(task.test) == 1
    assert task.score([task.test[0].answer], task.test) == pytest.approx(1.0)


def test_csv_missing_columns(tmp_path):
    p = make_csv(tmp_path / "bad.csv", [("q", "a")], header=("question", "label"))
    with pytest.raises(DatasetError) as e:
        load_user_dataset(p)
    assert str(e.value) == (f"{p} line 1: missing columns 'prompt', 'answer'; expected a header with "
                            "columns prompt, answer (found: question, label)")


def test_csv_row_errors_name_the_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('prompt,answer\n"two\nlines",ok\nonly-one-field\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 4: expected 2 fields (prompt, answer); got 1")):
        load_user_dataset(p)
    p.write_text("prompt,answer\nq1,a1\nq2,\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 3: expected 'answer' to be non-empty")):
        load_user_dataset(p)
    p.write_text("prompt,answer\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="a header but no rows"):
        load_user_dataset(p)


def test_jsonl_user_errors(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 2: expected a JSON object with keys prompt, "
                                                     "answer; missing 'answer'")):
        load_user_dataset(p)
    with pytest.raises(DatasetError, match="unknown metric 'bleu'"):
        load_user_dataset(p, metric="bleu")
    x = tmp_path / "u.xlsx"
    x.write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetError, match="unsupported file type.*expected .jsonl or .json or .csv or .tsv"):
        load_user_dataset(x)
    single = tmp_path / "one.jsonl"
    single.write_text('{"prompt": "a", "answer": "b"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="need at least 2 examples"):
        load_user_dataset(single)
