"""The benchmark: report arithmetic on known values, and one real `ci` run checked for sanity
only (finite numbers, schema, base LLM below the oracle) — never for a target."""

import json
import math

import pytest

from gtapp.bench import protocol, report
from gtapp.bench.presets import ALL_METHODS, PRESETS

REQUIRED = {"protocol", "task", "method", "dp_epsilon", "clients", "seed", "metric", "value", "gap_recovery",
            "wall_s", "peak_mem_mb"}


def test_mean_ci_known_values():
    m, lo, hi, n = report.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert hi - m == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert math.isnan(report.mean_ci([float("nan")])[0])


def test_gap_recovery_per_task_and_seed():
    rows = [{"protocol": "p", "task": "t", "seed": 0, "method": m, "value": v, "answer_nll": nll}
            for m, v, nll in (("base_llm", 0.2, 3.0), ("oracle", 0.6, 1.0), ("gt", 0.5, 1.5), ("ridge", 0.1, 3.5))]
    protocol.add_gap_recovery(rows)
    by = {r["method"]: r for r in rows}
    assert by["gt"]["gap_recovery"] == pytest.approx(0.75)
    assert by["ridge"]["gap_recovery"] == pytest.approx(-0.25)
    assert by["gt"]["gap_recovery_nll"] == pytest.approx(0.75)
    assert by["oracle"]["gap_recovery"] == pytest.approx(1.0)


def test_cross_task_presets_keep_private_tasks_out_of_shadow_tasks():
    from gtapp.tasks.library import task_library, task_topic

    for p in PRESETS.values():
        assert not set(p.cross_shadow_tasks) & set(p.cross_private_tasks), p.name
        # nor the private task's topic in another style (dialogue/travel-chatty for travel-short)
        assert not {task_topic(t) for t in p.cross_shadow_tasks} & {task_topic(t) for t in p.cross_private_tasks}, p.name
        assert set(p.methods) == set(ALL_METHODS)
    assert task_topic("dialogue/travel-chatty") == task_topic("dialogue/travel-short") == "dialogue/travel"
    assert task_topic("math/add-coins-hard") != task_topic("math/add-fruit-easy")
    lib = task_library(exclude_topics_of=["dialogue/travel-short"])
    assert "dialogue/travel-chatty" not in lib and "dialogue/travel-short" not in lib and "dialogue/borrow-short" in lib


@pytest.mark.slow
def test_ci_benchmark_runs_end_to_end(ci_zoo, tmp_path):
    from gtapp.bench.benchmark import run_benchmark

    out = tmp_path / "results.json"
    result = run_benchmark("ci", out, zoo_dir=ci_zoo, work=tmp_path / "work", plot=True)
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert {r["method"] for r in rows} == set(ALL_METHODS)
    assert {r["protocol"] for r in rows} == {"in_distribution", "cross_task"}
    assert {r["clients"] for r in rows} == {1, 3} and {r["dp_epsilon"] for r in rows} == {None, 8.0}
    for r in rows:
        assert REQUIRED <= set(r), set(REQUIRED) - set(r)
        assert math.isfinite(r["value"]) and math.isfinite(r["wall_s"]) and r["wall_s"] >= 0
    for p in ("in_distribution", "cross_task"):
        base = next(r for r in rows if r["protocol"] == p and r["method"] == "base_llm")
        oracle = next(r for r in rows if r["protocol"] == p and r["method"] == "oracle")
        print(p, "base", base["value"], "oracle", oracle["value"])
        assert base["value"] < oracle["value"]
    # gt_auto is the GT's adapter or its refinement, decided by the update's task score alone (the
    # run-relative OOD score where the pair set has one task, in-distribution)
    from gtapp.refine import AUTO_REFINE_OOD, AUTO_REFINE_TASK_OOD

    autos = [r for r in rows if r["method"] == "gt_auto"]
    assert autos
    for a in autos:
        key = (a["protocol"], a["task"], a["seed"], a["dp_epsilon"], a["clients"])
        by = {r["method"]: r for r in rows if (r["protocol"], r["task"], r["seed"], r["dp_epsilon"], r["clients"]) == key}
        task_score = by["gt"]["ood_task_score"]
        if a["protocol"] == "in_distribution":
            assert task_score != task_score or task_score is None  # one shadow task: no task reference
            want = "gt_refine" if by["gt"]["ood_score"] > AUTO_REFINE_OOD else "gt"
        else:
            want = "gt_refine" if task_score > AUTO_REFINE_TASK_OOD else "gt"
        assert a["auto_choice"] == want, (key, a["auto_reason"])
        if want == "gt":
            assert a["answer_nll"] == by["gt"]["answer_nll"] and "refine" not in a
        else:  # its own refinement, towards the base LLM's proxy-tuning; gt_refine's stacks on the GT
            assert a["refine"]["teacher"].startswith("llm_base + ") and a["refine_s"] > 0
            assert "over the mapped adapter" in by["gt_refine"]["refine"]["teacher"]
    assert saved["versions"]["torch"] and saved["seeds"] == [0] and saved["preset"]["name"] == "ci"
    assert len(saved["targets"]) == 5 and all("met" in t for t in saved["targets"])
    assert saved["cost"] and all(c["llm_finetune_s"] > 0 for c in saved["cost"])
    assert (tmp_path / "results_gap.html").exists()
    print(report.format_table(result["summary"]))
    print(report.format_targets(result["targets"]))


