"""Generate tab: TinyLM adapter(s) (with weights) + a mapper version -> an LLM adapter (a
``generate`` job, optionally followed by an evaluation); download adapters."""

from __future__ import annotations

import html
from typing import Any, Optional, Sequence

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui.common import (
    choices, clear_message, cli_command, first, guarded, md_escape, status, table, when_open,
    wire_saved_settings,
)
from ui.service import Service, _num
from ui.upload import pair_choices
from workers.jobs import (  # constants only (no torch)
    COMBINE_METHODS,
    ORGANISATIONS,
    WEIGHTINGS,
)

PROMOTED = "promoted version (default)"
NO_PROMOTED = "no promoted mapper yet (an admin promotes one; generating is refused until then)"
CONTRIB_COLUMNS = [("id", "adapter"), ("name", "name"), ("org", "organisation"), ("origin", "origin"),
                   ("epsilon", "ε spent (DP)"), ("weight", "weight")]


def adapter_label(a: dict) -> str:
    eps = f", DP ε={a['epsilon']:.3g}" if a.get("epsilon") is not None else ", no DP"
    return f"{a['name']} (id {a['id']}, {a['origin']}{eps})"


def mapper_choices(svc: Service, pair_id: Any) -> list[tuple[str, Any]]:
    if pair_id in (None, ""):
        return [(PROMOTED, PROMOTED)]
    mappers = svc.list_mappers(int(pair_id))
    label = PROMOTED if any(m["promoted"] for m in mappers) else NO_PROMOTED
    out = [(label, PROMOTED)]
    for m in mappers:
        star = " ★ promoted" if m["promoted"] else ""
        out.append((f"v{m['version']} {m['kind']} (id {m['id']}){star} {m['metrics_text']}".strip(), m["id"]))
    return out


def parse_weights(text: Optional[str], n: int) -> Optional[list[float]]:
    text = (text or "").strip()
    if not text:
        return None
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    vals = [_num(p.strip()) for p in parts]
    if any(v is None or v < 0 for v in vals):
        raise ValueError("weights must be non-negative numbers separated by commas")
    if len(vals) != n:
        raise ValueError(f"{len(vals)} weights for {n} selected adapters: give one weight per adapter, in order")
    if sum(vals) <= 0:
        raise ValueError("at least one weight must be positive")
    return [float(v) for v in vals]


def contributions(svc: Service, who, adapter_ids: Sequence[Any], weights_text: str) -> dict:
    ads = [svc.get_adapter(who, a) for a in adapter_ids or []]
    try:
        w = parse_weights(weights_text, len(ads))
    except ValueError:
        w = None
    total = sum(w) if w else None
    rows = [{**a, "weight": (f"{w[i] / total:.2f}" if w else "by the weighting")} for i, a in enumerate(ads)]
    return table(rows, CONTRIB_COLUMNS)


def generate_params(pair_id: Any, adapter_ids: Sequence[Any], weights_text: str, mapper: Any,
                    evaluate: bool, eval_task: Optional[str], eval_dataset: Any, organisation: str = ORGANISATIONS[0],
                    method: str = COMBINE_METHODS[0], weighting: str = WEIGHTINGS[0], merged: bool = False,
                    name: str = "", n_test: Any = None, refine: Any = "never", refine_prompts: Any = None) -> dict:
    """The ``generate`` job's parameters from the form (checked again by the job API).
    ``refine_prompts``: one of the organisation's public datasets whose prompts the refinement
    writes its samples after (the job refuses a private one)."""
    if pair_id in (None, ""):
        raise ValueError("choose a model pair")
    ids = [int(a) for a in adapter_ids or []]
    if not ids:
        raise ValueError("choose at least one of your TinyLM adapters")
    params: dict = {"pair_id": int(pair_id), "adapter_ids": ids,
                    "mapper_id": None if mapper in (None, "", PROMOTED) else int(mapper),
                    "weights": parse_weights(weights_text, len(ids)), "organisation": organisation or ORGANISATIONS[0],
                    "method": method or COMBINE_METHODS[0], "weighting": weighting or WEIGHTINGS[0],
                    "merged": bool(merged), "name": (name or "").strip()[:200] or None}
    if refine not in (None, "", False, "never"):
        params["refine"] = "always" if refine is True else refine
    if refine_prompts not in (None, ""):
        params["refine_prompts_dataset_id"] = int(refine_prompts)
    if evaluate:
        if eval_dataset not in (None, ""):
            params["dataset_id"] = int(eval_dataset)
        elif eval_task:
            params["evaluate_task"] = eval_task
            n = _num(n_test)
            if n is not None:
                if n != int(n) or not 1 <= n <= 100_000:
                    raise ValueError("the number of test examples must be a whole number in 1..100000")
                params["n_test"] = int(n)
        else:
            raise ValueError("choose a task or one of your datasets to evaluate on (or untick evaluation)")
    return params


