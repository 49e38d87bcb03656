"""The Plotly charts the dashboard's Compare tab shows, built from benchmark rows."""

from __future__ import annotations

from collections import defaultdict

METHOD_ORDER = ("base_tiny", "tiny_ft", "base_llm", "mean_shadow", "public_ft", "kd_logit", "weak_to_strong",
                "proxy_tuning", "datafree_kd", "ridge", "gt", "oracle")


def _ordered(methods):
    return [m for m in METHOD_ORDER if m in methods] + sorted(set(methods) - set(METHOD_ORDER))


def metric_by_method(rows: list[dict], protocol: str | None = None):
    """Grouped bars: task metric per method (no DP, one client), one group per task."""
    import plotly.graph_objects as go

    sel = [r for r in rows if r["dp_epsilon"] is None and r["clients"] == 1
           and (protocol is None or r["protocol"] == protocol)]
    tasks = sorted({r["task"] for r in sel})
    fig = go.Figure()
    for m in _ordered({r["method"] for r in sel}):
        ys = []
        for t in tasks:
            vals = [r["value"] for r in sel if r["method"] == m and r["task"] == t and r["value"] == r["value"]]
            ys.append(sum(vals) / len(vals) if vals else None)
        fig.add_bar(name=m, x=tasks, y=ys)
    fig.update_layout(barmode="group", title="Task metric per method", yaxis_title="metric (mean over seeds)")
    return fig


def gap_recovery(rows: list[dict]):
    import plotly.graph_objects as go

    sel = [r for r in rows if r["dp_epsilon"] is None and r["clients"] == 1 and r["method"] not in ("base_llm", "oracle")]
    fig = go.Figure()
    for protocol in sorted({r["protocol"] for r in sel}):
        by = defaultdict(list)
        for r in sel:
            g = r["gap_recovery"] if r["gap_recovery"] is not None else r.get("gap_recovery_nll")
            if r["protocol"] == protocol and g is not None:
                by[r["method"]].append(g)
        ms = _ordered(by)
        fig.add_bar(name=protocol, x=ms, y=[sum(by[m]) / len(by[m]) for m in ms])
    fig.update_layout(barmode="group", title="Gap recovery (method − base LLM) / (oracle − base LLM)",
                      yaxis_title="gap recovery")
    return fig


def metric_vs_epsilon(rows: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in ("tiny_ft", "gt", "ridge"):
        pts = defaultdict(list)
        for r in rows:
            if r["method"] == m and r["clients"] == 1 and r["value"] == r["value"]:
                pts[r["dp_epsilon"]].append(r["value"])
        if not pts:
            continue
        eps = sorted((e for e in pts if e is not None))
        xs = [str(e) for e in eps] + (["no DP"] if None in pts else [])
        ys = [sum(pts[e]) / len(pts[e]) for e in eps] + ([sum(pts[None]) / len(pts[None])] if None in pts else [])
        fig.add_scatter(name=m, x=xs, y=ys, mode="lines+markers")
    fig.update_layout(title="Task metric against ε (DP-SGD on the TinyLM)", xaxis_title="ε", yaxis_title="metric")
    return fig


def clients(rows: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for n in sorted({r["clients"] for r in rows}):
        by = defaultdict(list)
        for r in rows:
            if r["clients"] == n and r["dp_epsilon"] is None and r["method"] in ("gt", "ridge") and r["value"] == r["value"]:
                by[r["method"]].append(r["value"])
        ms = _ordered(by)
        fig.add_bar(name=f"{n} client{'s' if n > 1 else ''}", x=ms, y=[sum(by[m]) / len(by[m]) for m in ms])
    fig.update_layout(barmode="group", title="One organisation against three", yaxis_title="metric")
    return fig


def cost(rows: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    by_w, by_m = defaultdict(list), defaultdict(list)
    for r in rows:
        if r["dp_epsilon"] is None and r["clients"] == 1 and r["wall_s"]:
            by_w[r["method"]].append(r["wall_s"])
            by_m[r["method"]].append(r["peak_mem_mb"])
    ms = _ordered(by_w)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("wall time (s)", "peak memory (MB)"))
    fig.add_trace(go.Bar(name="wall_s", x=ms, y=[sum(by_w[m]) / len(by_w[m]) for m in ms]), row=1, col=1)
    fig.add_trace(go.Bar(name="peak_mem_mb", x=ms, y=[sum(by_m[m]) / len(by_m[m]) for m in ms]), row=1, col=2)
    fig.update_layout(title="Cost per method", showlegend=False)
    return fig


FIGURES = {"metric_by_method": metric_by_method, "gap_recovery": gap_recovery,
           "metric_vs_epsilon": metric_vs_epsilon, "clients": clients, "cost": cost}


def all_figures(rows: list[dict]) -> dict:
    return {name: fn(rows) for name, fn in FIGURES.items()}
