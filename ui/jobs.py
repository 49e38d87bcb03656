"""Jobs tab: a live table (polled by a gr.Timer; it reads the database, so it survives a
page refresh and a server restart) with kind, status, stage, a progress bar with ETA, who
started the job and for how long it has run; a job's details and log tail; cancel; retry.
"""

from __future__ import annotations

import html
import json
from typing import Any, Optional, Sequence

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui.charts import loss_curve
from ui.common import guarded, md_code, md_escape, status, when_open
from ui.service import Service, _num

POLL_S = 2.0
STATUSES = ("all", "queued", "running", "succeeded", "failed", "cancelled")


def fmt_duration(s: Optional[float]) -> str:
    if s is None:
        return ""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def progress_cell(view) -> str:
    pct = max(0.0, min(1.0, float(view.progress or 0.0))) * 100
    if view.status == "succeeded":
        pct = 100.0
    eta = ""
    if view.status == "running" and view.eta_s is not None:
        eta = f" · ETA {fmt_duration(view.eta_s)}"
    return (f"<div class='gt-bar' role='progressbar' aria-valuemin='0' aria-valuemax='100' "
            f"aria-valuenow='{pct:.0f}'><div class='gt-fill gt-{view.status}' style='width:{pct:.1f}%'></div></div>"
            f"<span class='gt-pct'>{pct:.0f}%{eta}</span>")


def jobs_html(views: Sequence, usernames: dict[int, str], orgs: Optional[dict[int, str]] = None) -> str:
    if not views:
        return "<p class='gt-empty' id='jobs-empty'>No jobs yet. Start one from the Fine-tune or Generate tab.</p>"
    head = ("<tr><th>id</th><th>kind</th><th>status</th><th>stage</th><th>progress</th><th>started by</th>"
            + ("<th>organisation</th>" if orgs is not None else "") + "<th>elapsed</th><th>created</th></tr>")
    rows = []
    for v in views:
        who = usernames.get(v.user_id, "—") if v.user_id is not None else "—"
        org = f"<td>{html.escape(orgs.get(v.org_id, '?'))}</td>" if orgs is not None else ""
        stage = html.escape((v.stage or "")[:80])
        if v.cancel_requested and v.status == "running":
            stage += " <em>(cancel requested)</em>"
        rows.append(
            f"<tr class='gt-job' data-job-id='{v.id}' data-status='{v.status}' data-progress='{v.progress:.3f}'>"
            f"<td>{v.id}</td><td>{html.escape(v.kind)}</td>"
            f"<td><span class='gt-status gt-{v.status}'>{v.status}</span></td><td>{stage}</td>"
            f"<td class='gt-progress'>{progress_cell(v)}</td><td>{html.escape(who)}</td>{org}"
            f"<td>{fmt_duration(v.elapsed_s)}</td><td>{v.created_at:%Y-%m-%d %H:%M:%S}</td></tr>")
    return f"<table class='gt-jobs' id='jobs-table'>{head}{''.join(rows)}</table>"


def job_table(svc: Service, request, status_filter: str = "all", kind: str = "all") -> str:
    who = svc.who(request)
    views = svc.client.list(who, status=None if status_filter in (None, "", "all") else status_filter,
                            kind=None if kind in (None, "", "all") else kind, limit=100)
    return jobs_html(views, svc.usernames(who), svc.org_names() if who.is_admin else None)


def compact(obj: Any, depth: int = 0) -> Any:
    """A job's parameters/outputs for display: nesting cut at 3 levels, long lists cut, and
    server paths reduced to their last two parts (the page is no place for the server's
    file layout)."""
    if isinstance(obj, dict):
        if depth >= 3:
            return f"{{{len(obj)} keys}}"
        return {k: compact(v, depth + 1) for k, v in list(obj.items())[:40]}
    if isinstance(obj, (list, tuple)):
        if depth >= 3:
            return f"[{len(obj)} items]"
        items = [compact(v, depth + 1) for v in obj[:8]]
        return items + ([f"... {len(obj) - 8} more"] if len(obj) > 8 else [])
    if isinstance(obj, str) and obj.startswith("/") and "/" in obj[1:]:
        return "…/" + "/".join(obj.rstrip("/").split("/")[-2:])
    return obj


