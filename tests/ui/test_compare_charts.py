"""Compare charts a person can read: one panel per metric, gap recovery on a clipped axis with
the outliers marked, one fixed colour per method in every chart, the legend below the plot."""

from __future__ import annotations

import pytest

from gtapp.bench import plots


def _rows():
    rows = []
    for task, metric in (("math/a", "exact_match"), ("lm/b", "perplexity"), ("dialogue/c", "rouge_l")):
        for method, value, gap in (("base_llm", 0.1, 0.0), ("oracle", 0.6, 1.0), ("gt", 0.3, -150.0),
                                   ("ridge", 0.2, 0.4), ("proxy_tuning", 0.5, 0.8)):
            rows.append({"protocol": "cross_task", "task": task, "method": method, "metric": metric,
                         "value": value * (40 if metric == "perplexity" else 1), "gap_recovery": gap,
                         "gap_recovery_nll": gap / 2, "dp_epsilon": None, "clients": 1, "seed": 0,
                         "wall_s": 1.0, "peak_mem_mb": 10.0})
    return rows


def test_each_metric_has_its_own_panel():
    fig = plots.metric_by_method(_rows())
    axes = {t.yaxis for t in fig.data}
    assert len(axes) == 3  # exact match, perplexity and ROUGE-L never share a y axis
    titles = {a.text for a in fig.layout.annotations}
    assert {"exact_match", "perplexity", "rouge_l"} <= titles


def test_gap_recovery_axis_is_clipped_and_outliers_are_marked():
    for fig in (plots.gap_recovery(_rows()), plots.gap_recovery_nll(_rows())):
        lo, hi = fig.layout.yaxis.range
        assert lo >= plots.GAP_CLIP[0] - 0.1 and hi <= plots.GAP_CLIP[1] + 0.1
        gt = next(t for t in fig.data if t.name == "gt")
        assert all(y >= plots.GAP_CLIP[0] for y in gt.y)  # drawn at the edge ...
        assert all(txt.endswith("%") for txt in gt.text)  # ... with its true value written on it
        assert "-15000%" in gt.text[0] or "-7500%" in gt.text[0]


def test_one_fixed_colour_per_method_across_charts():
    rows = _rows()
    seen = {}
    for fig in (plots.metric_by_method(rows), plots.gap_recovery(rows), plots.metric_vs_epsilon(rows)):
        for t in fig.data:
            c = t.marker.color if t.type == "bar" else t.line.color
            if c is None:
                continue
            assert seen.setdefault(t.name, c) == c, t.name
    colours = [plots.colour(m) for m in plots.METHOD_COLOURS]
    assert len(set(colours)) == len(colours)


def test_legend_sits_below_the_plot_clear_of_the_title():
    fig = plots.gap_recovery(_rows())
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"


def test_admin_learning_curve_chart_shows_each_mapper_with_intervals_and_the_crossing():
    from gtapp.mapper.curve import crossing
    from ui.admin import learning_curve_figure

    def pt(label, n, task_err, run_err):
        return {"label": label, "pairs": n, "held_out_tasks": {"rel_err": task_err, "ci95": [task_err - .05, task_err + .05]},
                "held_out_runs": {"rel_err": run_err, "ci95": [run_err - .02, run_err + .02]}}

    points = [pt("mean", 100, 1.0, 0.9), pt("ridge", 100, 0.8, 0.5), pt("gt", 100, 0.9, 0.6),
              pt("mean", 1600, 1.0, 0.9), pt("ridge", 1600, 0.7, 0.4), pt("gt", 1600, 0.5, 0.3)]
    fig = learning_curve_figure({"points": points, "crossing": crossing(points, "gt", "ridge")})
    assert len(fig.data) == 6 and {t.name.split(" ")[0] for t in fig.data} == {"mean", "ridge", "gt"}
    gt_tasks = next(t for t in fig.data if t.name == "gt (held out tasks)")
    assert list(gt_tasks.x) == [100, 1600] and list(gt_tasks.error_y.array) == pytest.approx([0.05, 0.05])
    assert "from 1600 pairs" in fig.layout.title.text
    assert "no learning curve" in learning_curve_figure(None).layout.annotations[0].text
