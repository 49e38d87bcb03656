"""The paired two-stage bootstrap (gtapp.bench.stats) on known per-example scores."""

import math

import numpy as np
import pytest

from gtapp.bench import report, stats


def _rows(method_scores: dict, seeds=(0, 1, 2), metric="exact_match", tokens=None):
    """Rows of one (protocol, task) whose per-example NLL sums are the given arrays per seed."""
    rows = []
    for m, per_seed in method_scores.items():
        for s in seeds:
            nll = np.asarray(per_seed[s], dtype=float)
            tok = np.ones_like(nll) if tokens is None else np.asarray(tokens)
            rows.append({"protocol": "p", "task": "t", "method": m, "dp_epsilon": None, "clients": 1, "seed": s,
                         "metric": metric, "value": float(-nll.mean()), "answer_nll": float(nll.sum() / tok.sum()),
                         "examples": {"score": list(-nll), "nll_sum": list(nll), "n_tokens": list(tok.astype(int))},
                         "wall_s": 0.0, "peak_mem_mb": 0.0})
    return rows


def test_gap_recovery_replicates_known_values():
    rng = np.random.default_rng(0)
    base = {s: 3.0 + rng.normal(0, 0.3, 64) for s in range(3)}
    oracle = {s: base[s] - 1.0 for s in range(3)}          # one nat better on every example
    half = {s: base[s] - 0.5 for s in range(3)}             # exactly half the gap, every example
    boot = stats.TaskBootstrap(_rows({"base_llm": base, "oracle": oracle, "half": half}), n_boot=300)
    g = boot.gap("half", "nll")
    assert np.allclose(g, 0.5)
    assert stats.interval(boot.gap("oracle", "nll")) == pytest.approx((1.0, 1.0))


def test_difference_interval_tells_a_real_gain_from_noise():
    rng = np.random.default_rng(1)
    base = {s: 3.0 + rng.normal(0, 0.5, 128) for s in range(3)}
    oracle = {s: base[s] - 1.0 for s in range(3)}
    a = {s: base[s] - 0.6 + rng.normal(0, 0.3, 128) for s in range(3)}
    b = {s: base[s] - 0.4 + rng.normal(0, 0.3, 128) for s in range(3)}
    noise = {s: a[s] + rng.normal(0, 0.3, 128) for s in range(3)}  # a, plus zero-mean noise
    boot = stats.TaskBootstrap(_rows({"base_llm": base, "oracle": oracle, "a": a, "b": b, "n": noise}), n_boot=500)
    d = stats.difference(boot, "a", "b")
    assert d["a_beats_b"] and 0.1 < d["diff_mean"] < 0.3 and d["diff_ci95"][0] > 0
    same = stats.difference(boot, "a", "n")
    assert not same["a_beats_b"] and same["diff_ci95"][0] < 0 < same["diff_ci95"][1]
    assert not stats.difference(boot, "b", "a")["a_beats_b"]


def test_seed_stage_widens_the_interval_when_seeds_disagree():
    """Same examples' spread, but the method's gain differs a lot between seeds: the two-stage
    interval must be wider than one drawn over examples of a single seed."""
    rng = np.random.default_rng(2)
    base = {s: 3.0 + rng.normal(0, 0.2, 64) for s in range(3)}
    oracle = {s: base[s] - 1.0 for s in range(3)}
    m = {s: base[s] - (0.1, 0.5, 0.9)[s] + rng.normal(0, 0.05, 64) for s in range(3)}
    three = stats.interval(stats.TaskBootstrap(_rows({"base_llm": base, "oracle": oracle, "m": m}), n_boot=500)
                           .gap("m", "nll"))
    one = stats.interval(stats.TaskBootstrap(_rows({"base_llm": base, "oracle": oracle, "m": m}, seeds=(1,)),
                                             n_boot=500).gap("m", "nll"))
    assert (three[1] - three[0]) > 5 * (one[1] - one[0])
    assert three[0] < 0.3 and three[1] > 0.7


def test_nll_gap_is_per_token_not_per_example():
    """Examples with many answer tokens weigh more in the NLL per token."""
    base = {0: [10.0, 1.0]}
    oracle = {0: [5.0, 1.0]}
    m = {0: [10.0, 0.5]}
    rows = _rows({"base_llm": base, "oracle": oracle, "m": m}, seeds=(0,), tokens=[10, 1])
    boot = stats.TaskBootstrap(rows, n_boot=50)
    reps = boot.gap("m", "nll")
    full = np.isfinite(reps)
    assert full.any()
    # on the full sample: (10.5/11 - 11/11) / (6/11 - 11/11) = 0.1
    assert np.nanmax(reps) >= 0.1 - 1e-9


def test_summary_and_comparisons_use_the_bootstrap(tmp_path):
    rng = np.random.default_rng(3)
    base = {s: 3.0 + rng.normal(0, 0.5, 64) for s in range(3)}
    oracle = {s: base[s] - 1.0 for s in range(3)}
    gt = {s: base[s] - 0.8 + rng.normal(0, 0.1, 64) for s in range(3)}
    proxy = {s: base[s] - 0.2 + rng.normal(0, 0.1, 64) for s in range(3)}
    rows = _rows({"base_llm": base, "oracle": oracle, "gt": gt, "proxy_tuning": proxy})
    from gtapp.bench import protocol

    protocol.add_gap_recovery(rows)
    summary = report.summarise(rows)
    line = next(s for s in summary if s["method"] == "gt")
    lo, hi = line["gap_recovery_nll_ci95"]
    assert lo < line["gap_recovery_nll_mean"] < hi and 0.7 < lo and hi < 0.9
    comps = report.comparisons(rows)
    c = next(c for c in comps if c["a"] == "gt" and c["b"] == "proxy_tuning" and c["kind"] == "nll")
    assert c["a_beats_b"] and c["diff_mean"] == pytest.approx(0.6, abs=0.05)
    assert "a beats b" in report.format_comparisons(comps)


