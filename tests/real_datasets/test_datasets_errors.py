"""Malformed, empty, oversized or unsafe files: DatasetError naming file, line/record and expectation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gtapp import datasets
from gtapp.datasets import DatasetError


def write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


GOOD = {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}


def test_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_key_names_file_line_and_expected_keys(tmp_path):
    p = write_lines(tmp_path / "train.jsonl", [GOOD] * 6 + [{"question": "No answer here?"}])
    with pytest.raises(DatasetError) as e:
        datasets.load("gsm8k", p)
    assert str(e.value) == (f"{p} line 7: expected a JSON object with keys question, answer; "
                            "missing 'answer'")


def test_invalid_json_and_non_object_lines(tmp_path):
    p = write_lines(tmp_path / "train.jsonl", [GOOD, GOOD, '{"question": "oops", "answer": '])
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 3: invalid JSON")):
        datasets.load("gsm8k", p)
    p = write_lines(tmp_path / "t2.jsonl", [GOOD, ["question", "answer"]])
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 2: expected a JSON object with keys "
                                                     "question, answer; got a list")):
        datasets.load("gsm8k", p)
    p = write_lines(tmp_path / "t3.jsonl", [{"question": 5, "answer": "#### 5"}])
    with pytest.raises(DatasetError, match="line 1: expected 'question' to be a string; got a number"):
        datasets.load("gsm8k", p)


def test_blank_lines_keep_line_numbers(tmp_path):
    p = write_lines(tmp_path / "train.jsonl", [GOOD, "", "   ", {"question": "q", "answer": "no marker"}])
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 4: expected 'answer' to end with "
                                                     "'#### <number>'")):
        datasets.load("gsm8k", p)


def test_gsm8k_answer_after_hashes_must_be_a_number(tmp_path):
    p = write_lines(tmp_path / "train.jsonl", [{"question": "q", "answer": "#### many"}])
    with pytest.raises(DatasetError, match="line 1: expected a number after '####'"):
        datasets.load("gsm8k", p)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "train.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p}: file is empty")):
        datasets.load("gsm8k", p)


def test_empty_json_list_and_object(tmp_path):
    (tmp_path / "train.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match="file is empty"):
        datasets.load("samsum", tmp_path / "train.json")
    (tmp_path / "d.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetError, match="file is empty"):
        datasets.load("drop", tmp_path / "d.json")


def test_bad_encoding_names_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"question": "caf\u00e9"}'.encode("latin-1") + b"\n")
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 2: not valid UTF-8 (byte 0xe9 at column 18)")):
        datasets.load("gsm8k", p)


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode() * 3)
    assert len(datasets.load("gsm8k", p, p).test) == 3


@pytest.mark.parametrize("name", ["train.txt", "train.csv", "train.pkl", "train.py", "train"])
def test_wrong_extension(tmp_path, name):
    p = write_lines(tmp_path / name, [GOOD])
    with pytest.raises(DatasetError, match=re.escape(f"{p}: unsupported file type") + ".*expected .jsonl or .json"):
        datasets.load("gsm8k", p)


def test_row_over_size_bound(tmp_path):
    long = {"question": "x" * 100_001, "answer": "#### 1"}
    p = write_lines(tmp_path / "train.jsonl", [GOOD, long])
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 2: row is 100,") + ".*limit is 100,000"):
        datasets.load("gsm8k", p)
    small = write_lines(tmp_path / "small.jsonl", [GOOD, {"question": "y" * 300, "answer": "#### 1"}])
    with pytest.raises(DatasetError, match="line 2: row is .* the limit is 200"):
        datasets.load("gsm8k", small, max_row_chars=200)
    assert len(datasets.load("gsm8k", p, p, max_row_chars=200_000).train) == 2


def test_json_record_over_size_bound(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps([{"id": "1", "summary": "s", "dialogue": "d"},
                             {"id": "2", "summary": "s", "dialogue": "d" * 500}]), encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} record 1: row is")):
        datasets.load("samsum", p, max_row_chars=100)


def test_too_many_rows(tmp_path):
    p = write_lines(tmp_path / "train.jsonl", [GOOD] * 5)
    with pytest.raises(DatasetError, match=re.escape(f"{p}: more than 3 rows (at {p} line 4)")):
        datasets.load("gsm8k", p, max_rows=3)
    assert len(datasets.load("gsm8k", p, max_rows=5).train) == 4


def test_json_list_record_errors_name_the_record(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps([{"id": "1", "summary": "s", "dialogue": "d"}, {"id": "2", "dialogue": "d"}]),
                 encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} record 1: expected a JSON object with keys "
                                                     "dialogue, summary; missing 'summary'")):
        datasets.load("samsum", p)
    p.write_text('[\n {"id": "1", "summary": "s", "dialogue": "d"},\n]\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} line 3: invalid JSON")):
        datasets.load("samsum", p)


def test_pretty_printed_object_where_lines_expected(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(GOOD, indent=2), encoding="utf-8")
    with pytest.raises(DatasetError, match="line 1: expected one JSON object per line"):
        datasets.load("gsm8k", p)


def test_drop_errors_name_passage_and_question(tmp_path):
    p = tmp_path / "drop_dataset_dev.json"
    p.write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p}: expected one JSON object (id -> record); got a list")):
        datasets.load("drop", p)
    bad = {"p1": {"passage": "Text.", "qa_pairs": [
        {"question": "Q?", "answer": {"number": "3", "date": {}, "spans": []}},
        {"question": "Q2?", "answer": {"number": "", "date": {}, "spans": "not a list"}}]}}
    p.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{p} record 0 ('p1') qa_pairs[1] answer: expected "
                                                     "'spans' to be a list of strings")):
        datasets.load("drop", p)
    p.write_text(json.dumps({"p1": {"passage": "Text."}}), encoding="utf-8")
    with pytest.raises(DatasetError, match="record 0 \\('p1'\\): expected a JSON object with keys passage, "
                                           "qa_pairs; missing 'qa_pairs'"):
        datasets.load("drop", p)


def test_multiple_choice_errors(tmp_path):
    rec = {"question": "q", "options": ["A)1", "B)2", "C)3"], "rationale": "", "correct": "D"}
    p = write_lines(tmp_path / "train.json", [rec])
    with pytest.raises(DatasetError, match="line 1: expected 'correct' to be one of A, B, C; got 'D'"):
        datasets.load("aqua_rat", p)
    p = write_lines(tmp_path / "train.json", [dict(rec, options=["A)1", "two"], correct="A")])
    with pytest.raises(DatasetError, match=re.escape("line 1: expected options[1] to look like 'A)12'")):
        datasets.load("aqua_rat", p)
    no_key = {"id": "x", "question": {"stem": "s?", "choices": [{"label": "A", "text": "a"}]}}
    p = write_lines(tmp_path / "test_rand_split_no_answers.jsonl", [no_key])
    with pytest.raises(DatasetError, match="line 1: .*missing 'answerKey' .*use dev_rand_split.jsonl"):
        datasets.load("commonsenseqa", p)
    p = write_lines(tmp_path / "t.jsonl", [{"id": "x", "question": "flat string", "answerKey": "A"}])
    with pytest.raises(DatasetError, match="line 1: expected 'question' to be an object with keys stem, choices"):
        datasets.load("commonsenseqa", p)


def test_missing_file_and_deep_nesting(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        datasets.load("gsm8k", tmp_path / "absent.jsonl")
    p = tmp_path / "train.json"
    p.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(DatasetError, match="nested too deeply"):
        datasets.load("samsum", p)


def test_loading_never_executes_file_content(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    p = write_lines(tmp_path / "train.jsonl", [{"question": code, "answer": "#### 1"}] * 2)
    task = datasets.load("gsm8k", p, p)
    assert code in task.train[0].prompt
    assert not marker.exists()


def test_skip_invalid_records_on_request(tmp_path):
    good = {"question": "q", "options": ["A)1", "B)2"], "rationale": "", "correct": "B"}
    p = write_lines(tmp_path / "train.json", [good, dict(good, correct="Z"), good, good])
    with pytest.raises(DatasetError, match="line 2"):
        datasets.load("aqua_rat", p)
    task = datasets.load("aqua_rat", p, skip_invalid=True, test_fraction=0.34)
    assert len(task.train) + len(task.test) == 3
    assert task.source["skipped"] == 1
    assert task.source["invalid"] == [f"{p} line 2: expected 'correct' to be one of A, B; got 'Z'"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"question": ', encoding="utf-8")
    with pytest.raises(DatasetError, match="invalid JSON"):  # unreadable files still raise
        datasets.load("aqua_rat", broken, skip_invalid=True)