def test_real_dataset_as_a_cross_task_private_task(micro_zoo, shared_datasets, tmp_path):
    """`--private-dataset gsm8k=PATH`: the real GSM8K copy scored by every method, the mapper
    trained on generated shadow tasks only; gap recovery falls back to answer NLL."""
    from dataclasses import replace

    from gtapp.bench.benchmark import run_benchmark

    tiny = replace(PRESETS["ci"], in_dist_tasks=(), cross_private_tasks=(), cross_shadow_tasks=("math/add-fruit-easy",),
                   n_public=32, n_private=16, n_test=8, eval_limit=4, shadow_subsets=3, shadow_subset_size=8,
                   shadow_steps=2, shadow_snapshots=(), tiny_steps=2, llm_steps=2, dp_epsilons=(None,),
                   gt_config={"d_model": 16, "n_enc_layers": 1, "n_dec_layers": 1, "steps": 5})
    result = run_benchmark(tiny, tmp_path / "r.json", zoo_dir=micro_zoo, work=tmp_path / "w",
                           private_datasets={"gsm8k": str(shared_datasets / "gsm8k")})
    rows = [r for r in result["rows"] if r["protocol"] == "cross_task_real"]
    assert {r["task"] for r in rows} == {"gsm8k"}
    assert {"gt", "ridge", "mean_shadow", "oracle", "base_llm", "kd_logit", "proxy_tuning"} <= {r["method"] for r in rows}
    assert all(math.isfinite(r["answer_nll"]) for r in rows)
    oracle = next(r for r in rows if r["method"] == "oracle")
    assert oracle["gap_recovery_nll"] == pytest.approx(1.0)
    # gt_refine_prompts: samples after other GSM8K train questions, never a private or test one
    from gtapp.refine import ORG_PROMPTS

    own = next(r for r in rows if r["method"] == "gt_refine_prompts")
    assert own["refine"]["text"]["prompts_from"] == ORG_PROMPTS and own["refine"]["text"]["organisation_prompts"] > 0


def test_public_prompts_for_leave_out_private_and_test_prompts_and_open_documents():
    from gtapp.bench.protocol import public_prompts_for
    from gtapp.tasks.base import Example, Task

    task = Task(name="t", family="math", metric="exact_match", train=[Example("p1", "a")], test=[Example("p2", "b")])
    public = [Example("p1", "a"), Example("p2", "b"), Example("p3", "c"), Example("", "one two three four five six "
                                                                                      "seven eight nine ten")]
    assert public_prompts_for(task, public, 10) == ["p3", "one two three four five six seven eight"]
    assert public_prompts_for(task, public, 1) == ["p3"]


def _results_file(path, seed, preset="ci", n_public=128):
    """A results file as `gtapp bench --seeds SEED --out` writes it (rows for one task)."""
    values = {"base_llm": 0.2, "oracle": 0.6 + 0.1 * seed, "gt": 0.5, "ridge": 0.4, "mean_shadow": 0.3}
    rows = [{"protocol": "in_distribution", "task": "t", "method": m, "dp_epsilon": None, "clients": 1, "seed": seed,
             "metric": "exact_match", "value": v, "answer_nll": 1.0, "wall_s": 1.0, "peak_mem_mb": 10.0}
            for m, v in values.items()]
    path.write_text(json.dumps({"preset": {"name": preset, "seeds": [seed], "n_public": n_public}, "seeds": [seed],
                                "rows": rows, "timings": {"total_s": 100.0}, "versions": {"torch": "x"}}))
    return path


