"""The six published datasets: record parsers, prompt formats, answer extraction, registry.

Each parser turns one record of the authors' original file layout into a list of
:class:`~gtapp.tasks.base.Example` objects (a ``None`` entry marks an item with nothing to
learn from, e.g. an empty DROP answer; the loader counts these as ``skipped``) and raises :class:`DatasetError` with the
record's location when the record does not have the published shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from gtapp.datasets._io import DatasetError, require_object, require_str, shorten, show_names, type_name
from gtapp.metrics import normalize_number
from gtapp.tasks.base import Example, extract_letter, extract_number, first_line

# ---------------------------------------------------------------------------------- helpers

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_OPTION = re.compile(r"^\s*\(?([A-Ea-e])\s*\)\s*(.*)$", re.S)


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces."""
    return " ".join(text.split())


def is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text.strip()))


def extract_gsm8k(text: str) -> str:
    """The number after the last ``####`` if the generation has one, else its first number."""
    if "####" in text:
        got = extract_number(text.rsplit("####", 1)[1])
        if got:
            return got
    return extract_number(text)


def extract_drop(text: str) -> str:
    """First line of a generation, without an ``Answer:`` prefix or a final full stop;
    numbers are normalised ('1,200.0' -> '1200') so they compare with DROP's gold numbers."""
    s = first_line(text)
    s = re.sub(r"^\s*answer\s*:\s*", "", s, flags=re.I).strip()
    s = s.rstrip(".").strip()
    if is_number(s):
        return normalize_number(s)
    return s


def extract_summary(text: str) -> str:
    """A summary is the first line of the generation (gold summaries are stored on one line)."""
    return first_line(text)


def _options_block(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"{label}) {text}" for label, text in pairs)


def _dedup(items) -> tuple[str, ...]:
    out: list[str] = []
    for s in items:
        if s and s not in out:
            out.append(s)
    return tuple(out)


# ---------------------------------------------------------------------------------- parsers

