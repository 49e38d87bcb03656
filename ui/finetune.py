"""Fine-tune tab: LoRA fine-tune of the TinyLM on one of your datasets (a ``finetune`` job),
optionally with DP-SGD at a chosen ε/δ; shows the dataset's privacy ledger. The job API
refuses a DP job that would exceed the dataset's budget, and the refusal is shown as is."""

from __future__ import annotations

from typing import Any

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui.common import (
    choices, clear_message, cli_command, first, fmt, guarded, md_escape, status,
    table, when_open, wire_saved_settings,
)
from ui.service import Service, _num
from ui.upload import pair_choices

LEDGER_COLUMNS = [("job_id", "job"), ("epsilon", "ε"), ("delta", "δ"), ("status", "status"),
                  ("total_epsilon", "dataset ε after"), ("accountant", "accountant"), ("note", "note"),
                  ("created_at", "when")]


def dataset_choices(svc: Service, who) -> list[tuple[str, int]]:
    return choices(svc.list_datasets(who, own_only=True),
                   lambda d: f"{d['name']} (id {d['id']}, {d['examples']} examples"
                             + (f", ε budget {d['budget']:g})" if d["budget"] else ", no DP budget)"))


def _eps(x) -> str:
    return "∞" if x in ("∞", float("inf")) else f"{x:.4g}"


def ledger_markdown(led: dict) -> str:
    if led["budget"] is None:
        head = (f"Dataset **{md_escape(led['dataset'])}** has **no privacy budget**: DP fine-tunes on it are "
                "refused until one is set (below). Non-DP fine-tunes do not touch the ledger.")
    else:
        head = (f"Dataset **{md_escape(led['dataset'])}**: budget **ε={led['budget']:g}** at δ={led['delta']:g} · "
                f"spent **ε={_eps(led['spent'])}** ({led['accountant']} composition) · "
                f"remaining **ε={_eps(led['remaining'])}**")
        head += (" · marked **no DP required**: non-DP fine-tunes are accepted and enter the ledger as ε = ∞"
                 if led.get("no_dp_required") else
                 " · a fine-tune **without DP is refused** on this dataset (it would void the budget)")
    return head


def show_ledger(svc: Service, dataset_id: Any, request) -> tuple[str, dict]:
    who = svc.who(request)
    if dataset_id in (None, ""):
        return "Upload a dataset first (Upload tab).", table([], LEDGER_COLUMNS)
    led = svc.ledger(who, int(dataset_id))
    return ledger_markdown(led), table(led["entries"], LEDGER_COLUMNS)


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    f = _num(v)
    if f is None or f != int(f) or not lo <= f <= hi:
        raise ValueError(f"{what} must be a whole number in {lo}..{hi}")
    return int(f)


def finetune_params(dataset_id: Any, pair_id: Any, steps: Any, lr: Any, batch_size: Any, max_length: Any,
                    dp: bool, epsilon: Any, delta: Any, max_grad_norm: Any, name: str) -> dict:
    if dataset_id in (None, ""):
        raise ValueError("choose one of your datasets (upload one in the Upload tab)")
    if pair_id in (None, ""):
        raise ValueError("choose a model pair")
    lr_f = _num(lr)
    if lr_f is None or lr_f <= 0:
        raise ValueError("the learning rate must be a positive number")
    params = {"dataset_id": int(dataset_id), "pair_id": int(pair_id), "model": "tiny",
              "steps": _int(steps, "steps", 1, 1_000_000), "lr": lr_f,
              "batch_size": _int(batch_size, "batch size", 1, 4096),
              "max_length": _int(max_length, "max length", 8, 4096),
              "name": (name or "").strip()[:200] or None, "dp": None}
    if dp:
        eps = _num(epsilon)
        if eps is None or eps <= 0:
            raise ValueError("DP needs a target ε > 0")
        d = {"target_epsilon": eps}
        if delta not in (None, "", 0, 0.0):
            dl = _num(delta)
            if dl is None or not 0 < dl < 1:
                raise ValueError("δ must be in (0, 1)")
            d["delta"] = dl
        clip = _num(max_grad_norm)
        if clip is not None:
            if clip <= 0:
                raise ValueError("the clipping norm must be positive")
            d["max_grad_norm"] = clip
        params["dp"] = d
    return params


def start_finetune(svc: Service, request, *values) -> str:
    who = svc.who(request)
    params = finetune_params(*values)
    job_id = svc.submit(who, "finetune", params)
    dp = params["dp"]
    what = (f"with DP-SGD at ε={dp['target_epsilon']:g} (reserved on the dataset's ledger)" if dp
            else "without DP")
    return status(True, f"fine-tune job {job_id} queued ({params['steps']} steps, {what}); follow it in the Jobs tab")


# what "Save these settings" keeps (in this order: the form's fields)
FORM_KEYS = ("steps", "lr", "batch_size", "max_length", "dp", "epsilon", "delta", "clip_norm")


