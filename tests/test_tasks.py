import re
import subprocess
import sys

import pytest

from gtapp import metrics
from gtapp.tasks import FAMILIES, make_task, pretraining_corpus, task_names
from gtapp.tasks import world as W


def test_every_family_has_at_least_ten_variants():
    for family in FAMILIES:
        assert len(task_names(family)) >= 10, family


def test_tasks_are_deterministic_from_seed():
    a = make_task("math/add-fruit-easy", seed=3, n_train=20, n_test=5)
    b = make_task("math/add-fruit-easy", seed=3, n_train=20, n_test=5)
    c = make_task("math/add-fruit-easy", seed=4, n_train=20, n_test=5)
    assert a.train == b.train and a.test == b.test
    assert a.train != c.train


@pytest.mark.parametrize("name", task_names())
def test_gold_answers_score_perfectly_and_wrong_ones_do_not(name):
    t = make_task(name, n_train=8, n_test=16)
    assert len(t.train) == 8 and len(t.test) == 16
    if not t.generative:
        assert t.metric_name == "perplexity" and t.test[0].prompt == ""
        return
    gold = [e.answer + "\nQuestion: junk" for e in t.test]  # extraction reads the first line only
    assert t.score(gold, t.test) == pytest.approx(1.0)
    wrong = ["zzz" for _ in t.test]
    assert t.score(wrong, t.test) < 0.2


@pytest.mark.parametrize("name", [n for n in task_names() if not n.startswith("lm/")])
def test_test_split_avoids_train_prompts(name):
    # make_task skips test prompts seen in train (it only gives up after 10 x n_test draws,
    # which no generated task's prompt space comes near at these sizes): no overlap at all.
    t = make_task(name, n_train=200, n_test=50)
    overlap = {e.prompt for e in t.train} & {e.prompt for e in t.test}
    assert overlap == set(), sorted(overlap)[:3]
    assert len(t.test) == 50


def test_metrics_known_values():
    assert metrics.exact_match(["1,000", "7."], ["1000", "7"], numeric=True) == 1.0
    assert metrics.rouge_l(["anna will meet ben"], ["Anna and Ben will meet"]) == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert metrics.perplexity(0.0, 10) == 1.0


_FACT_SENTENCES = {W.FACT_SENTENCES[rel].format(s=s, a=a).capitalize() for rel, fs in W.FACTS.items() for s, a in fs}
_NAME = "(?:" + "|".join(W.NAMES) + ")"


def _math_story_adds_up(d):
    m = re.fullmatch(r"(?:(\w+) had (\d+) ([a-z ]+)\. Then \1 got (\d+) more \3\. Now \1 had (\d+) \3\.(?: |$))+", d)
    if not m:
        return False
    stories = re.findall(r"(\w+) had (\d+) ([a-z ]+)\. Then \1 got (\d+) more \3\. Now \1 had (\d+) \3\.", d)
    return all(int(a) + int(b) == int(c) for _, a, _, b, c in stories)


def _dialogue_text(d):
    lines = d.split("\n")
    return not d.startswith("Dialogue:") and len(lines) >= 4 and all(re.match(_NAME + r": \S", ln) for ln in lines)


# family -> {what: predicate on one corpus document}: the family's domain text and, for the
# generative families, its formatted question/answer pairs (prompt + gold answer).
CORPUS_MARKERS = {
    "math": {
        "story": _math_story_adds_up,
        "formatted example": lambda d: re.fullmatch(r"Question: [^\n]+\?\nAnswer: \d+", d) is not None,
    },
    "commonsense": {
        "story (world facts)": lambda d: len(s := re.split(r"(?<=\.) ", d)) >= 3 and set(s) <= _FACT_SENTENCES,
        "formatted example": lambda d: re.fullmatch(
            r"Question: [^\n]+\?\nOptions: A\) [^\n]+ B\) [^\n]+ C\) [^\n]+\nAnswer: [A-E]", d) is not None,
    },
    "reading": {
        "sports passage": lambda d: d.startswith("In the first half the ") and " scored " in d,
        "sales passage": lambda d: d.startswith("On Monday ") and re.search(r" sold \d+ cakes", d) is not None,
        "history passage": lambda d: d.startswith("In the first battle ") and re.search(r" lost \d+ ships", d) is not None,
        "weather passage": lambda d: d.startswith("In May ") and re.search(r" had \d+ rainy days", d) is not None,
        "formatted example": lambda d: re.fullmatch(r"Passage: [^\n]+\nQuestion: [^\n]+\?\nAnswer: [^\n]+", d) is not None,
    },
    "dialogue": {
        "dialogue": _dialogue_text,
        "formatted example": lambda d: re.fullmatch(r"Dialogue:\n(?:" + _NAME + r": [^\n]+\n){4,}Summary: [^\n]+",
                                                    d) is not None,
    },
    "lm": {
        "weather": lambda d: d.startswith(("Weather for ", "Tomorrow in ")),
        "sports": lambda d: re.match(r"The \w+ beat the \w+ \d+ to \d+\.", d) is not None or d.startswith("Match report: "),
        "recipe": lambda d: d.startswith(("To make ", "Recipe: ")),
        "diary": lambda d: d.startswith("Dear diary, on ") or re.match(r"\w+day: " + _NAME + " and I spent", d) is not None,
        "review": lambda d: d.startswith(("I bought a ", "Review of the ")),
        "facts": lambda d: d.startswith("Everyone knows: "),
    },
}


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus(500, seed=0)


def test_corpus_markers_cover_every_family():
    assert set(CORPUS_MARKERS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(CORPUS_MARKERS))
def test_corpus_contains_every_family(corpus, family):
    for what, present in CORPUS_MARKERS[family].items():
        hits = [d for d in corpus if present(d)]
        assert hits, f"no {family} {what} in the pretraining corpus"


def test_corpus_contains_every_fact_once_and_has_the_requested_size(corpus):
    assert len(corpus) == 500
    assert "To cut paper, people use a scissors." in corpus
    n_facts = sum(len(fs) for fs in W.FACTS.values())
    assert set(corpus[:n_facts]) == _FACT_SENTENCES and len(_FACT_SENTENCES) == n_facts


def test_cli_lists_tasks():
    out = subprocess.run([sys.executable, "-m", "gtapp", "tasks", "list", "--n-train", "4", "--n-test", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("\n") >= 50 + 1
    assert "dialogue/meeting-short" in out and "rouge_l" in out
