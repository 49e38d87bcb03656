"""The benchmark's Plotly charts, built from result rows (protocol, task, method, dp_epsilon,
clients, seed, metric, value, gap_recovery, wall_s, peak_mem_mb; ``gap_defined`` False marks a
task with no gap to recover). The dashboard's Compare tab
(``ui.charts``) and ``gtapp bench --plot`` draw the same figures. Every figure has a readable
empty state."""

from __future__ import annotations

import functools

import math
from collections import defaultdict
from statistics import mean
from typing import Any, Callable, Iterable, Optional, Sequence

import plotly.graph_objects as go

NO_DP = "no DP"
# the legend below the plot, clear of the title
LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=70, b=120),
              legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0))

# one fixed colour per method in every chart (no two methods share one)
METHOD_COLOURS = {
    "base_llm": "#7f7f7f", "base_tiny": "#c7c7c7", "tiny_ft": "#bcbd22", "oracle": "#2ca02c",
    "mean_shadow": "#8c564b", "public_ft": "#e377c2", "ridge": "#9467bd", "gt": "#d62728",
    "gt_refine": "#ff7f0e", "gt_auto": "#ffbb78", "gt_refine_prompts": "#8b0000", "kd_logit": "#1f77b4",
    "weak_to_strong": "#17becf",
    "proxy_tuning": "#000080", "datafree_kd": "#aec7e8", "cross_lora": "#98df8a",
}
_SPARE = ("#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939")
GAP_CLIP = (-1.0, 1.5)  # gap recovery beyond this range is drawn at the edge and marked
NO_GAP = "(no gap)"  # a task's label where its rows say gap_defined is False
NO_GAP_OPACITY = 0.35


