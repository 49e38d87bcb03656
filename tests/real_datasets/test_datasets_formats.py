"""The five other published layouts, read from small invented fixtures in the authors' schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from gtapp import datasets
from gtapp.tasks.base import Task

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "datasets"


def test_registry_and_available():
    assert datasets.available() == ["gsm8k", "aqua_rat", "commonsenseqa", "drop", "samsum", "dialogsum"]
    metrics = {n: s.metric for n, s in datasets.REGISTRY.items()}
    assert metrics == {"gsm8k": "numeric_exact_match", "aqua_rat": "letter_exact_match",
                       "commonsenseqa": "letter_exact_match", "drop": "exact_match",
                       "samsum": "rouge_l", "dialogsum": "rouge_l"}
    for spec in datasets.REGISTRY.values():
        assert spec.description and spec.train_files and spec.test_files
    assert datasets.resolve_name("CSQA").name == "commonsenseqa"
    assert datasets.resolve_name("aqua-rat").name == "aqua_rat"
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'nope'.*gsm8k"):
        datasets.load("nope", path=FIX)


def test_aqua_rat():
    task = datasets.load("aqua_rat", path=FIX / "aqua_rat")
    assert isinstance(task, Task)
    assert (len(task.train), len(task.test)) == (4, 2)
    ex = task.test[0]
    assert ex.answer == "B"
    assert ex.prompt.startswith("Question: A tank holds 120 litres")
    assert "\nOptions:\nA) 20\nB) 30\nC) 40\nD) 60\nE) 90\nAnswer:" in ex.prompt
    assert ex.meta["rationale"].endswith("ANSWER:B")
    assert task.extract("B) 30") == "B"
    assert task.extract("Answer: (c)") == "C"
    assert task.score(["B", "C"], task.test) == 1.0
    assert task.score(["(B) 30", "The answer is C"], task.test) == 1.0
    assert task.score(["A", "D"], task.test) == 0.0
    assert task.metric_name == "exact_match"


def test_commonsenseqa():
    task = datasets.load("commonsenseqa", path=FIX / "commonsenseqa")
    assert (len(task.train), len(task.test)) == (4, 2)
    ex = task.test[1]
    assert ex.answer == "B" and ex.meta["id"] == "fixture0006"
    assert ex.prompt == ("Question: Where does a pilot usually work?\nOptions:\nA) submarine\n"
                         "B) cockpit\nC) kitchen\nD) farm\nE) classroom\nAnswer:")
    assert task.score([e.answer for e in task.test], task.test) == 1.0
    assert task.score(["E", "E"], task.test) == 0.0


def test_drop_numbers_spans_dates_and_validated_answers():
    task = datasets.load("drop", path=FIX / "drop")
    assert (len(task.train), len(task.test)) == (4, 4)
    assert task.source["skipped"] == 1  # the question with an empty answer
    by_q = {e.prompt.split("\nQuestion: ")[1]: e for e in task.test}
    number = by_q["How many residents did the village have?\nAnswer:"]
    span = by_q["Which group of workers was largest?\nAnswer:"]
    multi = by_q["Which two groups of workers were largest?\nAnswer:"]
    date = by_q["When did the school open?\nAnswer:"]
    assert number.prompt.startswith("Passage: At the census of 2005")
    assert number.answer == "1250" and number.references == ()
    assert number.meta["answer_type"] == "number" and number.meta["passage_id"] == "fixture_census_1"
    assert span.answer == "Farmers" and span.references == ("farmers", "Farmers and carpenters")
    assert multi.answer == "Farmers, carpenters"
    assert date.answer == "March 3 2001" and "2001" in date.references and "3 March 2001" in date.references

    def score(gen, ex):
        return task.score([gen], [ex])

    for gen in ("1250", "1,250", "1250.0", "1250.", "Answer: 1,250"):
        assert score(gen, number) == 1.0, gen
    assert score("1251", number) == 0.0
    assert score("farmers.", span) == 1.0
    assert score("Farmers and carpenters", span) == 1.0  # a validated alternative
    assert score("carpenters", span) == 0.0
    assert score("Farmers, carpenters", multi) == 1.0
    assert score("farmers and carpenters", multi) == 1.0
    for gen in ("March 3, 2001", "3 March 2001", "2001"):
        assert score(gen, date) == 1.0, gen
    assert score("March 4, 2001", date) == 0.0
    assert task.extract("1,250 residents\nmore text") == "1,250 residents"


def test_drop_split_by_passage_when_only_train_given():
    task = datasets.load("drop", FIX / "drop" / "drop_dataset_train.json", test_fraction=0.5)
    train_ids = {e.meta["passage_id"] for e in task.train}
    test_ids = {e.meta["passage_id"] for e in task.test}
    assert train_ids and test_ids and not train_ids & test_ids
    assert len(task.train) + len(task.test) == 4


def test_samsum():
    task = datasets.load("samsum", path=FIX / "samsum")
    assert (len(task.train), len(task.test)) == (3, 2)
    assert task.source["skipped"] == 1  # the empty record
    ex = task.train[0]
    assert ex.prompt == ("Dialogue:\nAnna: Can you get the pizza?\nTom: Sure, on my way home.\n"
                         "Anna: Thanks!\nSummary:")
    assert "\r" not in ex.prompt
    assert task.train[1].answer == "Lia lost her keys; Ben has a spare set and will drop it off at 6."
    assert task.metric == "rouge_l" and task.max_new_tokens >= 64
    gold = [e.answer for e in task.test]
    assert task.score(gold, task.test) == pytest.approx(1.0)
    assert task.score(["purple elephants dancing", "quantum soup"], task.test) == 0.0
    partial = task.score(["Kate is late.", gold[1] + "\nDialogue: junk"], task.test)
    assert 0.5 < partial < 1.0


def test_dialogsum_multiple_references():
    task = datasets.load("dialogsum", path=FIX / "dialogsum")
    assert (len(task.train), len(task.test)) == (3, 2)
    assert task.train[0].references == ()
    assert task.train[0].meta["topic"] == "bank account"
    first, second = task.test
    assert first.answer == "#Person2# helps #Person1# carry boxes to the third floor."
    assert first.references == ("#Person1# asks #Person2# for help moving boxes upstairs.",
                                "#Person2# agrees to carry the boxes to the third floor for #Person1#.")
    assert len(second.references) == 1  # summary3 repeats summary1
    assert first.prompt.startswith("Dialogue:\n#Person1#: Could you help me carry these boxes?\n#Person2#:")
    assert first.prompt.endswith("\nSummary:")
    assert task.score([e.answer for e in task.test], task.test) == pytest.approx(1.0)


def test_explicit_paths_and_seeded_split_determinism():
    t1 = datasets.load("aqua_rat", FIX / "aqua_rat" / "train.json", seed=1, test_fraction=0.5)
    t2 = datasets.load("aqua_rat", FIX / "aqua_rat" / "train.json", seed=1, test_fraction=0.5)
    assert [e.prompt for e in t1.test] == [e.prompt for e in t2.test]
    assert len(t1.train) == len(t1.test) == 2
    assert "seeded split" in t1.source["split"]
    t3 = datasets.load("aqua_rat", FIX / "aqua_rat" / "train.json", FIX / "aqua_rat" / "test.json", limit=1)
    assert (len(t3.train), len(t3.test)) == (1, 1)
    assert t3.source["full_sizes"] == {"train": 4, "test": 2}


def test_datasets_dir_and_missing_paths():
    assert len(datasets.load("samsum", datasets_dir=FIX).test) == 2
    with pytest.raises(datasets.DatasetError, match="no files given for 'gsm8k'.*train.jsonl"):
        datasets.load("gsm8k")
    with pytest.raises(FileNotFoundError, match="no gsm8k files found"):
        datasets.load("gsm8k", path=FIX / "drop")


def test_hub_without_the_datasets_package(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(datasets.DatasetError, match="needs the 'datasets' package"):
        datasets.load("gsm8k", hub=True)


def test_hub_rows_are_converted_to_the_published_layout(monkeypatch):
    import sys
    import types

    calls = []
    rows = {
        ("tau/commonsense_qa", "validation"): [
            {"id": "h1", "question": "Where do fish live?", "question_concept": "fish",
             "choices": {"label": ["A", "B", "C"], "text": ["water", "tree", "sky"]}, "answerKey": "A"}],
        ("tau/commonsense_qa", "train"): [
            {"id": "h2", "question": "What is hot?", "question_concept": "hot",
             "choices": {"label": ["A", "B"], "text": ["ice", "fire"]}, "answerKey": "B"}],
        ("ucinlp/drop", "train"): [
            {"section_id": "p1", "query_id": "a", "passage": "Two cats.", "question": "How many cats?",
             "answers_spans": {"spans": ["2"], "types": ["number"]}}],
        ("ucinlp/drop", "validation"): [
            {"section_id": "p2", "query_id": "b", "passage": "Ann and Bo.", "question": "Who?",
             "answers_spans": {"spans": ["Ann", "Bo"], "types": ["span", "span"]}}],
        ("knkarthick/dialogsum", "train"): [
            {"id": "train_1", "dialogue": "#Person1#: Hi.", "summary": "Greeting.", "topic": "hi"}],
        ("knkarthick/dialogsum", "test"): [
            {"id": "test_0_1", "dialogue": "#Person1#: Bye.", "summary": "Farewell.", "topic": "bye"},
            {"id": "test_0_2", "dialogue": "#Person1#: Bye.", "summary": "They part.", "topic": "bye"},
            {"id": "test_1_1", "dialogue": "#Person1#: Yes.", "summary": "Agreement.", "topic": "yes"}],
    }

    def load_dataset(repo, *config, split, **kw):
        calls.append((repo, config, split, kw.get("trust_remote_code")))
        return rows[(repo, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    csqa = datasets.load("commonsenseqa", hub=True)
    assert csqa.test[0].answer == "A" and "A) water" in csqa.test[0].prompt
    assert csqa.source["hub"] == "tau/commonsense_qa"
    drop = datasets.load("drop", hub=True)
    assert drop.train[0].answer == "2" and drop.test[0].answer == "Ann, Bo"
    dsum = datasets.load("dialogsum", hub=True)
    assert len(dsum.test) == 2 and dsum.test[0].references == ("They part.",)
    assert all(c[3] is False for c in calls)  # never runs hub loading scripts


def test_hub_refuses_a_module_that_is_not_hf_datasets(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))
    with pytest.raises(datasets.DatasetError, match="is not the Hugging Face datasets library"):
        datasets.load("samsum", hub=True)
