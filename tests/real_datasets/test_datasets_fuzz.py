"""Hostile dataset files: every input either loads to valid examples or raises DatasetError
whose message names the file, says what was wrong and what was expected; never another
exception, and nothing is written anywhere while a file is read.

Property tests (hypothesis) over random bytes, mutated valid JSONL/JSON/CSV files, bad
encodings and schema-aware corruptions of valid records, for the user loader and the six
published-format loaders; then explicit cases (empty and whitespace-only files, a
million-character row, deep nesting, non-object JSON, wrong-typed fields, header-only CSV,
huge numbers of columns, files over the size limit, binary files, devices and pipes).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import pickle
import re
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from gtapp import datasets
from gtapp.datasets import DatasetError, Limits, load_user_dataset
from gtapp.datasets._io import iter_csv, iter_records, read_json_object, read_text
from storage.catalog import examples_to_jsonl, jsonl_to_examples

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------ the property

# words that say what was wrong / what was expected
_SAYS_WHAT = re.compile(r"expected|limit|empty|need at least|invalid|not valid|unsupported|malformed|missing|"
                        r"nested|NUL|not a regular file|folder")
# raw Python messages that must never reach a user
_RAW = re.compile(r"Traceback|set_int_max_str_digits|codec can't|object has no attribute|unhashable|"
                  r"not subscriptable|KeyError|IndexError|RecursionError|MemoryError")


def assert_clear(err: DatasetError, path: Path) -> str:
    msg = str(err)
    assert str(path) in msg, f"message does not name the file: {msg!r}"
    assert _SAYS_WHAT.search(msg), f"message does not say what was wrong/expected: {msg!r}"
    assert not _RAW.search(msg), f"raw Python error text in message: {msg!r}"
    assert len(msg) < 600 + len(str(path)), f"message is {len(msg)} characters: {msg[:300]!r}..."
    assert msg.isprintable(), f"control characters in message: {msg!r}"
    return msg


def assert_valid(task) -> None:
    examples = list(task.train) + list(task.test)
    assert task.train and task.test
    for e in examples:
        assert isinstance(e.prompt, str) and isinstance(e.answer, str) and e.answer.strip()
        assert all(isinstance(r, str) for r in e.references)
    # what ingest stores must encode (no lone surrogates) and read back, by the jobs' reader,
    # to the very same examples: any dataset that validates, trains
    stored = jsonl_to_examples(examples_to_jsonl(examples))
    assert [(d["prompt"], d["answer"], d["references"]) for d in stored] == \
        [(e.prompt, e.answer, list(e.references)) for e in examples]


# every write-ish operation while a loader runs (audit hooks cannot be removed: gate on a flag)
_WRITES: list | None = None
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.truncate",
                 "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.move", "shutil.rmtree",
                 "os.mkfifo", "os.mknod", "tempfile.mkstemp", "tempfile.mkdtemp"}
_AUDIT_THREAD = threading.get_ident()


def _audit(event: str, args: tuple) -> None:
    if _WRITES is None or threading.get_ident() != _AUDIT_THREAD:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS):
            _WRITES.append((event, path))
    elif event in _WRITE_EVENTS:
        _WRITES.append((event, args[0] if args else None))


sys.addaudithook(_audit)


def attempt(load, path: Path):
    """``load(path)`` -> Task, or the (checked) DatasetError; anything else fails the test.
    Also checks the loader wrote nothing (not even inside the file's folder) and left the
    file as it was."""
    global _WRITES
    before = sorted(os.listdir(path.parent)), path.read_bytes() if path.is_file() else None
    _WRITES = []
    try:
        result = load(path)
    except DatasetError as e:
        result = e
    finally:
        writes, _WRITES = _WRITES, None
    assert writes == [], f"the loader wrote files: {writes}"
    assert (sorted(os.listdir(path.parent)), path.read_bytes() if path.is_file() else None) == before
    if isinstance(result, DatasetError):
        assert_clear(result, path)
    else:
        assert_valid(result)
    return result


# ------------------------------------------------------------------------ the loaders

def _user(metric="exact_match", **kw):
    return lambda p: load_user_dataset(p, metric=metric, **kw)


def _known(name, **kw):
    return lambda p: datasets.load(name, train_path=p, **kw)


GOOD_RECORDS = {
    "gsm8k": [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(3)],
    "aqua_rat": [{"question": f"Pick {c}.", "options": ["A)1", "B)2", "C)3"], "rationale": "r", "correct": c}
                 for c in "ABC"],
    "commonsenseqa": [{"id": str(i), "question": {"question_concept": "c", "stem": f"Stem {i}?", "choices": [
        {"label": "A", "text": "yes"}, {"label": "B", "text": "no"}]}, "answerKey": "AB"[i % 2]} for i in range(3)],
    "samsum": [{"id": str(i), "dialogue": f"A: hi {i}\nB: hello", "summary": f"They greet {i}."} for i in range(3)],
    "dialogsum": [{"fname": f"f{i}", "dialogue": f"#Person1#: hi {i}", "summary": f"Greeting {i}.", "topic": "t"}
                  for i in range(2)] + [{"fname": "t", "dialogue": "#Person1#: bye", "summary1": "Bye.",
                                         "summary2": "Farewell.", "summary3": "Leaving."}],
    "user": [{"prompt": f"{i} + {i} =", "answer": str(2 * i), "references": [f"{2 * i}.0"]} for i in range(3)],
}
GOOD_DROP = {f"p{i}": {"passage": f"Passage {i}. It has {i} apples.", "qa_pairs": [
    {"question": "How many apples?", "answer": {"number": str(i), "date": {"day": "", "month": "", "year": ""},
                                                "spans": []}, "query_id": f"q{i}", "validated_answers": []},
    {"question": "Which fruit?", "answer": {"number": "", "date": {}, "spans": ["apples"]}, "query_id": f"r{i}"}]}
    for i in range(3)}


def jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def csv_bytes(rows, header=("prompt", "answer", "references"), delimiter=",") -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


# (file name, loader, valid content)
TARGETS = {
    "user.jsonl": ("mine.jsonl", _user(), jsonl(GOOD_RECORDS["user"])),
    "user.json": ("mine.json", _user(), json.dumps(GOOD_RECORDS["user"], indent=1).encode()),
    "user.csv": ("mine.csv", _user("numeric_exact_match"),
                 csv_bytes([("Line one\nline two", "4", "4.0|four"), ("b, with comma", '"quoted"', ""),
                            ("c", "6", "")])),
    "user.tsv": ("mine.tsv", _user("rouge_l"), csv_bytes([("a", "the cat", ""), ("b", "a dog", "")], delimiter="\t")),
    "gsm8k": ("train.jsonl", _known("gsm8k"), jsonl(GOOD_RECORDS["gsm8k"])),
    "aqua_rat": ("train.json", _known("aqua_rat"), jsonl(GOOD_RECORDS["aqua_rat"])),
    "commonsenseqa": ("train_rand_split.jsonl", _known("commonsenseqa"), jsonl(GOOD_RECORDS["commonsenseqa"])),
    "drop": ("drop_dataset_train.json", _known("drop"), json.dumps(GOOD_DROP).encode()),
    "samsum": ("train.json", _known("samsum"), json.dumps(GOOD_RECORDS["samsum"]).encode()),
    "dialogsum": ("dialogsum.train.jsonl", _known("dialogsum"), jsonl(GOOD_RECORDS["dialogsum"])),
}
TARGET_NAMES = list(TARGETS)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A fresh folder per example: write(target, data) -> the file's path."""
    root = tmp_path_factory.mktemp("fuzz")
    counter = iter(range(10 ** 9))

    def write(target: str, data: bytes, name: str | None = None) -> Path:
        d = root / f"e{next(counter)}"
        d.mkdir()
        p = d / (name or TARGETS[target][0])
        p.write_bytes(data)
        return p
    return write


def run(box, target: str, data: bytes, name: str | None = None):
    return attempt(TARGETS[target][1], box(target, data, name))


def test_the_valid_seeds_load(box):
    for t in TARGET_NAMES:
        assert not isinstance(run(box, t, TARGETS[t][2]), DatasetError), t


# ------------------------------------------------------------------------ properties

@FUZZ
@given(target=st.sampled_from(TARGET_NAMES), data=st.binary(max_size=3000))
def test_random_bytes(box, target, data):
    run(box, target, data)


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few byte flips, truncations, inserted NULs / random bytes, deletions."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "nul", "insert", "delete", "dup", "crlf"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from(b'"{}[],:\\\n\r\t 0\x00\x80\xff\xc3\xed'))
        elif op == "truncate":
            del data[i:]
        elif op == "nul":
            data[i:i] = b"\x00" * draw(st.integers(1, 3))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 30))]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 60))]
        elif op == "crlf":
            data = bytearray(bytes(data).replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\n\n"]))))
    return bytes(data)


@FUZZ
@given(st.data())
def test_mutated_valid_files(box, data):
    target = data.draw(st.sampled_from(TARGET_NAMES))
    run(box, target, data.draw(mutated(TARGETS[target][2])))


ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-7",
             "shift_jis", "mac_roman"]


