"""Compare tab: Plotly charts and a table from result rows — your organisation's evaluation
rows (admins: everyone's), a stored benchmark results JSON (uploaded by an admin, or written
by a ``bench`` job), or a results JSON you load for this session only. Filters by protocol,
task, mapper version and seed; CSV download of the filtered rows."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Sequence

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui import charts
from ui.common import guarded, html_text, md_escape, status, table, when_open
from ui.service import RESULT_FIELDS, Service, UploadError, read_results, safe_filename

EVALS = "evals"
SESSION = "session"
ALL = "all"
TABLE_COLUMNS = [(f, f) for f in RESULT_FIELDS]


def source_choices(svc: Service, who, has_session: bool = False) -> list[tuple[str, str]]:
    out = [("Evaluations (your organisation)" if not who.is_admin else "Evaluations (all organisations)", EVALS)]
    out += [(b["label"], b["key"]) for b in svc.list_benchmarks(who)]
    if has_session:
        out.append(("Results JSON loaded in this session", SESSION))
    return out


def owned(who, rows: Sequence[dict], targets: Sequence[dict] = ()) -> dict:
    """A ``gr.State`` value holding ``who``'s rows (and the targets their results file recorded).
    Gradio keeps State on the server keyed by the page's session hash, which the browser
    chooses; so each value names its owner, and :func:`rows_of` hands it back only to that user."""
    return {"owner": who.user_id, "rows": list(rows), "targets": list(targets)}


def rows_of(who, value: Any) -> list[dict]:
    """The rows of a State value made by :func:`owned` for ``who``; nothing for anyone else's."""
    if isinstance(value, dict) and value.get("owner") == who.user_id:
        return list(value.get("rows") or [])
    return []


def targets_of(who, value: Any) -> list[dict]:
    """The targets of a State value made by :func:`owned` for ``who``; nothing for anyone else's."""
    if isinstance(value, dict) and value.get("owner") == who.user_id:
        return list(value.get("targets") or [])
    return []




def targets_markdown(targets: Sequence[dict]) -> str:
    """The targets as the benchmark run recorded them, one line each: MET, NOT MET or not measured,
    the measured number and what it was measured on. Empty where the results have none."""
    if not targets:
        return ""
    lines = ["**What this benchmark run said of its targets** (over the whole results file, not the filters):"]
    for t in targets:
        verdict = {True: "MET", False: "NOT MET"}.get(t.get("met"), "not measured")
        measured = f": measured {t['measured']:.3f}" if isinstance(t.get("measured"), (int, float)) else ""
        detail = f" ({md_escape(t['detail'])})" if t.get("detail") else ""
        lines.append(f"- **{verdict}** — {md_escape(t['target'])}{measured}{detail}")
    return "\n".join(lines)


def load_source(svc: Service, who, key: str, session_rows: Any) -> tuple[list[dict], list[dict]]:
    """(rows, the targets its benchmark run recorded) of the selected source; evaluations have no
    targets. A stored results file is read once for both."""
    if key in (None, "", EVALS):
        return svc.evaluation_rows(who), []
    if key == SESSION:
        return rows_of(who, session_rows), targets_of(who, session_rows)
    return svc.benchmark_results(who, key)


def _label(v: Any) -> str:
    return "—" if v in (None, "") else str(v)


def filter_choices(rows: Sequence[dict]) -> dict[str, list[str]]:
    def values(field: str) -> list[str]:
        vals = {_label(r.get(field)) for r in rows}
        return sorted(vals, key=lambda s: (len(s), s) if s.lstrip("-").isdigit() else (10**6, s))
    return {"protocol": values("protocol"), "task": values("task"), "mapper": values("mapper"), "seed": values("seed")}


def filter_rows(rows: Sequence[dict], protocol: Any = ALL, tasks: Any = None, mapper: Any = ALL,
                seed: Any = ALL) -> list[dict]:
    tasks = [t for t in (tasks or []) if t]
    out = []
    for r in rows:
        if protocol not in (None, "", ALL) and _label(r.get("protocol")) != protocol:
            continue
        if tasks and _label(r.get("task")) not in tasks:
            continue
        if mapper not in (None, "", ALL) and _label(r.get("mapper")) != mapper:
            continue
        if seed not in (None, "", ALL) and _label(r.get("seed")) != str(seed):
            continue
        out.append(r)
    return out


