"""Upload tab: a TinyLM adapter (a .zip, or the peft files) or a dataset (prompt/answer
JSONL/CSV, or one of the six known formats), validated at once, with errors in words."""

from __future__ import annotations

import os
from typing import Any, Optional

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui import charts
from ui.common import choices, clear_message, first, fmt, guarded, md_escape, status, table, when_open
from ui.service import KNOWN_FORMATS, USER_FORMAT, USER_METRICS, Service

DATASET_COLUMNS = [("id", "id"), ("name", "name"), ("org", "organisation"), ("examples", "examples"),
                   ("format", "format"), ("metric", "metric"), ("budget", "ε budget"), ("spent", "ε spent"),
                   ("created", "uploaded")]
# After a dataset is stored, its form goes back to what a next file most likely needs (a
# stale "gsm8k" would refuse the next prompt/answer file), and the message says so.
# The privacy budget and δ stay: clearing them would leave the next dataset unprotected.
FORM_RESET = (f"The form was reset for the next file: format '{USER_FORMAT}', metric 'exact_match', name empty "
              "(the privacy budget and δ are kept).")
PREVIEW_COLUMNS = [("prompt", "prompt"), ("answer", "answer"), ("references", "references")]
ADAPTER_COLUMNS = [("id", "id"), ("name", "name"), ("org", "organisation"), ("model", "model"),
                   ("origin", "origin"), ("pair_id", "pair"), ("epsilon", "ε (DP)"), ("created", "created")]


def _paths(files: Any) -> list[str]:
    if not files:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for f in files:
        p = getattr(f, "name", None) if not isinstance(f, (str, os.PathLike)) else f
        if p:
            out.append(str(p))
    return out


def summary_markdown(summary: dict, pair: str) -> str:
    fps = summary.get("recipe_fingerprints") or {}
    init = summary.get("init_distance") or {}
    lines = [
        f"**Adapter accepted** for model pair **{md_escape(pair)}** — it matches the pair's TinyLM recipe.",
        "",
        "| property | value |", "|---|---|",
        f"| LoRA modules | {len(summary.get('modules') or [])} |",
        f"| rank / alpha (scale) | {summary.get('rank')} / {fmt(summary.get('alpha'))} ({fmt(summary.get('scale'))}) |",
        f"| dtype | {md_escape(summary.get('dtype', ''))} |",
        f"| parameters | {summary.get('num_parameters')} |",
        f"| ‖ΔW‖_F (all modules) | {fmt(summary.get('total_norm'))} |",
        f"| max ‖A−A0‖/‖A0‖ (init check) | {fmt(max(init.values(), default=0.0))} |",
        f"| target modules | {md_escape(', '.join(fps.get('target_modules') or []))} |",
        f"| base fingerprint | `{str(fps.get('base_fingerprint', ''))[:16]}` |",
        f"| init fingerprint (seed {fps.get('init_seed', '?')}) | `{str(fps.get('init_fingerprint', ''))[:16]}` |",
        f"| sha256 of the weights | `{str(summary.get('sha256', ''))[:16]}…` |",
    ]
    for w in summary.get("warnings") or []:
        lines.append(f"\n⚠️ {md_escape(w)}")
    return "\n".join(lines)


def module_table(summary: Optional[dict]) -> dict:
    s = summary or {}
    norms, init = s.get("module_norms") or {}, s.get("init_distance") or {}
    rows = [{"module": m, "norm": norms.get(m), "init": init.get(m)} for m in s.get("modules") or []]
    return table(rows, [("module", "module"), ("norm", "‖ΔW‖_F"), ("init", "‖A−A0‖/‖A0‖")])


def upload_adapter(svc: Service, files: Any, pair_id: Any, name: str, request) -> tuple:
    """-> (status, summary markdown, layer-norm figure, module table)."""
    who = svc.who(request)
    paths = _paths(files)
    try:
        res = svc.ingest_adapter(who, [(p, os.path.basename(p)) for p in paths], pair_id, name)
    finally:
        svc.discard_upload(paths)
    s = res["summary"]
    return (status(True, f"adapter '{res['name']}' stored (id {res['id']}): {len(s.get('modules') or [])} "
                         f"modules, rank {s.get('rank')}"),
            summary_markdown(s, res["pair"]), charts.layer_norms(s), module_table(s))