def colour(method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _SPARE[sum(map(ord, method)) % len(_SPARE)]


@functools.lru_cache(maxsize=64)
def empty_figure(title: str, why: str = "no data for the current selection") -> go.Figure:
    """A blank chart that says why. Built once per (title, why) and shared (a dashboard page
    load draws several; building a Plotly figure costs tens of ms): never modify the result."""
    fig = go.Figure()
    fig.update_layout(title=title, **{**LAYOUT, "height": 260},
                      xaxis=dict(visible=False), yaxis=dict(visible=False),
                      annotations=[dict(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                                        font=dict(size=14, color="#777"))])
    return fig


def _mean_by(rows: Iterable[dict], keys: Callable[[dict], tuple], field: str) -> dict[tuple, float]:
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        v = r.get(field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            acc[keys(r)].append(float(v))
    return {k: mean(v) for k, v in acc.items()}


def _ordered(values: Iterable[Any]) -> list:
    seen: list = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _metric_label(rows: Sequence[dict]) -> str:
    metrics = sorted({r.get("metric") or "" for r in rows} - {""})
    return " / ".join(metrics) if metrics else "value"


def metric_by_method(rows: Sequence[dict]) -> go.Figure:
    """Task metric per method per task: one panel per metric (exact match, ROUGE-L and
    perplexity never share an axis), grouped bars (mean over seeds and settings)."""
    from plotly.subplots import make_subplots

    title = "Task metric per method and task (one panel per metric)"
    if not rows:
        return empty_figure(title)
    metrics = sorted({r.get("metric") or "value" for r in rows})
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=metrics, vertical_spacing=0.12)
    shown = set()
    for i, metric in enumerate(metrics, start=1):
        part = [r for r in rows if (r.get("metric") or "value") == metric]
        means = _mean_by(part, lambda r: (r["method"], r["task"]), "value")
        tasks = sorted({t for _, t in means})
        for method in _ordered(r["method"] for r in part):
            fig.add_trace(go.Bar(name=method, x=tasks, y=[means.get((method, t)) for t in tasks],
                                 marker_color=colour(method), legendgroup=method, showlegend=method not in shown),
                          row=i, col=1)
            shown.add(method)
        fig.update_yaxes(title_text=metric + (" (lower is better)" if metric == "perplexity" else ""), row=i, col=1)
    fig.update_layout(title=title, barmode="group", **{**LAYOUT, "height": 300 + 260 * len(metrics)})
    return fig


def gap_recovery(rows: Sequence[dict], field: str = "gap_recovery") -> go.Figure:
    """Gap recovery (method − base LLM) / (oracle − base LLM) per method and task, on the task
    metric (``gap_recovery``) or on answer NLL (``gap_recovery_nll``); the axis is clipped to
    GAP_CLIP and bars beyond it are drawn at the edge with their value written on them."""
    what = "answer NLL" if field == "gap_recovery_nll" else "task metric"
    title = f"Gap recovery on the {what} = (method − base LLM) / (oracle − base LLM)"
    rows = [r for r in rows if r.get(field) is not None]
    if not rows:
        return empty_figure(title, "no gap-recovery numbers in the current selection")
    means = _mean_by(rows, lambda r: (r["method"], r["task"]), field)
    tasks = sorted({t for _, t in means})
    # a task whose oracle is no better than the base LLM (gtapp.bench.report.gap_defined) has no gap:
    # its recoveries divide by noise, so its bars are faded and its label says so
    no_gap = {r["task"] for r in rows if r.get("gap_defined") is False}
    labels = [f"{t} {NO_GAP}" if t in no_gap else t for t in tasks]
    lo, hi = GAP_CLIP
    fig = go.Figure()
    for method in _ordered(r["method"] for r in rows):
        raw = [means.get((method, t)) for t in tasks]
        ys = [None if v is None else min(max(v, lo), hi) for v in raw]
        text = [f"{v:.0%}" if v is not None and not lo <= v <= hi else "" for v in raw]
        fig.add_trace(go.Bar(name=method, x=labels, y=ys, text=text, textposition="inside",
                             marker_color=colour(method),
                             marker_opacity=[NO_GAP_OPACITY if t in no_gap else 1.0 for t in tasks],
                             marker_pattern_shape=["/" if t else "" for t in text],
                             hovertext=[f"{method}: {v:.1%}" + (f" {NO_GAP}" if t in no_gap else "")
                                        if v is not None else "" for v, t in zip(raw, tasks)],
                             hoverinfo="text"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888", annotation_text="oracle")
    fig.add_hline(y=0.0, line_color="#bbb", annotation_text="base LLM", annotation_position="bottom right")
    if no_gap:
        title += f"<br><sup>{NO_GAP}: the oracle is no better than the base LLM there (paired 95 % interval), " \
                 "so its gap recoveries divide by noise; faded, and left out of the targets</sup>"
    fig.update_layout(title=title, barmode="group", yaxis_title=f"gap recovered (clipped to {lo:.0%}..{hi:.0%}; "
                      "hatched bars lie beyond, value written)", yaxis_tickformat=".0%",
                      yaxis_range=[lo - 0.05, hi + 0.05], xaxis_title="task", **LAYOUT)
    return fig


def gap_recovery_nll(rows: Sequence[dict]) -> go.Figure:
    return gap_recovery(rows, "gap_recovery_nll")


def _eps_key(v: Optional[float]) -> str:
    return NO_DP if v is None else f"{v:g}"


def metric_vs_epsilon(rows: Sequence[dict]) -> go.Figure:
    """Task metric against the privacy budget ε (no DP last), one line per method."""
    title = "Task metric vs privacy budget ε"
    if not any(r.get("dp_epsilon") is not None for r in rows):
        return empty_figure(title, "no DP results (dp_epsilon) in the current selection")
    eps_values = sorted({r["dp_epsilon"] for r in rows if r.get("dp_epsilon") is not None})
    xs = [_eps_key(e) for e in eps_values] + ([NO_DP] if any(r.get("dp_epsilon") is None for r in rows) else [])
    means = _mean_by(rows, lambda r: (r["method"], _eps_key(r.get("dp_epsilon"))), "value")
    fig = go.Figure()
    for method in _ordered(r["method"] for r in rows):
        ys = [means.get((method, x)) for x in xs]
        if sum(y is not None for y in ys) == 0:
            continue
        fig.add_trace(go.Scatter(name=method, x=xs, y=ys, mode="lines+markers", connectgaps=True,
                                 line_color=colour(method)))
    fig.update_layout(title=title, xaxis_title="ε (δ as configured)", xaxis_type="category",
                      yaxis_title=_metric_label(rows), **LAYOUT)
    return fig


def clients(rows: Sequence[dict]) -> go.Figure:
    """Task metric per method with 1 and with 3 (or any number of) clients."""
    title = "One client vs several clients"
    rows = [r for r in rows if r.get("clients") is not None]
    if not rows:
        return empty_figure(title, "no multi-client results (clients) in the current selection")
    means = _mean_by(rows, lambda r: (r["method"], r["clients"]), "value")
    methods = _ordered(r["method"] for r in rows)
    fig = go.Figure()
    for n in sorted({c for _, c in means}):
        fig.add_trace(go.Bar(name=f"{n} client{'s' if n != 1 else ''}", x=methods,
                             y=[means.get((m, n)) for m in methods]))
    fig.update_layout(title=title, barmode="group", xaxis_title="method", yaxis_title=_metric_label(rows), **LAYOUT)
    return fig


def cost(rows: Sequence[dict]) -> go.Figure:
    """Wall time and peak memory per method (two panels)."""
    from plotly.subplots import make_subplots

    title = "Time and memory per method"
    has_t = [r for r in rows if r.get("wall_s") is not None]
    has_m = [r for r in rows if r.get("peak_mem_mb") is not None]
    if not has_t and not has_m:
        return empty_figure(title, "no wall_s / peak_mem_mb in the current selection")
    methods = _ordered(r["method"] for r in has_t + has_m)
    t = _mean_by(has_t, lambda r: (r["method"],), "wall_s")
    m = _mean_by(has_m, lambda r: (r["method"],), "peak_mem_mb")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("wall time (s)", "peak memory (MB)"))
    fig.add_trace(go.Bar(name="wall_s", x=methods, y=[t.get((x,)) for x in methods], marker_color="#4c78a8"),
                  row=1, col=1)
    fig.add_trace(go.Bar(name="peak_mem_mb", x=methods, y=[m.get((x,)) for x in methods], marker_color="#f58518"),
                  row=1, col=2)
    fig.update_layout(title=title, showlegend=False, **{k: v for k, v in LAYOUT.items() if k != "legend"})
    return fig


ALL = (("metric", metric_by_method), ("gap", gap_recovery), ("gap_nll", gap_recovery_nll),
       ("epsilon", metric_vs_epsilon), ("clients", clients), ("cost", cost))


def all_figures(rows: Sequence[dict]) -> dict[str, go.Figure]:
    return {name: fn(rows) for name, fn in ALL}
