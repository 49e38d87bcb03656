"""Plotly figures for the dashboard: the benchmark charts (shared with ``gtapp bench --plot``,
see ``gtapp.bench.plots``) and the adapter summary's per-layer norms."""

from __future__ import annotations

from typing import Optional

import plotly.graph_objects as go

from gtapp.bench.plots import (ALL, LAYOUT, NO_DP, clients, colour, cost, empty_figure, gap_recovery,  # noqa: F401
                               metric_by_method, metric_vs_epsilon)


def layer_norms(summary: Optional[dict]) -> go.Figure:
    """‖ΔW‖_F per layer of an adapter summary (``AdapterSummary.to_dict()``)."""
    title = "‖ΔW‖_F per layer"
    norms = (summary or {}).get("layer_norms") or {}
    if not norms:
        return empty_figure(title, "no adapter summary yet")
    items = sorted(((int(k), float(v)) for k, v in norms.items()), key=lambda kv: kv[0])
    fig = go.Figure(go.Bar(x=[f"layer {k}" for k, _ in items], y=[v for _, v in items], marker_color="#ea580c"))
    fig.update_layout(title=title, yaxis_title="Frobenius norm", **{**LAYOUT, "height": 300})
    return fig



def loss_curve(curve: Optional[dict], title: str = "Training curve") -> go.Figure:
    """A job's live curve (workers.runner's curve.json: {"<stage>: <metric>": [[step, value], ...]}):
    one line per series, train solid and validation dashed, steps on x."""
    if not curve:
        return empty_figure("no training curve for this job (yet)")
    fig = go.Figure()
    for name, points in sorted(curve.items()):
        if not points:
            continue
        xs, ys = zip(*points)
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers" if len(xs) < 30 else "lines",
                                 name=name, line={"dash": "dash" if "val" in name.lower() else "solid"}))
    fig.update_layout(**{**LAYOUT, "title": {"text": title}, "xaxis_title": "step", "yaxis_title": "value",
                         "height": 320, "legend": {"orientation": "h", "y": -0.3}})
    return fig


GAIN_BASELINES = (("over_base_llm", "over the base LLM"), ("over_mean_shadow", "over the provider's mean baseline"))


def gains_figure(results: list[dict]) -> go.Figure:
    """An organisation's generated adapters (``Service.generated_results``): the gain in answer
    NLL (nats per token, lower NLL is better, so a positive gain is better) over the base LLM
    and over the provider's mean baseline on the same examples, with the paired 95 % interval
    as error bars; an adapter whose generate job warned (out of distribution) is marked ⚠."""
    title = "Your gain in answer NLL (nats/token; above 0: better), 95 % intervals"
    rows = [r for r in results if r.get("gains")]
    if not rows:
        return empty_figure(title, "no evaluated generated adapter yet")
    labels = [("⚠ " if r.get("warnings") else "") + f"{r['name']} ({r['id']})" for r in rows]
    fig = go.Figure()
    for key, label in GAIN_BASELINES:
        ys, lo, hi = [], [], []
        for r in rows:
            d = ((r["gains"].get(key) or {}).get("nll")) or {}
            diff, ci = d.get("diff"), d.get("ci95") or [None, None]
            ok = isinstance(diff, (int, float)) and diff == diff and None not in ci
            ys.append(diff if ok else None)
            lo.append(diff - ci[0] if ok else 0)
            hi.append(ci[1] - diff if ok else 0)
        fig.add_trace(go.Bar(x=labels, y=ys, name=label, marker_color=colour(key.removeprefix("over_")),
                             error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo)))
    fig.add_hline(y=0, line_color="#6b7280", line_width=1)
    fig.update_layout(**{**LAYOUT, "title": {"text": title}, "barmode": "group", "height": 320,
                         "legend": {"orientation": "h", "y": -0.3}})
    return fig