def start_generate(svc: Service, request, *values) -> str:
    who = svc.who(request)
    params = generate_params(*values)
    job_id = svc.submit(who, "generate", params)
    return status(True, f"generate job {job_id} queued for {len(params['adapter_ids'])} adapter(s); follow it in "
                        "the Jobs tab, then download the LLM adapter below")


def downloads_html(adapters: Sequence[dict]) -> str:
    if not adapters:
        return "<p class='gt-empty'>No adapters yet.</p>"
    items = []
    for a in adapters:
        eps = f" · DP ε={a['epsilon']:.3g}" if a.get("epsilon") is not None else ""
        notes = f", {a['notes']}" if a.get("notes") else ""
        items.append(f"<li><a class='gt-download' data-adapter-id='{a['id']}' href='download/adapter/{a['id']}' "
                     f"download>{html.escape(a['model'].upper())} adapter {a['id']}: {html.escape(a['name'])}</a> "
                     f"<span class='gt-muted'>({html.escape(a['origin'])}, {html.escape(a['org'])}{eps}"
                     f"{html.escape(notes)}, {html.escape(a['created'])})</span></li>")
    return "<ul class='gt-downloads'>" + "".join(items) + "</ul>"


def results_markdown(results: list[dict]) -> str:
    """Each recent generated adapter: its warnings (out of distribution: expect a poor LLM
    update), its gains over the base LLM and the provider's mean baseline, with intervals, and
    whether it was refined and why."""
    from ui.jobs import result_lines

    if not results:
        return "No generated adapter yet. Evaluate one (the checkbox above) to see its gain over the base LLM."
    blocks = []
    for r in results:
        head = f"**{md_escape(r['name'])}** (adapter {r['id']})"
        body = result_lines({**r, "warnings": r["warnings"]}) or ["\n(not evaluated)"]
        rf = r.get("refine")
        if isinstance(rf, dict):  # whether the mapped adapter was refined, and why (gtapp.refine.refine_wanted)
            done = "refined" if rf.get("refined", True) else "not refined"
            own = ((rf.get("text") or {}).get("prompts_dataset") or {}) if rf.get("refined", True) else {}
            body.append(f"\nRefinement ({md_escape(str(rf.get('mode', 'always')))}): {done}"
                        + (f" — {md_escape(str(rf['reason']))}" if rf.get("reason") else "")
                        + (f"; samples written after the prompts of your dataset {md_escape(str(own.get('name')))} "
                           f"(id {own.get('id')}), read as public" if own else "")
                        + (f"; teacher: {md_escape(str(rf['teacher']))}" if rf.get("refined", True)
                           and rf.get("teacher") else ""))
        # result_lines marks a paragraph with a leading newline (a warning, the result); the rest are list items
        blocks.append(head + "".join(("\n\n" if line.startswith("\n") else "\n") + line.lstrip("\n")
                                     for line in body))
    return "\n\n".join(blocks)


def latest_results(svc: Service, who) -> tuple:
    """(the words, the chart) of the organisation's latest generated adapters' results."""
    from ui.charts import gains_figure

    results = svc.generated_results(who)
    return results_markdown(results), gains_figure(results)


PROVIDER_PROMPTS = "(the provider's prompts)"


