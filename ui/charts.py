"""Plotly figures for the dashboard: the benchmark charts (shared with ``gtapp bench --plot``,
see ``gtapp.bench.plots``) and the adapter summary's per-layer norms."""

from __future__ import annotations

from typing import Optional

import plotly.graph_objects as go

from gtapp.bench.plots import (ALL, LAYOUT, NO_DP, clients, cost, empty_figure, gap_recovery,  # noqa: F401
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