def test_missing_examples_fall_back_to_seed_interval():
    rows = _rows({"base_llm": {0: [1.0]}, "oracle": {0: [0.5]}}, seeds=(0,))
    for r in rows:
        r.pop("examples")
    boot = stats.TaskBootstrap(rows)
    assert math.isnan(stats.interval(boot.gap("oracle"))[0])


def test_a_task_whose_oracle_is_no_better_than_the_base_llm_leaves_the_averages():
    """Gap recovery divides by oracle - base LLM; where that gap is not shown (its paired interval
    reaches 0) the task is left out of the targets' averages and counts, and named."""
    rows = _real_and_flat_rows()
    from gtapp.bench.protocol import add_gap_recovery

    add_gap_recovery(rows)
    boots = stats.bootstraps(rows)
    assert stats.interval(boots[("cross_task", "t")].oracle_gain("nll"))[0] > 0.9
    assert report.gap_defined(boots, "cross_task", "t") and not report.gap_defined(boots, "cross_task", "flat")
    summary = report.summarise(rows, boots)
    assert {s["task"]: s["gap_defined"] for s in summary} == {"t": True, "flat": False}
    table = report.format_table(summary).splitlines()
    assert all(line.endswith("(no gap)") == (" flat " in line) for line in table[1:-1])
    assert table[-1].startswith("(no gap): the oracle is no better than the base LLM")
    head = report.targets(summary, rows, boots=boots)[0]
    assert head["measured"] == pytest.approx(0.5) and "over 1 tasks" in head["detail"]
    assert "left out (the oracle no better than the base LLM): flat" in head["detail"]


def _real_and_flat_rows():
    """Task "t" with a gap (the oracle 1 nat below the base LLM, gt 0.5) and task "flat" without
    one (the oracle is the base LLM plus noise)."""
    rng = np.random.default_rng(3)
    base = {s: 3.0 + rng.normal(0, 0.3, 64) for s in range(3)}
    real = _rows({"base_llm": base, "oracle": {s: base[s] - 1.0 for s in range(3)},
                  "gt": {s: base[s] - 0.5 for s in range(3)}})
    flat = [{**r, "task": "flat"} for r in _rows({"base_llm": base,
                                                   "oracle": {s: base[s] + rng.normal(0, 0.3, 64) for s in range(3)},
                                                   "gt": {s: base[s] - 0.5 for s in range(3)}})]
    return [{**r, "protocol": "cross_task"} for r in real + flat]


def test_a_results_file_marks_its_no_gap_tasks_for_the_compare_tab_and_the_charts():
    """The bench marks each row with gap_defined; the Compare tab's reader takes it from the file's
    summary, or (an older file, with none) from the base LLM's and the oracle's per-example scores;
    the gap chart fades such a task and labels it; a file with neither leaves it unknown."""
    import json

    from gtapp.bench import benchmark, plots
    from ui.service.results import read_results

    rows = _real_and_flat_rows()
    result = benchmark._analyse(rows)
    assert {(r["task"], r["gap_defined"]) for r in result["rows"]} == {("t", True), ("flat", False)}
    encode = lambda obj: json.dumps(obj, default=benchmark._json_default).encode()  # noqa: E731
    for obj in (result, {"rows": result["rows"]},  # the summary's word, or the oracle's scores alone
                {"rows": [{k: v for k, v in r.items() if k != "gap_defined"} for r in rows]}):
        shown, _, _ = read_results(encode(obj))
        assert {(r["task"], r["gap_defined"]) for r in shown} == {("t", True), ("flat", False)}
    # the summary decides where it says: here it calls both tasks defined
    said = {**result, "summary": [{**s, "gap_defined": True} for s in result["summary"]]}
    assert {r["gap_defined"] for r in read_results(encode(said))[0]} == {True}
    # no per-example scores (or malformed ones) and no summary: unknown, never guessed
    bare = [{k: v for k, v in r.items() if k not in ("examples", "gap_defined")} for r in rows]
    bad = [{**r, "examples": {"nll_sum": ["x"], "n_tokens": [1]}} for r in bare]
    for obj in (bare, bad):
        assert {r["gap_defined"] for r in read_results(encode(obj))[0]} == {None}
    # beyond what a benchmark writes (examples per row, seeds per task): not worked through, unknown
    from ui.service.results import MAX_GAP_EXAMPLES, MAX_GAP_SEEDS

    stripped = [{k: v for k, v in r.items() if k != "gap_defined"} for r in rows]
    big = {"nll_sum": [1.0] * (MAX_GAP_EXAMPLES + 1), "n_tokens": [1] * (MAX_GAP_EXAMPLES + 1)}
    many = [{**r, "seed": s} for r in stripped if r["method"] in ("base_llm", "oracle")
            for s in range(MAX_GAP_SEEDS + 1)]
    for obj in ([{**r, "examples": big} for r in stripped], many):
        assert {r["gap_defined"] for r in read_results(encode(obj))[0]} == {None}

    fig = plots.gap_recovery_nll(read_results(encode(result))[0])
    gt = next(t for t in fig.data if t.name == "gt")
    assert list(gt.x) == [f"flat {plots.NO_GAP}", "t"]
    assert list(gt.marker.opacity) == [plots.NO_GAP_OPACITY, 1.0]
    assert "divide by noise" in fig.layout.title.text
    assert plots.NO_GAP not in plots.gap_recovery_nll(bare).layout.title.text  # nothing marked where unknown
