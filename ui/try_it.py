"""The Try it tab: one prompt through the base LLM, the LLM with one of your generated adapters
and your fine-tuned TinyLM, side by side; optionally each one's NLL of an answer you give. It
runs as a short ``try`` job on a worker (never in the request) and waits a little for it."""

from __future__ import annotations

from typing import Any

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui.common import choices, first, guarded, status, table, when_open
from ui.service import Service

COLUMNS = (("model", "model"), ("output", "greedy output"), ("answer_nll_per_token", "answer NLL / token"))
POLL_S = 1.0


def run_try(svc: Service, request, pair_id: Any, prompt: str, llm_adapter: Any, tiny_adapter: Any,
            answer: str, max_new: Any) -> tuple[str, Any]:
    """Submit the ``try`` job; returns (status line, job id) — the table fills when it is done."""
    who = svc.who(request)
    if pair_id in (None, ""):
        raise ValueError("choose a model pair")
    params = {"pair_id": int(pair_id), "prompt": prompt or "", "answer": (answer or None),
              "llm_adapter_id": int(llm_adapter) if llm_adapter not in (None, "") else None,
              "tiny_adapter_id": int(tiny_adapter) if tiny_adapter not in (None, "") else None,
              "max_new_tokens": svc_num(max_new, 32)}
    job_id = svc.submit(who, "try", params)
    return status(True, f"try job {job_id} queued; the outputs appear here when it is done"), job_id


def try_result(svc: Service, request, job_id: Any) -> tuple[str, dict]:
    """(status line, outputs table) of one of your try jobs."""
    if job_id in (None, "", 0):
        return gr.skip(), gr.skip()
    view = svc.client.get(int(job_id), svc.who(request))
    if view.kind != "try":
        raise ValueError(f"job {view.id} is not a try job")
    if view.status == "succeeded":
        return status(True, f"try job {view.id} done"), table(view.outputs.get("rows") or [], COLUMNS)
    if view.status in ("failed", "cancelled"):
        return status(False, f"try job {view.id} {view.status}: {view.error or ''}"), table([], COLUMNS)
    return status(True, f"try job {view.id} is {view.status} ({view.stage})"), gr.skip()


def svc_num(v: Any, default: int) -> int:
    try:
        return int(v) if v not in (None, "") else default
    except (TypeError, ValueError):
        raise ValueError("max new tokens must be a whole number") from None


def build_try_tab(svc: Service, demo):
    with gr.Tab("Try it", id="try") as tab:
        gr.Markdown("Type a prompt and compare, side by side, the **base LLM**, the **LLM with one of your generated "
                    "adapters** and **your fine-tuned TinyLM** (greedy). Give an answer to also see each model's "
                    "NLL of it per token (lower: the model finds it likelier). It runs as a short job.")
        with gr.Row():
            with gr.Column():
                pair = gr.Dropdown(label="Model pair", choices=[], elem_id="try-pair")
                prompt = gr.Textbox(label="Prompt", lines=4, max_length=4000, elem_id="try-prompt")
                answer = gr.Textbox(label="Answer to score (optional)", lines=2, max_length=4000,
                                    elem_id="try-answer")
                with gr.Row():
                    llm = gr.Dropdown(label="Your LLM adapter", choices=[], elem_id="try-llm")
                    tiny = gr.Dropdown(label="Your TinyLM adapter", choices=[], elem_id="try-tiny")
                    max_new = gr.Number(label="Max new tokens", value=32, precision=0, elem_id="try-max-new")
                run = gr.Button("Run", variant="primary", elem_id="try-run")
                msg = gr.Markdown(elem_id="try-status")
                job = gr.Number(label="Try job", value=None, precision=0, interactive=False, elem_id="try-job")
            with gr.Column():
                out = gr.Dataframe(table([], COLUMNS), interactive=False, wrap=True, elem_id="try-out")
        timer = gr.Timer(POLL_S)

    def load(cur, request: gr.Request):
        who = svc.who(request)
        pc = choices(svc.list_pairs(), lambda p: f"{p['name']} (id {p['id']})")
        p = first(pc, cur)
        opts = {m: [("(none)", "")] + choices(svc.list_adapters(who, model=m, pair_id=p, own_only=True),
                                              lambda a: f"{a['name']} (id {a['id']})") if p is not None else []
                for m in ("llm", "tiny")}
        return (gr.Dropdown(choices=pc, value=p), gr.Dropdown(choices=opts["llm"], value=""),
                gr.Dropdown(choices=opts["tiny"], value=""))

    @guarded(msg, n_outputs=2)
    def on_run(p, pr, la, ta, an, mn, request: gr.Request):
        return run_try(svc, request, p, pr, la, ta, an, mn)

    @guarded(msg, n_outputs=2)
    def on_poll(jid, request: gr.Request):
        return try_result(svc, request, jid)

    outs = [pair, llm, tiny]
    demo.load(when_open("try", load, len(outs)), pair, outs, api_name=False)
    tab.select(load, pair, outs, api_name=False)
    pair.input(load, pair, outs, api_name=False)
    run.click(on_run, [pair, prompt, llm, tiny, answer, max_new], [msg, job], api_name="try_it")
    timer.tick(on_poll, job, [msg, out], api_name=False, show_progress="hidden")
    return tab
