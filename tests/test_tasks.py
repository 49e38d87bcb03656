import subprocess
import sys

import pytest

from gtapp import metrics
from gtapp.tasks import FAMILIES, make_task, pretraining_corpus, task_names


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


def test_test_split_avoids_train_prompts():
    t = make_task("commonsense/tool_use-4opt", n_train=200, n_test=50)
    overlap = {e.prompt for e in t.train} & {e.prompt for e in t.test}
    assert len(overlap) <= 5


def test_metrics_known_values():
    assert metrics.exact_match(["1,000", "7."], ["1000", "7"], numeric=True) == 1.0
    assert metrics.rouge_l(["anna will meet ben"], ["Anna and Ben will meet"]) == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert metrics.perplexity(0.0, 10) == 1.0


def test_corpus_contains_every_family_and_facts():
    docs = pretraining_corpus(500, seed=0)
    text = "\n".join(docs)
    assert "Question:" in text and "Passage" in text or "scored" in text
    assert "To cut paper, people use a scissors." in text
    assert len(docs) == 500


def test_cli_lists_tasks():
    out = subprocess.run([sys.executable, "-m", "gtapp", "tasks", "list", "--n-train", "4", "--n-test", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("\n") >= 50 + 1
    assert "dialogue/meeting-short" in out and "rouge_l" in out