def build_finetune_tab(svc: Service, demo):
    with gr.Tab("Fine-tune", id="finetune") as tab:
        gr.Markdown("Fine-tune the **TinyLM** of a model pair on one of your datasets with LoRA (the pair's recipe: "
                    "its seeded init, targets, rank, alpha). The result is a TinyLM adapter of your organisation. "
                    "With DP-SGD, the ε you choose is charged to the dataset's privacy ledger; a job that would go "
                    "over the dataset's budget is refused before it starts.")
        with gr.Row():
            with gr.Column():
                dataset = gr.Dropdown(label="Dataset", choices=[], elem_id="ft-dataset")
                pair = gr.Dropdown(label="Model pair", choices=[], elem_id="ft-pair")
                with gr.Row():
                    steps = gr.Number(label="Steps", value=100, precision=0, elem_id="ft-steps")
                    lr = gr.Number(label="Learning rate", value=1e-3, elem_id="ft-lr")
                with gr.Row():
                    batch = gr.Number(label="Batch size", value=8, precision=0, elem_id="ft-batch")
                    maxlen = gr.Number(label="Max length (tokens)", value=128, precision=0, elem_id="ft-maxlen")
                name = gr.Textbox(label="Adapter name (optional)", max_length=200, elem_id="ft-name")
                dp = gr.Checkbox(label="Differential privacy (DP-SGD)", value=False, elem_id="ft-dp")
                with gr.Row():
                    eps = gr.Number(label="Target ε", value=1.0, elem_id="ft-epsilon")
                    delta = gr.Number(label="δ (0: the dataset's)", value=None, elem_id="ft-delta")
                    clip = gr.Number(label="Clipping norm", value=1.0, elem_id="ft-clip")
                with gr.Row():
                    save_btn = gr.Button("Save these settings", size="sm", elem_id="ft-save")
                    restore_btn = gr.Button("Load saved settings", size="sm", elem_id="ft-restore")
                saved = gr.BrowserState(None, storage_key="gtapp-finetune-settings")
                start = gr.Button("Start fine-tune", variant="primary", elem_id="ft-start")
                msg = gr.Markdown(elem_id="ft-status")
                with gr.Accordion("The same from the command line", open=False):
                    cmd_btn = gr.Button("Show the equivalent gtapp command", size="sm", elem_id="ft-cli")
                    cmd = gr.Code(language="shell", interactive=False, elem_id="ft-cli-command")
            with gr.Column():
                gr.Markdown("### Privacy ledger")
                ledger_md = gr.Markdown(elem_id="ft-ledger")
                ledger_tbl = gr.Dataframe(table([], LEDGER_COLUMNS), label="Entries", interactive=False, elem_id="ft-ledger-entries")
                with gr.Row():
                    budget = gr.Number(label="Set / raise the dataset's budget ε", value=None, elem_id="ft-budget")
                    set_btn = gr.Button("Set budget", size="sm", elem_id="ft-set-budget")
                budget_msg = gr.Markdown()
                with gr.Row():
                    no_dp_ok = gr.Checkbox(label="I confirm: this dataset needs no privacy guarantee (non-DP "
                                                 "fine-tunes give ε = ∞; recorded with my name)", value=False,
                                           elem_id="ft-no-dp-confirm")
                    no_dp_btn = gr.Button("Mark 'no DP required'", size="sm", elem_id="ft-no-dp")

    def load(current_ds, current_pair, request: gr.Request):
        who = svc.who(request)
        dc, pc = dataset_choices(svc, who), pair_choices(svc)
        ds = first(dc, current_ds)
        md, tbl = show_ledger(svc, ds, request)
        return gr.Dropdown(choices=dc, value=ds), gr.Dropdown(choices=pc, value=first(pc, current_pair)), md, tbl

    @guarded(ledger_md, n_outputs=2)
    def on_dataset(ds, request: gr.Request):
        return show_ledger(svc, ds, request)

    @guarded(msg)
    def on_start(ds, pr, st, lr_, bs, ml, use_dp, ep, dl, cl, nm, request: gr.Request):
        return start_finetune(svc, request, ds, pr, st, lr_, bs, ml, use_dp, ep, dl, cl, nm)

    @guarded(budget_msg)
    def on_budget(ds, value, request: gr.Request):
        if ds in (None, ""):
            raise ValueError("choose a dataset")
        return status(True, svc.set_budget(svc.who(request), int(ds), value))

    @guarded(budget_msg)
    def on_no_dp(ds, confirm, request: gr.Request):
        if ds in (None, ""):
            raise ValueError("choose a dataset")
        return status(True, svc.mark_no_dp_required(svc.who(request), int(ds), bool(confirm)))

    @guarded(cmd)
    def on_cli(ds, pr, st, lr_, bs, ml, use_dp, ep, dl, cl, nm):
        return cli_command("finetune", finetune_params(ds, pr, st, lr_, bs, ml, use_dp, ep, dl, cl, nm))

    cmd_btn.click(on_cli, [dataset, pair, steps, lr, batch, maxlen, dp, eps, delta, clip, name], cmd, api_name=False)

    wire_saved_settings(save_btn, restore_btn, saved, FORM_KEYS, [steps, lr, batch, maxlen, dp, eps, delta, clip], msg)

    outs = [dataset, pair, ledger_md, ledger_tbl]
    demo.load(when_open("finetune", load, len(outs)), [dataset, pair], outs, api_name=False)
    tab.select(load, [dataset, pair], outs, api_name=False)
    tab.select(clear_message, outputs=[msg], api_name=False)
    dataset.change(on_dataset, dataset, [ledger_md, ledger_tbl], api_name=False)
    start.click(on_start, [dataset, pair, steps, lr, batch, maxlen, dp, eps, delta, clip, name], msg,
                api_name="start_finetune").then(on_dataset, dataset, [ledger_md, ledger_tbl], api_name=False)
    set_btn.click(on_budget, [dataset, budget], budget_msg, api_name=False) \
        .then(on_dataset, dataset, [ledger_md, ledger_tbl], api_name=False)
    no_dp_btn.click(on_no_dp, [dataset, no_dp_ok], budget_msg, api_name=False) \
        .then(on_dataset, dataset, [ledger_md, ledger_tbl], api_name=False)
    return tab


__all__ = ["build_finetune_tab", "finetune_params", "start_finetune", "show_ledger", "fmt"]