def upload_dataset(svc: Service, file: Any, fmt_name: str, metric: str, name: str, budget: Any, delta: Any,
                   request) -> tuple:
    """-> (status, preview table)."""
    who = svc.who(request)
    paths = _paths(file)
    if len(paths) > 1:
        svc.discard_upload(paths)
        raise ValueError("upload one dataset file at a time")
    path = paths[0] if paths else None
    try:
        res = svc.ingest_dataset(who, path, os.path.basename(path) if path else "", fmt_name, metric, name,
                                 budget, delta)
    finally:
        svc.discard_upload(paths)
    budget_txt = f"privacy budget ε={res['budget']:g} at δ={res['delta']:g}" if res["budget"] else "no privacy budget"
    skipped = f"; {res['skipped']} records skipped" if res.get("skipped") else ""
    return (status(True, f"dataset '{res['name']}' stored (id {res['id']}): {res['examples']} examples, "
                         f"format {res['format']}, metric {res['metric']}, {budget_txt}{skipped}. {FORM_RESET}"),
            table(res["preview"], PREVIEW_COLUMNS))


def adapter_details(svc: Service, adapter_id: Any, request) -> tuple:
    """One of your adapters (admins: any): -> (status, summary markdown, figure, module table)."""
    who = svc.who(request)
    if adapter_id in (None, "", 0):
        raise ValueError("enter an adapter id from the table")
    a = svc.get_adapter(who, adapter_id)
    meta = a["meta"]
    summary = meta.get("summary")
    pair = meta.get("pair") or f"id {a['pair_id']}"
    if summary:
        md = summary_markdown(summary, pair).replace("**Adapter accepted**", f"**Adapter {a['id']} ({md_escape(a['name'])})** accepted", 1)
    else:
        rec = meta.get("record") or {}
        md = (f"**Adapter {a['id']} ({md_escape(a['name'])})**: {a['model']} adapter {a['origin']} by job {a['job_id']} "
              f"for model pair {md_escape(pair)}" + (f" ({md_escape(a['notes'])})" if a.get("notes") else "")
              + "".join(f"\n- {md_escape(k)}: {md_escape(fmt(v))}" for k, v in sorted(rec.items())
                        if isinstance(v, (int, float, str)) and not isinstance(v, bool))[:3000])
        contributors = meta.get("contributors")
        if isinstance(contributors, list) and contributors:
            md += "\n\n| contributor | weight | DP ε | δ |\n|---|---|---|---|\n" + "\n".join(
                f"| {md_escape(c.get('name', ''))} (adapter {c.get('adapter_id')}) | {fmt(c.get('weight'))} | "
                f"{fmt(c.get('epsilon')) or 'no DP'} | {fmt(c.get('delta'))} |" for c in contributors if isinstance(c, dict))
    return (status(True, f"adapter {a['id']} of organisation {a['org']}"), md, charts.layer_norms(summary),
            module_table(summary))


def my_uploads(svc: Service, request) -> tuple:
    who = svc.who(request)
    return (table(svc.list_datasets(who), DATASET_COLUMNS), table(svc.list_adapters(who), ADAPTER_COLUMNS))


def pair_choices(svc: Service) -> list[tuple[str, int]]:
    return choices(svc.list_pairs(), lambda p: f"{p['name']} (id {p['id']}; tiny: {p['tiny']})")