def parse_gsm8k(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """GSM8K line: ``{"question": str, "answer": "<worked solution>\\n#### <number>"}``."""
    require_object(where, rec, ("question", "answer"))
    q = require_str(where, rec, "question")
    a = require_str(where, rec, "answer")
    if "####" not in a:
        raise DatasetError(f"{where}: expected 'answer' to end with '#### <number>' (GSM8K format); "
                           "no '####' found")
    rationale, final = a.rsplit("####", 1)
    final = final.strip().replace(",", "").lstrip("$")
    if not is_number(final):
        raise DatasetError(f"{where}: expected a number after '####' in 'answer'; got {shorten(final, 40)}")
    return [Example(prompt=f"Question: {q.strip()}\nAnswer:", answer=final,
                    meta={"rationale": rationale.strip()})]


def parse_aqua(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """AQuA-RAT line: ``{"question", "options": ["A)..", ...], "rationale", "correct": "C"}``."""
    require_object(where, rec, ("question", "options", "correct"))
    q = require_str(where, rec, "question")
    opts = rec["options"]
    if not isinstance(opts, list) or not opts:
        raise DatasetError(f"{where}: expected 'options' to be a non-empty list like ['A)12', 'B)15']; "
                           f"got {'an empty list' if opts == [] else 'a ' + type_name(opts)}")
    pairs: list[tuple[str, str]] = []
    for i, o in enumerate(opts):
        m = _OPTION.match(o) if isinstance(o, str) else None
        if not m:
            raise DatasetError(f"{where}: expected options[{i}] to look like 'A)12'; got {shorten(o)}")
        pairs.append((m.group(1).upper(), one_line(m.group(2))))
    labels = [p[0] for p in pairs]
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{where}: expected distinct option letters; got {', '.join(labels)}")
    correct = require_str(where, rec, "correct").strip().upper()
    if correct not in labels:
        raise DatasetError(f"{where}: expected 'correct' to be one of {', '.join(labels)}; got {shorten(correct)}")
    rationale = rec.get("rationale")
    prompt = f"Question: {q.strip()}\nOptions:\n{_options_block(pairs)}\nAnswer:"
    return [Example(prompt=prompt, answer=correct,
                    meta={"rationale": rationale if isinstance(rationale, str) else "",
                          "options": dict(pairs)})]


def parse_csqa(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """CommonsenseQA line: ``{"id", "question": {"stem", "choices": [{"label", "text"}]},
    "answerKey"}``."""
    require_object(where, rec, ("question",))
    if "answerKey" not in rec:
        raise DatasetError(f"{where}: expected a JSON object with keys id, question, answerKey; missing "
                           "'answerKey' (the official test split has no answers: use "
                           "dev_rand_split.jsonl as the test file)")
    qobj = rec["question"]
    if not isinstance(qobj, dict) or "stem" not in qobj or "choices" not in qobj:
        got = type_name(qobj) if not isinstance(qobj, dict) else \
            "an object without " + " and ".join(repr(k) for k in ("stem", "choices") if k not in qobj)
        raise DatasetError(f"{where}: expected 'question' to be an object with keys stem, choices; "
                           f"got {got if got.startswith('an') else 'a ' + got}")
    stem = require_str(where, qobj, "stem", label="question.stem")
    choices = qobj["choices"]
    if not isinstance(choices, list) or not choices:
        raise DatasetError(f"{where}: expected 'question.choices' to be a non-empty list of "
                           "{label, text} objects")
    pairs: list[tuple[str, str]] = []
    for i, c in enumerate(choices):
        if not isinstance(c, dict) or "label" not in c or "text" not in c:
            raise DatasetError(f"{where}: expected question.choices[{i}] to be an object with keys "
                               "label, text")
        label = require_str(where, c, "label", label=f"question.choices[{i}].label").strip().upper()
        text = require_str(where, c, "text", allow_number=True, allow_empty=True,
                           label=f"question.choices[{i}].text")
        pairs.append((label, one_line(text)))
    labels = [p[0] for p in pairs]
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{where}: expected distinct choice labels; got {show_names(labels, noun='labels')}")
    ans = require_str(where, rec, "answerKey").strip().upper()
    if ans not in labels:
        raise DatasetError(f"{where}: expected 'answerKey' to be one of {show_names(labels, noun='labels')}; "
                           f"got {shorten(ans)}")
    prompt = f"Question: {stem.strip()}\nOptions:\n{_options_block(pairs)}\nAnswer:"
    return [Example(prompt=prompt, answer=ans,
                    meta={"id": rec.get("id", ""), "options": dict(pairs),
                          "concept": qobj.get("question_concept", "")})]


def _drop_date_strings(where: str, date: Any) -> list[str]:
    if date in (None, {}):
        return []
    if not isinstance(date, dict):
        raise DatasetError(f"{where}: expected 'date' to be an object with keys day, month, year; "
                           f"got a {type_name(date)}")
    parts = {}
    for k in ("day", "month", "year"):
        v = date.get(k, "")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise DatasetError(f"{where}: expected 'date.{k}' to be a string; got a {type_name(v)}")
        parts[k] = v.strip()
    d, m, y = parts["day"], parts["month"], parts["year"]
    if not (d or m or y):
        return []
    forms = [" ".join(p for p in (m, d, y) if p), " ".join(p for p in (d, m, y) if p)]
    return list(_dedup(forms))


def drop_answer_strings(where: str, ans: Any) -> tuple[list[str], str]:
    """The acceptable strings for one DROP answer object and its type (number/spans/date/'').

    The first string is the canonical one: a normalised number, the span(s) joined by ', ',
    or 'Month Day Year' (with 'Day Month Year' as an alternative).
    """
    if not isinstance(ans, dict):
        raise DatasetError(f"{where}: expected an answer object with keys number, date, spans; "
                           f"got a {type_name(ans)}")
    number = ans.get("number", "")
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        number = str(number)
    if number is None:
        number = ""
    if not isinstance(number, str):
        raise DatasetError(f"{where}: expected 'number' to be a string; got a {type_name(number)}")
    if number.strip():
        return [normalize_number(number)], "number"
    spans = ans.get("spans", [])
    if spans is None:
        spans = []
    if not isinstance(spans, list) or not all(isinstance(s, str) for s in spans):
        raise DatasetError(f"{where}: expected 'spans' to be a list of strings")
    spans = [one_line(s) for s in spans if s.strip()]
    if spans:
        forms = [", ".join(spans)]
        if len(spans) > 1:
            forms.append(", ".join(spans[:-1]) + " and " + spans[-1])
        return forms, "spans"
    dates = _drop_date_strings(where, ans.get("date"))
    if dates:
        return dates, "date"
    return [], ""


def parse_drop(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """DROP passage entry: ``{"passage": str, "qa_pairs": [{"question", "answer": {"number",
    "date": {"day", "month", "year"}, "spans": [..]}, "validated_answers": [..]}]}``."""
    require_object(where, rec, ("passage", "qa_pairs"))
    passage = require_str(where, rec, "passage")
    qas = rec["qa_pairs"]
    if not isinstance(qas, list):
        raise DatasetError(f"{where}: expected 'qa_pairs' to be a list; got a {type_name(qas)}")
    out: list[Example] = []
    for j, qa in enumerate(qas):
        w = f"{where} qa_pairs[{j}]"
        require_object(w, qa, ("question", "answer"))
        q = require_str(w, qa, "question")
        forms, kind = drop_answer_strings(f"{w} answer", qa["answer"])
        alts: list[str] = []
        validated = qa.get("validated_answers") or []
        if not isinstance(validated, list):
            raise DatasetError(f"{w}: expected 'validated_answers' to be a list of answer objects")
        for k, v in enumerate(validated):
            alts.extend(drop_answer_strings(f"{w} validated_answers[{k}]", v)[0])
        allforms = _dedup(forms + alts)
        if not allforms:
            out.append(None)  # type: ignore[arg-type]  # no usable answer: counted as skipped
            continue
        out.append(Example(prompt=f"Passage: {passage.strip()}\nQuestion: {q.strip()}\nAnswer:",
                           answer=allforms[0], references=allforms[1:],
                           meta={"passage_id": key or "", "query_id": qa.get("query_id", ""),
                                 "answer_type": kind or "validated", "group": key or ""}))
    return out


def _dialogue_prompt(dialogue: str) -> str:
    d = dialogue.replace("\r\n", "\n").replace("\r", "\n").strip()
    return f"Dialogue:\n{d}\nSummary:"


def parse_samsum(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """SAMSum record: ``{"id": str, "summary": str, "dialogue": str}``."""
    require_object(where, rec, ("dialogue", "summary"))
    d = require_str(where, rec, "dialogue", allow_empty=True)
    s = require_str(where, rec, "summary", allow_empty=True)
    if not d.strip() or not s.strip():
        return [None]  # type: ignore[list-item]  # a few published records are empty: skipped
    return [Example(prompt=_dialogue_prompt(d), answer=one_line(s), meta={"id": str(rec.get("id", ""))})]


def parse_dialogsum(where: str, rec: Any, key: str | None = None) -> list[Example]:
    """DialogSum line: ``{"fname", "dialogue", "summary", "topic"}``; the test file instead has
    ``summary1``, ``summary2``, ``summary3`` (all kept: the first is the answer, the others
    references)."""
    if isinstance(rec, dict) and "summary" not in rec and "summary1" in rec:
        require_object(where, rec, ("dialogue", "summary1"))
        keys = [k for k in ("summary1", "summary2", "summary3") if k in rec]
    else:
        require_object(where, rec, ("dialogue", "summary"))
        keys = ["summary"]
    d = require_str(where, rec, "dialogue", allow_empty=True)
    sums = [one_line(require_str(where, rec, k, allow_empty=True)) for k in keys]
    sums = list(_dedup(sums))
    if not d.strip() or not sums:
        return [None]  # type: ignore[list-item]
    topic = rec.get("topic", rec.get("topic1", ""))
    return [Example(prompt=_dialogue_prompt(d), answer=sums[0], references=tuple(sums[1:]),
                    meta={"id": str(rec.get("fname", rec.get("id", ""))), "topic": topic})]


# ---------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    """How to read one published dataset.

    ``layout`` is ``records`` (JSON lines, or a JSON list) or ``object`` (one JSON object
    mapping ids to records, DROP). ``train_files``/``test_files`` are the authors' file names,
    looked for in a folder given as ``path=``; the first that exists is used.
    """

    name: str
    description: str
    family: str
    metric: str
    layout: str
    extensions: tuple[str, ...]
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    schema: str
    parse: Callable[[str, Any, str | None], list]
    extract: Callable[[str], str]
    max_new_tokens: int
    url: str = ""
    hub: tuple[str, str | None, str, str] | None = None  # (repo, config, train split, test split)
    aliases: tuple[str, ...] = field(default=())

    @property
    def metric_name(self) -> str:
        return {"numeric_exact_match": "exact_match", "letter_exact_match": "exact_match"}.get(
            self.metric, self.metric)

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "family": self.family,
                "metric": self.metric, "train_files": list(self.train_files),
                "test_files": list(self.test_files), "schema": self.schema, "url": self.url,
                "hub": self.hub[0] if self.hub else None}


REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec(
        name="gsm8k", family="math_word_problems", metric="numeric_exact_match",
        description="Grade-school maths word problems; the answer is the number after '####'.",
        layout="records", extensions=(".jsonl", ".json"),
        train_files=("train.jsonl",), test_files=("test.jsonl",),
        schema='{"question": str, "answer": "<solution>\\n#### <number>"} per line',
        parse=parse_gsm8k, extract=extract_gsm8k, max_new_tokens=16,
        url="https://github.com/openai/grade-school-math",
        hub=("openai/gsm8k", "main", "train", "test")),
    DatasetSpec(
        name="aqua_rat", family="math_multiple_choice", metric="letter_exact_match",
        description="Algebra word problems with five options A-E; the answer is the option letter.",
        layout="records", extensions=(".json", ".jsonl"),
        train_files=("train.json", "train.jsonl"), test_files=("test.json", "test.jsonl"),
        schema='{"question": str, "options": ["A)..", ...], "rationale": str, "correct": "A".."E"} '
               'per line',
        parse=parse_aqua, extract=extract_letter, max_new_tokens=4,
        url="https://github.com/google-deepmind/AQuA",
        hub=("deepmind/aqua_rat", "raw", "train", "test"), aliases=("aqua", "aquarat")),
    DatasetSpec(
        name="commonsenseqa", family="commonsense_multiple_choice", metric="letter_exact_match",
        description="Commonsense questions with five choices A-E; the answer is the choice letter.",
        layout="records", extensions=(".jsonl", ".json"),
        train_files=("train_rand_split.jsonl",), test_files=("dev_rand_split.jsonl",),
        schema='{"id": str, "question": {"stem": str, "choices": [{"label": "A", "text": str}, ...]}, '
               '"answerKey": "A".."E"} per line',
        parse=parse_csqa, extract=extract_letter, max_new_tokens=4,
        url="https://www.tau-nlp.sites.tau.ac.il/commonsenseqa",
        hub=("tau/commonsense_qa", None, "train", "validation"),
        aliases=("csqa", "commonsense_qa")),
    DatasetSpec(
        name="drop", family="reading_comprehension", metric="exact_match",
        description="Reading comprehension with discrete reasoning; answers are numbers, spans or "
                    "dates, any validated answer counts.",
        layout="object", extensions=(".json",),
        train_files=("drop_dataset_train.json",), test_files=("drop_dataset_dev.json",),
        schema='{passage_id: {"passage": str, "qa_pairs": [{"question": str, "answer": {"number": str, '
               '"date": {"day", "month", "year"}, "spans": [str]}, "validated_answers": [..]}]}}',
        parse=parse_drop, extract=extract_drop, max_new_tokens=24,
        url="https://allenai.org/data/drop",
        hub=("ucinlp/drop", None, "train", "validation")),
    DatasetSpec(
        name="samsum", family="dialogue_summarization", metric="rouge_l",
        description="Messenger-style dialogues with abstractive summaries (ROUGE-L).",
        layout="records", extensions=(".json", ".jsonl"),
        train_files=("train.json",), test_files=("test.json",),
        schema='[{"id": str, "summary": str, "dialogue": str}, ...]',
        parse=parse_samsum, extract=extract_summary, max_new_tokens=96,
        url="https://arxiv.org/abs/1911.12237",
        hub=("knkarthick/samsum", None, "train", "test")),
    DatasetSpec(
        name="dialogsum", family="dialogue_summarization", metric="rouge_l",
        description="Spoken everyday dialogues with summaries; the test split has three reference "
                    "summaries (ROUGE-L).",
        layout="records", extensions=(".jsonl", ".json"),
        train_files=("dialogsum.train.jsonl", "train.jsonl"),
        test_files=("dialogsum.test.jsonl", "test.jsonl"),
        schema='{"fname": str, "dialogue": str, "summary": str, "topic": str} per line; test lines '
               'have summary1, summary2, summary3',
        parse=parse_dialogsum, extract=extract_summary, max_new_tokens=96,
        url="https://github.com/cylnlp/dialogsum",
        hub=("knkarthick/dialogsum", None, "train", "test")),
]}


def resolve_name(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "_")
    if key in REGISTRY:
        return REGISTRY[key]
    for spec in REGISTRY.values():
        if key in spec.aliases:
            return spec
    raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(REGISTRY)}")