def public_dataset_choices(svc: Service, who) -> list[tuple[str, int]]:
    """The organisation's datasets that may serve as public prompts: those without a DP budget
    (the job also refuses the one the chosen adapter was trained on)."""
    return choices([d for d in svc.list_datasets(who, own_only=True) if d["budget"] is None],
                   lambda d: f"{d['name']} (id {d['id']}, {d['examples']} prompts)")


# what "Save these settings" keeps (in this order: the form's fields)
FORM_KEYS = ("organisation", "method", "weighting", "merged", "refine_mode", "evaluate", "n_test")
REFINE_CHOICES = [("no", "never"),
                  ("when the update is unlike every shadow update (task score above the calibrated threshold)", "auto"),
                  ("always", "always")]


def build_generate_tab(svc: Service, demo):
    from ui.finetune import dataset_choices

    with gr.Tab("Generate", id="generate") as tab:
        gr.Markdown("Turn TinyLM adapters into an **LLM adapter** with a mapper version of the model pair (the "
                    "Gradient Transformer or a baseline mapper). Several adapters are combined with the weights you "
                    "give (a collaboration); each one's privacy spend carries over to the result by "
                    "post-processing.")
        with gr.Row():
            with gr.Column():
                pair = gr.Dropdown(label="Model pair", choices=[], elem_id="gen-pair")
                adapters = gr.CheckboxGroup(label="Your TinyLM adapters", choices=[], elem_id="gen-adapters")
                weights = gr.Textbox(label="Weights, one per selected adapter in order (empty: by the default weighting)",
                                     placeholder="e.g. 1, 1, 2", elem_id="gen-weights")
                mapper = gr.Dropdown(label="Mapper version", choices=[(PROMOTED, PROMOTED)], value=PROMOTED,
                                     elem_id="gen-mapper")
                with gr.Accordion("Combining several adapters", open=False):
                    with gr.Row():
                        organisation = gr.Dropdown(label="Organisation", choices=list(ORGANISATIONS),
                                                   value=ORGANISATIONS[0], elem_id="gen-organisation")
                        method = gr.Dropdown(label="Combine", choices=list(COMBINE_METHODS), value=COMBINE_METHODS[0],
                                             elem_id="gen-method")
                        weighting = gr.Dropdown(label="Default weighting", choices=list(WEIGHTINGS),
                                                value=WEIGHTINGS[0], elem_id="gen-weighting")
                with gr.Row():
                    name = gr.Textbox(label="LLM adapter name (optional)", max_length=200, elem_id="gen-name")
                    merged = gr.Checkbox(label="Also store the merged LLM", value=False, elem_id="gen-merged")
                refine = gr.Radio(label="Refine towards the proxy-tuned distribution (one adapter; slower; the "
                                        "provider's text only, never your data; DP carries over). always: proxy-"
                                        "tuning over the mapped adapter; auto: only an update unlike the shadow "
                                        "updates, towards the base LLM's proxy-tuning",
                                  choices=REFINE_CHOICES, value="never", elem_id="gen-refine")
                refine_prompts = gr.Dropdown(
                    label="Refinement prompts (optional): one of your datasets of public prompts, read as public "
                          "(no DP budget, not what the adapter was trained on; answers not read)",
                    choices=[], elem_id="gen-refine-prompts")
                evaluate = gr.Checkbox(label="Evaluate the LLM adapter afterwards", value=True, elem_id="gen-eval")
                with gr.Row():
                    task = gr.Dropdown(label="on a generated task", choices=[], elem_id="gen-task")
                    eval_ds = gr.Dropdown(label="or on one of your datasets", choices=[], elem_id="gen-eval-ds")
                    n_test = gr.Number(label="test examples (generated task)", value=128, precision=0,
                                       elem_id="gen-n-test")
                with gr.Row():
                    save_btn = gr.Button("Save these settings", size="sm", elem_id="gen-save")
                    restore_btn = gr.Button("Load saved settings", size="sm", elem_id="gen-restore")
                saved = gr.BrowserState(None, storage_key="gtapp-generate-settings")
                start = gr.Button("Generate LLM adapter", variant="primary", elem_id="gen-start")
                msg = gr.Markdown(elem_id="gen-status")
                with gr.Accordion("The same from the command line", open=False):
                    cmd_btn = gr.Button("Show the equivalent gtapp command", size="sm", elem_id="gen-cli")
                    cmd = gr.Code(language="shell", interactive=False, elem_id="gen-cli-command")
            with gr.Column():
                gr.Markdown("### Contributions")
                contrib = gr.Dataframe(table([], CONTRIB_COLUMNS), interactive=False, elem_id="gen-contrib")
                gr.Markdown("### Your latest results")
                results = gr.Markdown(elem_id="gen-results")
                gains = gr.Plot(show_label=False, elem_id="gen-gains")
                gr.Markdown("### Downloads\nStandard peft folders (zip), loadable by `PeftModel.from_pretrained`.")
                refresh = gr.Button("Refresh", size="sm", elem_id="gen-refresh")
                dl = gr.HTML(elem_id="gen-downloads")

    def pair_changed(p, request: gr.Request):
        who = svc.who(request)
        ads = svc.list_adapters(who, model="tiny", pair_id=p, own_only=True) if p not in (None, "") else []
        return (gr.CheckboxGroup(choices=choices(ads, adapter_label), value=[]),
                gr.Dropdown(choices=mapper_choices(svc, p), value=PROMOTED))

    def load(current_pair, request: gr.Request):
        from gtapp.tasks import task_names  # pure Python, no torch

        who = svc.who(request)
        pc = pair_choices(svc)
        p = first(pc, current_pair)
        ads, maps = pair_changed(p, request)
        dc = dataset_choices(svc, who)
        tasks = task_names()
        public = public_dataset_choices(svc, who)
        return (gr.Dropdown(choices=pc, value=p), ads, maps,
                gr.Dropdown(choices=tasks, value=tasks[0] if tasks else None),
                gr.Dropdown(choices=[("(none)", "")] + dc, value=""),
                gr.Dropdown(choices=[(PROVIDER_PROMPTS, "")] + public, value=""),
                downloads_html(svc.list_adapters(who)), *latest_results(svc, who))

    @guarded(msg)
    def on_start(p, a, w, m, ev, t, eds, org, meth, wt, mg, nm, nt, rf, rp, request: gr.Request):
        return start_generate(svc, request, p, a, w, m, ev, t, eds, org, meth, wt, mg, nm, nt, rf, rp)

    @guarded(cmd)
    def on_cli(p, a, w, m, ev, t, eds, org, meth, wt, mg, nm, nt, rf, rp):
        return cli_command("generate", generate_params(p, a, w, m, ev, t, eds, org, meth, wt, mg, nm, nt, rf, rp))

    wire_saved_settings(save_btn, restore_btn, saved, FORM_KEYS,
                        [organisation, method, weighting, merged, refine, evaluate, n_test], msg)

    def on_contrib(a, w, request: gr.Request):
        return contributions(svc, svc.who(request), a, w)

    def on_refresh(request: gr.Request):
        who = svc.who(request)
        return downloads_html(svc.list_adapters(who)), *latest_results(svc, who)

    outs = [pair, adapters, mapper, task, eval_ds, refine_prompts, dl, results, gains]
    demo.load(when_open("generate", load, len(outs)), pair, outs, api_name=False)
    tab.select(load, pair, outs, api_name=False)
    tab.select(clear_message, outputs=msg, api_name=False)
    pair.input(pair_changed, pair, [adapters, mapper], api_name=False)
    adapters.change(on_contrib, [adapters, weights], contrib, api_name=False)
    weights.change(on_contrib, [adapters, weights], contrib, api_name=False)
    start.click(on_start, [pair, adapters, weights, mapper, evaluate, task, eval_ds, organisation, method, weighting,
                           merged, name, n_test, refine, refine_prompts], msg, api_name="start_generate")
    refresh.click(on_refresh, outputs=[dl, results, gains], api_name=False)
    cmd_btn.click(on_cli, [pair, adapters, weights, mapper, evaluate, task, eval_ds, organisation, method, weighting,
                           merged, name, n_test, refine, refine_prompts], cmd, api_name=False)
    return tab