def test_merge_combines_seeds_and_refuses_mismatches(tmp_path, capsys):
    from gtapp.bench.benchmark import merge_results
    from gtapp.cli import main

    a, b = _results_file(tmp_path / "a.json", 0), _results_file(tmp_path / "b.json", 1)
    assert main(["bench", "--merge", str(a), str(b), "--out", str(tmp_path / "m.json")]) == 0
    assert "Targets:" in capsys.readouterr().out
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["seeds"] == [0, 1] and merged["preset"]["seeds"] == [0, 1] and len(merged["rows"]) == 10
    gt = next(s for s in merged["summary"] if s["method"] == "gt")
    # gap recovery per seed: (0.5-0.2)/(0.6-0.2) = 0.75 and (0.5-0.2)/(0.7-0.2) = 0.6
    assert gt["seeds"] == 2 and gt["gap_recovery_mean"] == pytest.approx(0.675)
    assert gt["gap_recovery_ci95"][0] < 0.6 and gt["gap_recovery_ci95"][1] > 0.75
    assert merged["timings"]["total_s"] == 200.0 and [m["seeds"] for m in merged["merged_from"]] == [[0], [1]]

    with pytest.raises(ValueError, match="also in an earlier file"):
        merge_results([a, _results_file(tmp_path / "c.json", 0)], tmp_path / "x.json")
    with pytest.raises(ValueError, match="differs in: n_public"):
        merge_results([a, _results_file(tmp_path / "d.json", 2, n_public=64)], tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable results JSON"):
        merge_results([a, tmp_path / "bad.json"], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_dp_target_is_a_ratio_of_mean_gap_recoveries():
    def line(task, eps, gap):
        return {"protocol": "in_distribution", "task": task, "method": "gt", "dp_epsilon": eps, "clients": 1,
                "gap_recovery_mean": gap, "gap_recovery_nll_mean": float("nan")}
    # per-task ratios would be 0.9/1.0 and 0.3/0.05 = 6 (mean 3.45); the figures' ratio is 1.2/1.05
    summary = [line("a", None, 1.0), line("a", 8.0, 0.9), line("b", None, 0.05), line("b", 8.0, 0.3)]
    dp = next(t for t in report.targets(summary, []) if "eps=8" in t["target"])
    assert dp["measured"] == pytest.approx(1.2 / 1.05) and dp["met"] and "over 2 tasks" in dp["detail"]


def test_cost_table_times_the_named_method():
    """The cost of the organisation's path is the named method's own: gt_auto pays the
    refinement only on the task where it refined; without a method, gt_refine where it ran."""
    from gtapp.bench import report

    def row(task, method, **kw):
        return {"protocol": "cross_task", "task": task, "seed": 0, "clients": 1, "dp_epsilon": None,
                "method": method, "wall_s": 99.0, **kw}

    ours = dict(tiny_finetune_s=1.0, generate_s=0.5)
    rows = []
    for task, refined in (("t0", True), ("t1", False)):
        rows += [row(task, "oracle", final_fit_s=10.0), row(task, "gt", **ours),
                 row(task, "gt_refine", **ours, refine_s=4.0),
                 row(task, "gt_auto", **ours, **({"refine_s": 4.0} if refined else {}))]
    auto = {c["task"]: c["tiny_plus_generate_share"] for c in report.cost_table(rows, "gt_auto")}
    assert auto == {"t0": pytest.approx(0.55), "t1": pytest.approx(0.15)}
    default = report.cost_table(rows)
    assert {c["method"] for c in default} == {"gt_refine"}
    assert default[0]["tiny_plus_generate_share"] == pytest.approx(0.55)
    assert [c["tiny_plus_generate_share"] for c in report.cost_table(rows, "gt")] == [pytest.approx(0.15)] * 2
    # like for like: the oracle's wall time with its learning-rate selection (99 s here) as the denominator
    assert [c["share_with_selection"] for c in report.cost_table(rows, "gt")] == [pytest.approx(1.5 / 99)] * 2