@FUZZ
@given(target=st.sampled_from(TARGET_NAMES), encoding=st.sampled_from(ENCODINGS),
       extra=st.text(alphabet=st.characters(min_codepoint=0xa0, max_codepoint=0x2fff), max_size=8))
def test_valid_files_in_other_encodings(box, target, encoding, extra):
    text = TARGETS[target][2].decode().replace("1", "1" + extra, 1)
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode(encoding, errors="replace")
    result = run(box, target, data)
    if encoding in ("utf-8", "utf-8-sig") and not extra:
        assert not isinstance(result, DatasetError), result


INVALID_UTF8 = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe2\x82", b"\xed\xa0\x80",
                b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xf0\x9f\x98"]


@FUZZ
@given(st.data())
def test_invalid_utf8_sequences(box, data):
    target = data.draw(st.sampled_from(TARGET_NAMES))
    seed = TARGETS[target][2]
    i = data.draw(st.integers(0, len(seed)))
    bad = data.draw(st.sampled_from(INVALID_UTF8))
    result = run(box, target, seed[:i] + bad + seed[i:])
    assert isinstance(result, DatasetError)
    assert "UTF-8" in str(result) or "not text" in str(result), str(result)


# JSON values, including the ones Python's json accepts but JSON does not (NaN, Infinity)
_scalars = (st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
            | st.sampled_from(["", " ", "#### 7", "A)1", "A", "\u0000", "\ud800", "line\nbreak", "1e999"]))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@st.composite
