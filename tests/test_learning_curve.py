"""Learning curves (gtapp.mapper.curve): held-out tasks and runs never trained on, whole runs,
errors with intervals, and where one mapper crosses another."""

import math

import pytest


@pytest.fixture(scope="module")
def pair_set(micro_zoo, tmp_path_factory):
    from gtapp.shadow import ShadowConfig, make_pairs

    cfg = ShadowConfig(tasks=("math/add-fruit-easy", "math/sub-fruit-easy", "math/add-books-easy",
                              "math/mul-books-easy", "lm/weather-0"),
                       subsets=4, subset_size=8, steps=3, snapshot_steps=(1, 2), batch_size=4, max_length=48,
                       n_train=24, lr=1e-2)
    return make_pairs(micro_zoo, cfg, tmp_path_factory.mktemp("curve") / "pairs")


def test_split_keeps_held_out_tasks_and_runs_out_of_the_pool(pair_set):
    from gtapp.mapper.curve import _whole_runs, split_pool

    pool, runs, tasks, held = split_pool(pair_set, task_fraction=0.2, run_fraction=0.25, seed=0)
    assert len(held) == 1
    task_of = {r: v["task"] for r, v in pair_set.manifest["runs"].items()}
    assert not {task_of[p.run_id] for p in pool} & set(held)
    assert {task_of[p.run_id] for p in tasks} == set(held)
    assert not {p.run_id for p in runs} & {p.run_id for p in pool}
    assert len(pool) + len(runs) + len(tasks) == len(pair_set)
    part = _whole_runs(pool, 5)
    per_run = {p.run_id for p in part}
    assert all(sum(q.run_id == r for q in part) == 3 for r in per_run) and len(part) >= 5


def test_curve_measures_every_kind_at_every_size(pair_set):
    from gtapp.mapper.curve import learning_curve

    fits = []
    curve = learning_curve(pair_set, {"mean": ("mean", None), "ridge": ("ridge", None)}, sizes=(6, None),
                           n_boot=100, on_fit=lambda label, n, m: fits.append((label, n)))
    sizes = sorted({p["pairs"] for p in curve["points"]})
    assert len(sizes) == 2 and sizes[-1] == curve["pool_pairs"]
    assert {(p["label"], p["pairs"]) for p in curve["points"]} == set(fits)
    for p in curve["points"]:
        for where in ("held_out_runs", "held_out_tasks"):
            e = p[where]
            assert math.isfinite(e["rel_err"]) and e["ci95"][0] <= e["rel_err"] <= e["ci95"][1]
    assert curve["crossing"]["b"] == "ridge"


def test_crossing_reports_where_a_falls_below_b():
    from gtapp.mapper.curve import crossing

    def pt(label, n, err, half):
        return {"label": label, "pairs": n, "held_out_tasks": {"rel_err": err, "ci95": [err - half, err + half]}}

    points = [pt("gt", 100, 1.0, 0.1), pt("ridge", 100, 0.8, 0.1), pt("gt", 400, 0.7, 0.1), pt("ridge", 400, 0.75, 0.1),
              pt("gt", 1600, 0.4, 0.05), pt("ridge", 1600, 0.7, 0.05)]
    c = crossing(points, "gt", "ridge")
    assert c["first_below_at_pairs"] == 400 and c["intervals_apart_at_pairs"] == 1600 and c["a_below_b_at_largest"]