def job_detail(svc: Service, request, job_id: Any) -> tuple[str, str, Any]:
    """(details markdown, log tail, the live training curve)."""
    who = svc.who(request)
    jid = _num(job_id)
    if jid is None or jid != int(jid) or jid < 1:
        return "Enter a job id from the table to see its details.", "", loss_curve(None)
    v = svc.client.get(int(jid), who)
    who_started = svc.usernames(who).get(v.user_id, "—")
    lines = [f"**Job {v.id}** · {md_escape(v.kind)} · **{md_escape(v.status)}** · {md_escape(v.stage or '')} · "
             f"{v.progress * 100:.0f}% · started by {md_escape(who_started)} · attempt {v.attempts}/{v.max_attempts}"]
    if v.status == "running" and v.eta_s is not None:
        lines.append(f"ETA {fmt_duration(v.eta_s)}")
    place = svc.client.queue_place(v.id, who) if v.status == "queued" else None
    if place:
        lines.append(md_escape(place))
    if v.error:
        lines.append(f"\n**Error:** {md_escape(v.error)}")
        tb = svc.job_traceback(who, v.id)  # admins only; members see the plain message above
        if tb:
            lines.append("\n<details><summary>Traceback (admins only)</summary>\n\n" + md_code(tb[-6000:], "text")
                         + "\n</details>")
    lines += result_lines(v.outputs or {})
    # user text (a job's name, file names) lives in these: a code block they cannot close
    lines.append("\n**Parameters**\n" + md_code(json.dumps(compact(v.params), default=str)[:2000], "json"))
    if v.outputs:
        lines.append("\n**Outputs**\n" + md_code(json.dumps(compact(v.outputs), indent=1, default=str)[:3000], "json"))
    return "\n".join(lines), v.log_tail or "", loss_curve(svc.job_curve(who, v.id), f"Job {v.id}: training curve")


def result_lines(outputs: dict) -> list[str]:
    """A generate job's result in words: warnings first (an out-of-distribution input means
    "expect a poor LLM update"), then the gain over the base LLM and over the provider's mean
    baseline on the same examples, each with its 95 % interval."""
    lines = [f"\n⚠ **{md_escape(w)}**" for w in outputs.get("warnings") or []]
    gains = outputs.get("gains") or {}
    if gains:
        lines.append(f"\n**Result** on {md_escape(str(outputs.get('task')))} ({outputs.get('n')} test examples): "
                     f"{md_escape(str(outputs.get('metric')))} = {float(outputs.get('value') or 0):.4g}")
        for key, label in (("over_base_llm", "the base LLM"), ("over_mean_shadow", "the provider's mean baseline")):
            g = gains.get(key)
            if not g:
                continue
            parts = []
            for kind, what in (("metric", "task metric"), ("nll", "answer NLL, nats/token")):
                d = g.get(kind) or {}
                if d.get("diff") is None or d["diff"] != d["diff"]:
                    continue
                lo, hi = d.get("ci95") or [float("nan")] * 2
                verdict = "better" if lo > 0 else ("worse" if hi < 0 else "no difference shown")
                parts.append(f"{what} {d['diff']:+.3g} [{lo:+.3g}, {hi:+.3g}] ({verdict})")
            lines.append(f"- gain over {label}: " + "; ".join(parts))
    return lines


def cancel_job(svc: Service, request, job_id: Any) -> str:
    who = svc.who(request)
    jid = _num(job_id)
    if jid is None or jid < 1:
        raise ValueError("enter the id of the job to cancel")
    v = svc.client.cancel(int(jid), who)
    if v.status == "cancelled":
        return status(True, f"job {v.id} cancelled")
    if v.cancel_requested and v.status == "running":
        return status(True, f"job {v.id} asked to stop; it stops at its next progress report")
    return status(False, f"job {v.id} is {v.status}; nothing to cancel")