def corrupted(draw, value):
    """A valid record with random parts replaced, deleted or added (schema-aware fuzz)."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(json_values)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            action = draw(st.sampled_from(["keep", "keep", "recurse", "drop", "replace"]))
            if action == "keep":
                out[k] = v
            elif action == "recurse":
                out[k] = draw(corrupted(v))
            elif action == "replace":
                out[k] = draw(json_values)
        if draw(st.booleans()):
            out[draw(st.text(max_size=10))] = draw(json_values)
        return out
    if isinstance(value, list):
        items = [draw(corrupted(v)) if draw(st.booleans()) else v for v in value]
        if items and draw(st.booleans()):
            items.pop(draw(st.integers(0, len(items) - 1)))
        if draw(st.booleans()):
            items.append(draw(json_values))
        return items
    return draw(json_values) if roll < 5 else value


def _serialise(target: str, records) -> bytes:
    if target == "drop":
        return json.dumps(records, ensure_ascii=True).encode()
    if target in ("samsum", "user.json"):
        return json.dumps(records, ensure_ascii=True).encode()
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode()


JSON_TARGETS = [t for t in TARGET_NAMES if t not in ("user.csv", "user.tsv")]


@FUZZ
@given(st.data())
def test_corrupted_records(box, data):
    target = data.draw(st.sampled_from(JSON_TARGETS))
    if target == "drop":
        records = data.draw(corrupted(GOOD_DROP))
    else:
        base = GOOD_RECORDS["user" if target.startswith("user") else target]
        records = [data.draw(corrupted(r)) for r in base]
    run(box, target, _serialise(target, records))


_cells = st.text(max_size=20) | st.sampled_from(["", " ", "a,b", 'say "hi"', "x\ny", "\r", "|", "a|b", "\t", '"'])


@FUZZ
@given(header=st.lists(st.sampled_from(["prompt", "answer", "references", " prompt ", "Prompt", "", "extra"])
                       | st.text(max_size=8), max_size=6),
       rows=st.lists(st.lists(_cells, max_size=6), max_size=6),
       delimiter=st.sampled_from([",", "\t"]), raw=st.booleans(), ext=st.sampled_from([".csv", ".tsv"]))
def test_random_csv(box, header, rows, delimiter, raw, ext):
    if raw:  # joined without quoting: stray quotes, separators and line breaks
        data = "\n".join(delimiter.join(r) for r in [header, *rows]).encode()
    else:
        data = csv_bytes(rows, header=header, delimiter=delimiter)
    run(box, "user.csv", data, name="mine" + ext)


# ------------------------------------------------------------------------ explicit cases

EMPTY = [b"", b" ", b"\n", b"\n\n  \n", b"\t \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf  \n", b"\r\r\r", b"\x0b\x0c"]


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("data", EMPTY, ids=repr)
def test_empty_and_whitespace_only(box, target, data):
    e = run(box, target, data)
    assert isinstance(e, DatasetError) and "file is empty" in str(e), e


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_a_million_character_row(box, target):
    big = "x" * 1_000_000
    data = {
        "user.csv": csv_bytes([(big, "a", "")]), "user.tsv": csv_bytes([(big, "a", "")], delimiter="\t"),
        "drop": json.dumps({"p": dict(GOOD_DROP["p0"], passage=big)}).encode(),
        "samsum": json.dumps([dict(GOOD_RECORDS["samsum"][0], dialogue=big)]).encode(),
        "user.json": json.dumps([dict(GOOD_RECORDS["user"][0], prompt=big)]).encode(),
    }.get(target)
    if data is None:
        rec = dict(GOOD_RECORDS["user" if target.startswith("user") else target][0])
        rec[next(iter(rec))] = big
        data = jsonl([rec])
    e = run(box, target, data)
    assert isinstance(e, DatasetError) and re.search(r"row is (over )?1?[,0-9]+ characters; the limit is 100,000",
                                                     str(e)), e
    # a million characters in one CSV field, with the row limit raised: loads
    if target == "user.csv":
        p = box(target, csv_bytes([(big, "a", ""), ("b", "c", "")]))
        task = attempt(_user(max_row_chars=2_000_000), p)
        assert max(len(x.prompt) for x in task.train + task.test) == 1_000_000


@pytest.mark.parametrize("depth", [65, 500, 990, 5_000, 100_000])
@pytest.mark.parametrize("target", JSON_TARGETS)
def test_deeply_nested_json(box, target, depth):
    nest = "[" * depth + "]" * depth
    if target == "drop":
        data = ('{"p": {"passage": "x", "qa_pairs": [], "extra": ' + nest + "}}").encode()
    elif target in ("samsum", "user.json"):
        data = ('[{"prompt": "p", "answer": "a", "id": ' + nest + ', "dialogue": "d", "summary": "s"}]').encode()
    else:
        data = ('{"prompt": "p", "answer": "a", "x": ' + nest + "}\n").encode() * 2
    e = run(box, target, data)
    assert isinstance(e, DatasetError), e
    assert re.search(r"nested too deeply|row is .* characters", str(e)), e


@pytest.mark.parametrize("line", ['5', '"a string"', 'null', 'true', '[1, 2]', '[]', '{}', '"{\\"prompt\\": 1}"',
                                  '1e999', 'NaN', '-Infinity'])
@pytest.mark.parametrize("target", ["user.jsonl", "gsm8k", "commonsenseqa", "dialogsum", "aqua_rat"])
def test_json_that_is_not_an_object(box, target, line):
    good = TARGETS[target][2].decode()
    e = run(box, target, (good + line + "\n").encode())
    assert isinstance(e, DatasetError) and " line 4: " in str(e), e


@pytest.mark.parametrize("doc", ['"a string"', "5", "[1, 2]", "null", '{"p": 5}', '{"p": []}', "[]", "{}"])
def test_drop_file_that_is_not_an_object_of_records(box, doc):
    e = run(box, "drop", doc.encode())
    assert isinstance(e, DatasetError), e


@pytest.mark.parametrize("field,value,says", [
    ("prompt", True, "got a boolean"), ("prompt", None, "got a null"), ("prompt", [], "got a list"),
    ("prompt", {"a": 1}, "got a object"), ("answer", "", "non-empty"), ("answer", "  \n", "non-empty"),
    ("answer", float("nan"), "NaN is not valid JSON"), ("answer", float("inf"), "Infinity is not valid JSON"),
    ("references", 5, "list of strings; got a number"), ("references", [1, None], "references[1] is a null"),
    ("references", [["x"]], "references[0] is a list"), ("references", {"a": "b"}, "got a object"),
])
def test_user_wrong_typed_fields(box, field, value, says):
    rows = [dict(r) for r in GOOD_RECORDS["user"]]
    rows[1][field] = value
    e = run(box, "user.jsonl", jsonl(rows))
    assert isinstance(e, DatasetError) and " line 2: " in str(e) and says in str(e), e


def test_user_missing_and_extra_fields(box):
    rows = [dict(r) for r in GOOD_RECORDS["user"]]
    rows[2].pop("prompt")
    e = run(box, "user.jsonl", jsonl(rows))
    assert isinstance(e, DatasetError) and "line 3: expected a JSON object with keys prompt, answer; missing 'prompt'" \
        in str(e)
    extra = [dict(r, id=i, meta={"k": [1, 2]}, notes=None) for i, r in enumerate(GOOD_RECORDS["user"])]
    task = run(box, "user.jsonl", jsonl(extra))  # extra fields are ignored
    assert len(task.train) + len(task.test) == 3
    numbers = [{"prompt": 12, "answer": 3.5}, {"prompt": -1, "answer": 0}]
    task = run(box, "user.jsonl", jsonl(numbers))  # numbers are kept as text
    assert {e.answer for e in task.train + task.test} == {"3.5", "0"}


@pytest.mark.parametrize("text,says", [
    ('{"prompt": "a", "answer": 1' + "1" * 5000 + "}\n", "thousands of digits"),
    ('{"prompt": "a", "answer": 1e999}\n', "too large"),
    ('{"prompt": "a", "answer": "\\ud800"}\n', "unpaired surrogate"),
    ('{"prompt": "\\udfff x", "answer": "b"}\n', "unpaired surrogate"),
    ('{"prompt": "a", "answer": "b", "\\ud800": 1}\n', "unpaired surrogate"),
])
def test_json_values_python_accepts_but_a_dataset_must_not_hold(box, text, says):
    e = run(box, "user.jsonl", (text + '{"prompt": "c", "answer": "d"}\n').encode())
    assert isinstance(e, DatasetError) and "line 1: " in str(e) and says in str(e), e
    as_samsum = text.replace('"prompt"', '"dialogue"').replace('"answer"', '"summary"')
    e = run(box, "samsum", ("[" + as_samsum + "]").encode())
    assert isinstance(e, DatasetError) and says in str(e), e


def test_paired_surrogate_escapes_are_fine(box):
    task = run(box, "user.jsonl",
               b'{"prompt": "smile \\ud83d\\ude00", "answer": "ok"}\n{"prompt": "b", "answer": "c"}\n')
    assert any("\U0001f600" in e.prompt for e in task.train + task.test)


@pytest.mark.parametrize("data", [b"prompt,answer", b"prompt,answer\n", b"prompt,answer\r\n\r\n",
                                  b"\n\nprompt,answer\n", b"\xef\xbb\xbfprompt,answer\n",
                                  b"prompt,answer,references\n,,\n , \n"])
def test_csv_with_a_header_only(box, data):
    e = run(box, "user.csv", data)
    assert isinstance(e, DatasetError) and "a header but no rows" in str(e), e


def test_csv_header_after_blank_lines_and_crlf(box):
    task = run(box, "user.csv", b"\r\n\r\nprompt,answer\r\na,b\r\nc,d\r\n")
    assert len(task.train) + len(task.test) == 2


def test_huge_numbers_of_columns(box):
    many = [f"c{i}" for i in range(15_000)]
    e = run(box, "user.csv", (",".join(many) + "\n" + ",".join("x" * 15_000) + "\n").encode())
    assert isinstance(e, DatasetError) and "missing columns 'prompt', 'answer'" in str(e)
    assert "... (15000 columns)" in str(e) and len(str(e)) < 500
    header = many[:5_000] + ["prompt", "answer"]
    row = ["v"] * 5_000 + ["q", "a"]
    task = run(box, "user.csv", "\n".join(",".join(r) for r in [header, row, row]).encode())
    assert task.train[0].prompt == "q" and task.train[0].answer == "a"
    e = run(box, "user.csv", "\n".join(",".join(r) for r in [header, row, row[:-1]]).encode())
    assert isinstance(e, DatasetError) and "line 3: expected 5002 fields" in str(e) and len(str(e)) < 500
    wide = ",".join(f"column_{i}" for i in range(200_000))  # 2 MB header: the row limit applies to it too
    e = run(box, "user.csv", (wide + "\nq,a\n").encode())
    assert isinstance(e, DatasetError) and "line 1 (the header): row is" in str(e), e
    e = run(box, "user.csv", b"prompt,answer,prompt\nq,a,r\n")
    assert isinstance(e, DatasetError) and "column 'prompt' appears more than once" in str(e), e


@pytest.mark.parametrize("data,says", [
    (b'prompt,answer\n"a"x,b\n', "line 2: malformed CSV"),
    (b'prompt,answer\n"never closed,b\nc,d\n', "line 2: malformed CSV (unexpected end of data)"),
    (b"prompt,answer\na,b,c\nd,e\n", "line 2: expected 2 fields (prompt, answer); got 3; put a field"),
    (b"prompt\tanswer\na\tb\n", "missing columns"),
])
def test_malformed_csv(box, data, says):
    e = run(box, "user.csv", data)
    assert isinstance(e, DatasetError) and says in str(e), e


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_files_over_the_size_limit(box, target):
    name, load, good = TARGETS[target]
    p = box(target, good)
    kw = {"max_file_bytes": len(good) - 1}
    loader = (lambda q: load_user_dataset(q, **kw)) if target.startswith("user") else \
        (lambda q: datasets.load(target, train_path=q, **kw))
    e = attempt(loader, p)
    assert isinstance(e, DatasetError) and f"file is {len(good):,} bytes; the limit is {len(good) - 1:,}" in str(e), e
    assert not isinstance(attempt(lambda q: load_user_dataset(q, max_file_bytes=len(good)) if target.startswith("user")
                                  else datasets.load(target, train_path=q, max_file_bytes=len(good)), p), DatasetError)
    for reader in (lambda q, lim: list(iter_records(q, lim)), lambda q, lim: list(read_json_object(q, lim)),
                   lambda q, lim: list(iter_csv(q, lim, ("prompt",))), read_text):
        with pytest.raises(DatasetError, match="max_file_bytes"):
            reader(p, Limits.make(max_file_bytes=10))


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.jsonl", jsonl(GOOD_RECORDS["user"]))
    return buf.getvalue()


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\x00" * 8


BINARIES = {
    "pickle": (pickle.dumps({"prompt": "a", "answer": "b"}, protocol=4), "a Python pickle"),
    "pickle2": (pickle.dumps([1, 2, 3], protocol=2), "a Python pickle"),
    "zip": (_zip(), "a zip archive"),
    "safetensors": (_safetensors(), "a safetensors file"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(range(256)), "gzip-compressed"),
    "numpy": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}" + b"\x00" * 40, "a NumPy array file"),
    "utf16-bom": ("prompt,answer\na,b\n".encode("utf-16"), "UTF-16 text"),
    "utf16-be-bom": (codecs.BOM_UTF16_BE + "prompt,answer\na,b\n".encode("utf-16-be"), "UTF-16 text"),
    "utf32-bom": ("prompt,answer\na,b\n".encode("utf-32"), "UTF-32 text"),
    "utf16-no-bom": ("prompt,answer\na,b\n".encode("utf-16-le"), "looks like UTF-16"),
    "utf16-be-no-bom": ('{"prompt": "a", "answer": "b"}\n'.encode("utf-16-be"), "looks like UTF-16"),
    "latin-1": ("prompt,answer\ncafé,b\nc,d\n".encode("latin-1"), "line 2: not valid UTF-8 (byte 0xe9 at column 4)"),
    "cp1252": ('{"prompt": "\u201cquoted\u201d", "answer": "b"}\n'.encode("cp1252"),
               "line 1: not valid UTF-8 (byte 0x93"),
    "nul": (b"prompt,answer\na\x00,b\nc,d\n", "line 2: contains a NUL byte (column 2)"),
}


@pytest.mark.parametrize("kind", list(BINARIES))
@pytest.mark.parametrize("target", ["user.jsonl", "user.csv", "gsm8k", "drop"])
def test_binary_files_and_bad_encodings(box, target, kind):
    data, says = BINARIES[kind]
    e = run(box, target, data)
    assert isinstance(e, DatasetError) and says in str(e), e
    assert "save it as UTF-8" in str(e) or "expected a UTF-8 text file" in str(e)


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "data.pkl", "data.zip", "data.xlsx", "data.parquet",
                                  "data", "data.JSONL.exe", "data.txt"])
def test_wrong_extensions(box, name):
    e = run(box, "user.jsonl", jsonl(GOOD_RECORDS["user"]), name=name)
    assert isinstance(e, DatasetError) and "unsupported file type" in str(e), e


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(fifo)  # opening it to read would block forever
    with pytest.raises(DatasetError, match="is not a regular file"):
        load_user_dataset(fifo)
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")  # endless: must be refused before reading
    with pytest.raises(DatasetError, match="is not a regular file"):
        load_user_dataset(link)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    with pytest.raises(DatasetError, match="is a folder"):
        load_user_dataset(folder)


def test_too_few_examples_names_the_file(box):
    e = run(box, "user.jsonl", jsonl(GOOD_RECORDS["user"][:1]))
    assert isinstance(e, DatasetError) and "need at least 2 examples" in str(e) and "add more rows" in str(e)
    e = run(box, "gsm8k", jsonl(GOOD_RECORDS["gsm8k"][:1]))
    assert isinstance(e, DatasetError) and "need at least 2 examples" in str(e)


def test_line_endings(box):
    good = jsonl(GOOD_RECORDS["user"])
    for sep in (b"\r\n", b"\r", b"\n\n\n"):
        task = run(box, "user.jsonl", good.replace(b"\n", sep))
        assert len(task.train) + len(task.test) == 3, sep


def test_long_values_are_cut_in_messages(box):
    rec = dict(GOOD_RECORDS["commonsenseqa"][0], answerKey="Z" * 50_000)
    e = run(box, "commonsenseqa", jsonl([rec]))
    assert isinstance(e, DatasetError) and len(str(e)) < 400 and "..." in str(e)
    e = run(box, "drop", json.dumps({"k" * 50_000: {"passage": "p"}}).encode())
    assert isinstance(e, DatasetError) and len(str(e)) < 400
    e = run(box, "user.csv", ("\x1b[31m" + "q" * 99 + ",answer\nx,y\n").encode())
    assert isinstance(e, DatasetError) and "\x1b" not in str(e)


# ------------------------------------------------------------------ validates => trains

_SEPARATORS = "\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e\r"


@FUZZ
@given(st.lists(st.tuples(st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(_SEPARATORS),
                                  min_size=1, max_size=40),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(_SEPARATORS),
                                  min_size=1, max_size=20).filter(str.strip)),
                min_size=1, max_size=12),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), st.sampled_from(["\n", "\r\n"]))
def test_any_user_file_that_validates_is_stored_and_read_back_unchanged(tmp_path_factory, records, encoding, eol):
    """The bug: a GSM8K row with U+2028 validated, then its fine-tune failed on a JSONDecodeError
    (the training reader split lines with str.splitlines). Validation's examples must come back,
    unchanged, from the reader every job uses."""
    folder = tmp_path_factory.mktemp("sep")
    path = folder / "train.jsonl"
    text = eol.join(json.dumps({"prompt": p, "answer": a}, ensure_ascii=False) for p, a in records) + eol
    path.write_bytes(text.encode(encoding))
    try:
        task = load_user_dataset(path, metric="exact_match")
    except DatasetError as e:
        assert_clear(e, path)
        return
    examples = list(task.train) + list(task.test)
    stored = jsonl_to_examples(examples_to_jsonl(examples))
    assert [(d["prompt"], d["answer"]) for d in stored] == [(e.prompt, e.answer) for e in examples]


def test_the_gsm8k_row_with_a_line_separator_round_trips():
    from gtapp.tasks.base import Example

    ex = [Example("Janet has 3\u2028apples. How many?", "3"), Example("next\u2029para", "4")]
    assert [d["prompt"] for d in jsonl_to_examples(examples_to_jsonl(ex))] == [e.prompt for e in ex]