def build_upload_tab(svc: Service, demo):
    with gr.Tab("Upload", id="upload") as tab:
        gr.Markdown("Upload a **TinyLM adapter** you trained yourself, or a **dataset** gtapp can fine-tune the "
                    "TinyLM on. Everything is checked on the server at once; what you upload is stored for your "
                    f"organisation only (at most {svc.settings.max_upload_mb} MiB).")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### TinyLM adapter\nA `.zip` of the folder peft's `save_pretrained` wrote, or its "
                            "files `adapter_config.json` + `adapter_model.safetensors` (+ `gtapp_recipe.json`). "
                            "Safetensors only: pickle files are refused.")
                a_pair = gr.Dropdown(label="Model pair (its TinyLM recipe)", choices=[], elem_id="adapter-pair")
                a_files = gr.File(label="Adapter files", file_count="multiple", type="filepath",
                                  elem_id="adapter-files")
                a_name = gr.Textbox(label="Name (optional)", max_length=200, elem_id="adapter-name")
                a_btn = gr.Button("Validate and store adapter", variant="primary", elem_id="adapter-upload")
                a_status = gr.Markdown(elem_id="adapter-status")
                a_summary = gr.Markdown(elem_id="adapter-summary")
                a_plot = gr.Plot(label="‖ΔW‖ per layer", elem_id="adapter-norms")
                a_modules = gr.Dataframe(module_table(None), label="Per module", interactive=False, elem_id="adapter-modules")
            with gr.Column():
                gr.Markdown("### Dataset\n`prompt`/`answer` rows (JSONL, JSON or CSV, optional `references`), or a "
                            "file in one of the published formats of GSM8K, AQuA-RAT, CommonsenseQA, DROP, SAMSum, "
                            "DialogSum.")
                d_file = gr.File(label="Dataset file", file_count="single", type="filepath", elem_id="dataset-file")
                d_fmt = gr.Dropdown(label="Format", choices=[USER_FORMAT, *KNOWN_FORMATS], value=USER_FORMAT,
                                    elem_id="dataset-format")
                d_metric = gr.Dropdown(label="Metric (prompt/answer files)", choices=list(USER_METRICS),
                                       value="exact_match", elem_id="dataset-metric")
                d_name = gr.Textbox(label="Name (optional; default: the file name)", max_length=200,
                                    elem_id="dataset-name")
                with gr.Row():
                    d_budget = gr.Number(label="Privacy budget ε (total for DP fine-tunes; 0: none)",
                                         value=None, elem_id="dataset-budget")
                    d_delta = gr.Number(label="δ", value=1e-5, elem_id="dataset-delta")
                d_btn = gr.Button("Validate and store dataset", variant="primary", elem_id="dataset-upload")
                d_status = gr.Markdown(elem_id="dataset-status")
                # fixed column widths and cut cells: a long prompt must not stretch its column (and
                # the header row with it) until the answer is off-screen
                d_preview = gr.Dataframe(table([], PREVIEW_COLUMNS), label="Preview (first rows)", interactive=False,
                                         wrap=True, column_widths=["55%", "25%", "20%"], max_chars=240,
                                         max_height=420, elem_id="dataset-preview")
        gr.Markdown("### Your uploads")
        refresh = gr.Button("Refresh", size="sm")
        ds_table = gr.Dataframe(table([], DATASET_COLUMNS), label="Datasets", interactive=False, elem_id="my-datasets")
        ad_table = gr.Dataframe(table([], ADAPTER_COLUMNS), label="Adapters", interactive=False, elem_id="my-adapters")
        with gr.Row():
            show_id = gr.Number(label="Adapter id (from the table)", value=None, precision=0, scale=1,
                                elem_id="adapter-show-id")
            show_btn = gr.Button("Show its summary above", scale=0, elem_id="adapter-show")

    def load(request: gr.Request):
        c = pair_choices(svc)
        svc.who(request)
        return (gr.Dropdown(choices=c, value=first(c)), *my_uploads(svc, request))

    def cleared():  # an error must not leave an earlier adapter's summary on screen
        return None, "", charts.layer_norms(None), module_table(None)

    @guarded(a_status, n_outputs=4, on_error=cleared)
    def on_adapter(files, pair_id, name, request: gr.Request):
        return upload_adapter(svc, files, pair_id, name, request)

    # a stored file resets the form (FORM_RESET); a refused one keeps its settings, to be corrected
    @guarded(d_status, n_outputs=5,
             on_error=lambda: (None, table([], PREVIEW_COLUMNS), gr.skip(), gr.skip(), gr.skip()))
    def on_dataset(file, fmt_name, metric, name, budget, delta, request: gr.Request):
        return (*upload_dataset(svc, file, fmt_name, metric, name, budget, delta, request),
                USER_FORMAT, "exact_match", "")

    def clear_files():
        return None


    def uploads(request: gr.Request):
        return my_uploads(svc, request)

    @guarded(a_status, n_outputs=4, on_error=cleared)
    def on_show(aid, request: gr.Request):
        return adapter_details(svc, aid, request)

    demo.load(when_open("upload", load, 3), outputs=[a_pair, ds_table, ad_table], api_name=False)
    show_btn.click(on_show, show_id, [a_status, a_summary, a_plot, a_modules], api_name="adapter_details")
    tab.select(load, outputs=[a_pair, ds_table, ad_table], api_name=False)
    refresh.click(uploads, outputs=[ds_table, ad_table], api_name=False)
    a_btn.click(on_adapter, [a_files, a_pair, a_name], [a_status, a_summary, a_plot, a_modules],
                api_name="upload_adapter").then(clear_files, outputs=a_files, api_name=False) \
        .then(uploads, outputs=[ds_table, ad_table], api_name=False)
    d_btn.click(on_dataset, [d_file, d_fmt, d_metric, d_name, d_budget, d_delta],
                [d_status, d_preview, d_fmt, d_metric, d_name],
                api_name="upload_dataset").then(clear_files, outputs=d_file, api_name=False) \
        .then(uploads, outputs=[ds_table, ad_table], api_name=False)
    a_files.upload(clear_message, outputs=a_status, api_name=False)
    d_file.upload(clear_message, outputs=d_status, api_name=False)
    return tab