def figures(rows: Sequence[dict]) -> list:
    return [fn(rows) for _, fn in charts.ALL]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """A value as a spreadsheet will read it safely: text that a spreadsheet would run as a
    formula (it starts with = + - @, a tab or CR) gets a leading apostrophe; numbers stay numbers."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def to_csv(rows: Sequence[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_FIELDS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(r.get(k)) for k in RESULT_FIELDS})
    return buf.getvalue().encode()


def summary_line(all_rows: Sequence[dict], shown: Sequence[dict], source_label: str) -> str:
    if not all_rows:
        return ("No results here yet. Evaluations appear when a Generate job (with evaluation) or an evaluate job "
                "finishes; or load a benchmark results JSON (written by `gtapp bench`) below.")
    tasks = len({r["task"] for r in shown})
    methods = len({r["method"] for r in shown})
    line = f"{len(shown)} of {len(all_rows)} rows from {source_label} · {tasks} task(s) · {methods} method(s)"
    no_gap = sorted({r["task"] for r in shown if r.get("gap_defined") is False})
    if no_gap:
        line += (f" · no gap to recover on {', '.join(md_escape(t) for t in no_gap)} (the oracle is no better than "
                 "the base LLM there): its gap recoveries divide by noise, so the charts fade them and the "
                 "benchmark's targets leave them out")
    return line


def build_compare_tab(svc: Service, demo):
    with gr.Tab("Compare", id="compare") as tab:
        with gr.Row():
            source = gr.Dropdown(label="Results", choices=[], scale=3, elem_id="cmp-source")
            protocol = gr.Dropdown(label="Protocol", choices=[ALL], value=ALL, scale=1, elem_id="cmp-protocol")
            mapper = gr.Dropdown(label="Mapper version", choices=[ALL], value=ALL, scale=1, elem_id="cmp-mapper")
            seed = gr.Dropdown(label="Seed", choices=[ALL], value=ALL, scale=1, elem_id="cmp-seed")
        tasks = gr.Dropdown(label="Tasks (empty: all)", choices=[], multiselect=True, elem_id="cmp-tasks")
        info = gr.Markdown(elem_id="cmp-info")
        targets = gr.Markdown(elem_id="cmp-targets")
        plots = []  # one per charts.ALL entry, in its order
        plots.append(gr.Plot(elem_id="cmp-metric", show_label=False))
        with gr.Row():
            plots.append(gr.Plot(elem_id="cmp-gap", show_label=False))
            plots.append(gr.Plot(elem_id="cmp-gap_nll", show_label=False))
        with gr.Row():
            plots.append(gr.Plot(elem_id="cmp-epsilon", show_label=False))
            plots.append(gr.Plot(elem_id="cmp-clients", show_label=False))
        plots.append(gr.Plot(elem_id="cmp-cost", show_label=False))
        with gr.Accordion("Table", open=False, elem_id="cmp-table-acc"):
            csv_link = gr.HTML(elem_id="cmp-csv")
            tbl = gr.Dataframe(table([], TABLE_COLUMNS), interactive=False, elem_id="cmp-table", max_height=400)
        with gr.Accordion("Load a benchmark results JSON", open=False):
            gr.Markdown("A list of rows (or `{\"rows\": [...]}`) with protocol, task, method, dp_epsilon, clients, "
                        "seed, metric, value, gap_recovery, wall_s, peak_mem_mb — as `gtapp bench` writes. Admins "
                        "can keep it for everyone; otherwise it is shown in this session only.")
            up = gr.File(label="results.json", file_count="single", type="filepath", elem_id="cmp-upload")
            share = gr.Checkbox(label="Keep it for every user (admins)", value=False, elem_id="cmp-share")
            up_btn = gr.Button("Load results", elem_id="cmp-load")
            up_msg = gr.Markdown(elem_id="cmp-upload-status")
        # server-side, per page session; both hold owned(who, rows), read back with rows_of(who, ...)
        rows_state = gr.State(None)  # rows of the selected source
        session_rows = gr.State(None)  # a results JSON loaded for this session only

    filters = [protocol, tasks, mapper, seed]

    def render(state, p, t, m, s, source_key, request: gr.Request):
        who = svc.who(request)
        rows = rows_of(who, state)
        shown = filter_rows(rows, p, t, m, s)
        token = svc_exports_put(svc, who, "results.csv", to_csv(shown))
        link = (f"<a id='cmp-csv-link' href='download/export/{token}' download>Download these {len(shown)} rows "
                f"as CSV</a>")
        labels = {EVALS: "evaluations", SESSION: "this session's JSON"}
        return (summary_line(rows, shown, labels.get(source_key, "benchmark results")),
                targets_markdown(targets_of(who, state)), *figures(shown), table(shown, TABLE_COLUMNS), link)

    render_outputs = [info, targets, *plots, tbl, csv_link]

    def select_source(key, srows, p, t, m, s, request: gr.Request):
        """Load the source's rows; keep the filters that still apply."""
        who = svc.who(request)
        try:
            rows, targets = load_source(svc, who, key, srows)
        except Exception as e:  # noqa: BLE001
            from ui.service import user_message

            rows, targets = [], []
            gr.Warning(html_text(user_message(e)))
        ch = filter_choices(rows)

        def keep(v, options):
            return v if v in options else ALL
        return (owned(who, rows, targets),
                gr.Dropdown(choices=[ALL] + ch["protocol"], value=keep(p, ch["protocol"])),
                gr.Dropdown(choices=ch["task"], value=[x for x in (t or []) if x in ch["task"]]),
                gr.Dropdown(choices=[ALL] + ch["mapper"], value=keep(m, ch["mapper"])),
                gr.Dropdown(choices=[ALL] + ch["seed"], value=keep(s, ch["seed"])))

    def load(current, srows, request: gr.Request):
        who = svc.who(request)
        ch = source_choices(svc, who, bool(rows_of(who, srows)))
        keys = [k for _, k in ch]
        return gr.Dropdown(choices=ch, value=current if current in keys else EVALS)

    @guarded(up_msg, n_outputs=3)
    def on_upload(path, keep, request: gr.Request):
        who = svc.who(request)
        try:
            if not path:
                raise UploadError("choose a results JSON file first")
            name = os.path.basename(path)
            if keep:
                entry = svc.store_benchmark(who, path, name)
                ch = source_choices(svc, who, False)
                return (status(True, f"{entry['rows']} result rows stored as '{entry['name']}' for every user"),
                        gr.Dropdown(choices=ch, value=entry["key"]), gr.skip())
            rows, skipped, targets = read_results(svc.read_upload(path, safe_filename(name)), safe_filename(name))
        finally:
            svc.discard_upload([path])
        ch = source_choices(svc, who, True)
        extra = f" ({skipped} rows without task/method/value skipped)" if skipped else ""
        return (status(True, f"{len(rows)} result rows loaded for this session{extra}"),
                gr.Dropdown(choices=ch, value=SESSION), owned(who, rows, targets))

    def chain(event):
        return event.then(select_source, [source, session_rows, *filters], [rows_state, *filters], api_name=False) \
            .then(render, [rows_state, *filters, source], render_outputs, api_name=False)

    # a page load fills the tab only when it is the open one (ui.common.when_open)
    demo.load(when_open("compare", load, 1), [source, session_rows], source, api_name=False) \
        .then(when_open("compare", select_source, 5), [source, session_rows, *filters], [rows_state, *filters],
              api_name=False) \
        .then(when_open("compare", render, len(render_outputs)), [rows_state, *filters, source], render_outputs,
              api_name=False)
    chain(tab.select(load, [source, session_rows], source, api_name=False))  # new evaluations appear
    chain(source.input(lambda: None, api_name=False))
    for f in filters:
        f.input(render, [rows_state, *filters, source], render_outputs, api_name=False)
    chain(up_btn.click(on_upload, [up, share], [up_msg, source, session_rows], api_name=False)
          .then(lambda: None, outputs=up, api_name=False))
    return tab


def svc_exports_put(svc: Service, who, filename: str, data: bytes) -> str:
    from ui.web import exports

    return exports(svc).put(who, filename, data)
