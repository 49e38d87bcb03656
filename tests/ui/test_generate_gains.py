"""The Generate tab's "Your latest results" (issue #15 item 7): each evaluated generated
adapter's gain over the base LLM and over the provider's mean baseline, in words and in a
chart with the paired 95 % intervals; an out-of-distribution warning is shown, first; another
organisation sees none of it."""

from __future__ import annotations

from storage.models import Adapter
from ui import generate


def gains(diff_base, ci_base, diff_mean, ci_mean):
    return {"over_base_llm": {"nll": {"diff": diff_base, "ci95": ci_base}, "metric": {"diff": 0.0, "ci95": [0, 0]}},
            "over_mean_shadow": {"nll": {"diff": diff_mean, "ci95": ci_mean}}}


def add_generated(svc, who, pair_id, name, meta) -> int:
    with svc.session() as s:
        a = Adapter(org_id=who.org_id, user_id=who.user_id, model_pair_id=pair_id, model="llm", origin="generated",
                    name=name, artifact="0" * 64, meta=meta)
        s.add(a)
        s.flush()
        return a.id


def test_latest_results_show_gains_with_intervals_and_warnings(svc, users, pair_id):
    alice, bob = svc.who(users["alice"]), svc.who(users["bob"])
    warned = add_generated(svc, alice, pair_id, "odd-one", {
        "warnings": ["contributor 1 is out of distribution (score 9.1): expect a poor LLM update"],
        "evaluation": {"task": "math/x", "metric": "exact_match", "value": 0.25, "n": 64,
                       "gains": gains(-0.20, [-0.31, -0.09], 0.02, [-0.01, 0.05])}})
    good = add_generated(svc, alice, pair_id, "good-one", {
        "evaluation": {"task": "math/x", "metric": "exact_match", "value": 0.5, "n": 64,
                       "gains": gains(0.40, [0.30, 0.52], 0.10, [0.04, 0.16])},
        "refine": {"mode": "auto", "refined": False, "reason": "OOD score 1.20 <= 3: the mapper knows updates like "
                                                               "this one, its adapter kept as it is"}})
    add_generated(svc, alice, pair_id, "not-evaluated", {
        "refine": {"mode": "always", "refined": True, "text": {"prompts_dataset": {"id": 7, "name": "faq_public"}},
                   "teacher": "llm + mapped adapter + (tiny_ft - tiny_base) logits (proxy-tuning over the mapped "
                              "adapter)"}})

    words, fig = generate.latest_results(svc, alice)
    odd = words[words.index("**odd-one**"):]  # newest first: not-evaluated, good-one, odd-one
    assert words.index("**good-one**") < words.index("**odd-one**")
    assert odd.index("expect a poor LLM update") < odd.index("**Result**")  # its warning, before its numbers
    assert "answer NLL, nats/token +0.4 [+0.3, +0.52] (better)" in words
    assert "answer NLL, nats/token -0.2 [-0.31, -0.09] (worse)" in words
    assert "+0.02 [-0.01, +0.05] (no difference shown)" in words
    good_words = words[words.index("**good-one**"):words.index("**odd-one**")]
    assert "Refinement (auto): not refined — OOD score 1.20 \\<= 3\\: the mapper knows" in good_words  # escaped
    assert "Refinement" not in odd
    # refined on the organisation's own public prompts: the result names the dataset
    assert "Refinement (always): refined; samples written after the prompts of your dataset faq\\_public (id 7)" \
        in words[:words.index("**good-one**")]
    assert "; teacher: llm + mapped adapter + \\(tiny\\_ft - tiny\\_base\\) logits \\(proxy-tuning over the mapped" \
        in words[:words.index("**good-one**")]  # what it distilled, escaped
    assert "teacher" not in good_words  # not refined: no teacher
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"over the base LLM", "over the provider's mean baseline"}
    base = traces["over the base LLM"]
    assert list(base.x) == [f"good-one ({good})", f"⚠ odd-one ({warned})"]  # the unevaluated one has no bar
    assert list(base.y) == [0.40, -0.20]
    assert [round(v, 6) for v in base.error_y.array] == [0.12, 0.11]  # hi - diff
    assert [round(v, 6) for v in base.error_y.arrayminus] == [0.10, 0.11]  # diff - lo

    words_b, fig_b = generate.latest_results(svc, bob)  # another organisation: nothing of alice's
    assert "odd-one" not in words_b and "good-one" not in words_b and not fig_b.data