def retry_job(svc: Service, request, job_id: Any) -> str:
    who = svc.who(request)
    jid = _num(job_id)
    if jid is None or jid < 1:
        raise ValueError("enter the id of the job to retry")
    new_id = svc.client.retry(int(jid), who)
    return status(True, f"job {int(jid)} retried as job {new_id}")


def build_jobs_tab(svc: Service, demo):
    with gr.Tab("Jobs", id="jobs") as tab:
        with gr.Row():
            st = gr.Dropdown(label="Status", choices=list(STATUSES), value="all", scale=1, elem_id="jobs-status")
            kind = gr.Dropdown(label="Kind", choices=["all"], value="all", scale=1, elem_id="jobs-kind")
            live = gr.Checkbox(label=f"Live (every {POLL_S:g} s)", value=True, scale=1, elem_id="jobs-live")
        table_html = gr.HTML(elem_id="jobs-html")
        with gr.Row():
            job_id = gr.Number(label="Job id (from the table)", value=None, precision=0, scale=1, elem_id="job-id")
            show = gr.Button("Show", scale=0, elem_id="job-show")
            cancel = gr.Button("Cancel job", variant="stop", scale=0, elem_id="job-cancel")
            retry = gr.Button("Retry job", scale=0, elem_id="job-retry")
        action = gr.Markdown(elem_id="job-action")
        detail = gr.Markdown(elem_id="job-detail")
        curve = gr.Plot(label="Training curve (live)", elem_id="job-curve")
        logs = gr.Textbox(label="Log tail", lines=10, max_lines=20, interactive=False, elem_id="job-log")
        timer = gr.Timer(POLL_S)

    def tick(s, k, jid, request: gr.Request):
        try:
            tbl = job_table(svc, request, s, k)
        except Exception as e:  # noqa: BLE001
            from ui.service import user_message

            tbl = f"<p class='gt-error'>{html.escape(user_message(e))}</p>"
        try:
            d, lg, fig = job_detail(svc, request, jid) if jid else (gr.skip(), gr.skip(), gr.skip())
        except Exception as e:  # noqa: BLE001
            from ui.service import user_message

            d, lg, fig = status(False, user_message(e)), "", gr.skip()
        return tbl, d, lg, fig

    def load(request: gr.Request):
        who = svc.who(request)
        kinds = ["all"] + sorted(k for k, spec in svc.job_kinds(who).items() if spec["allowed"])
        # a job named in the page's URL (`?job=12`) is opened again; `tick` checks it is the caller's
        jid = _num((request.query_params or {}).get("job"))
        return gr.Dropdown(choices=kinds, value="all"), (int(jid) if jid and jid >= 1 else gr.skip())

    @guarded(detail, n_outputs=3)
    def on_show(jid, request: gr.Request):
        return job_detail(svc, request, jid)

    @guarded(action)
    def on_cancel(jid, request: gr.Request):
        return cancel_job(svc, request, jid)

    @guarded(action)
    def on_retry(jid, request: gr.Request):
        return retry_job(svc, request, jid)

    demo.load(when_open("jobs", load, 2), outputs=[kind, job_id], api_name=False) \
        .then(when_open("jobs", tick, 4), [st, kind, job_id], [table_html, detail, logs, curve], api_name=False)
    timer.tick(tick, [st, kind, job_id], [table_html, detail, logs, curve], api_name=False, show_progress="hidden")
    live.change(lambda on: gr.Timer(active=bool(on)), live, timer, api_name=False)
    for c in (st, kind):
        c.change(tick, [st, kind, job_id], [table_html, detail, logs, curve], api_name=False)
    tab.select(tick, [st, kind, job_id], [table_html, detail, logs, curve], api_name=False)
    show.click(on_show, job_id, [detail, logs, curve], api_name="job_detail")
    cancel.click(on_cancel, job_id, action, api_name="cancel_job")
    retry.click(on_retry, job_id, action, api_name="retry_job")
    return tab
