"""The benchmark's Plotly charts, built from result rows (protocol, task, method, dp_epsilon,
clients, seed, metric, value, gap_recovery, wall_s, peak_mem_mb). The dashboard's Compare tab
(``ui.charts``) and ``gtapp bench --plot`` draw the same figures. Every figure has a readable
empty state."""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean
from typing import Any, Callable, Iterable, Optional, Sequence

import plotly.graph_objects as go

NO_DP = "no DP"
LAYOUT = dict(template="plotly_white", height=380, margin=dict(l=50, r=20, t=60, b=50),
              legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))


def empty_figure(title: str, why: str = "no data for the current selection") -> go.Figure:
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
    """Task metric per method per task (grouped bars; mean over seeds and settings)."""
    title = "Task metric per method and task"
    if not rows:
        return empty_figure(title)
    means = _mean_by(rows, lambda r: (r["method"], r["task"]), "value")
    tasks = sorted({t for _, t in means})
    fig = go.Figure()
    for method in _ordered(r["method"] for r in rows):
        ys = [means.get((method, t)) for t in tasks]
        fig.add_trace(go.Bar(name=method, x=tasks, y=ys))
    fig.update_layout(title=title, barmode="group", yaxis_title=_metric_label(rows), xaxis_title="task", **LAYOUT)
    return fig


def gap_recovery(rows: Sequence[dict]) -> go.Figure:
    """Gap recovery (method − base LLM) / (oracle − base LLM) per method and task."""
    title = "Gap recovery = (method − base LLM) / (oracle − base LLM)"
    rows = [r for r in rows if r.get("gap_recovery") is not None]
    if not rows:
        return empty_figure(title, "no gap-recovery numbers in the current selection")
    means = _mean_by(rows, lambda r: (r["method"], r["task"]), "gap_recovery")
    tasks = sorted({t for _, t in means})
    fig = go.Figure()
    for method in _ordered(r["method"] for r in rows):
        fig.add_trace(go.Bar(name=method, x=tasks, y=[means.get((method, t)) for t in tasks]))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888", annotation_text="oracle")
    fig.add_hline(y=0.0, line_color="#bbb")
    fig.update_layout(title=title, barmode="group", yaxis_title="gap recovered", yaxis_tickformat=".0%",
                      xaxis_title="task", **LAYOUT)
    return fig


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
        fig.add_trace(go.Scatter(name=method, x=xs, y=ys, mode="lines+markers", connectgaps=True))
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


ALL = (("metric", metric_by_method), ("gap", gap_recovery), ("epsilon", metric_vs_epsilon),
       ("clients", clients), ("cost", cost))


def all_figures(rows: Sequence[dict]) -> dict[str, go.Figure]:
    return {name: fn(rows) for name, fn in ALL}
