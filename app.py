"""Start the gtapp dashboard: `python app.py` (embedded default: SQLite + in-process worker).

This is the placeholder page until the dashboard lands: it shows the task universe and the
model-zoo presets. It never trains in a request; heavy work goes through jobs.
"""

from __future__ import annotations

import argparse

import gradio as gr


def build_app() -> gr.Blocks:
    from gtapp.tasks import FAMILIES, task_names

    with gr.Blocks(title="gtapp") as demo:
        gr.Markdown("# gtapp — TinyLM update → Gradient Transformer → LLM adapter\n"
                    "Fine-tune a tiny LM on private data; get an LLM adapter back. "
                    "The full dashboard (upload, fine-tune, generate, jobs, compare, admin) is being built; "
                    "this page lists what the core library offers today.")
        with gr.Tab("Tasks"):
            rows = [[name, FAMILIES[name.split("/")[0]].metric.replace("_", " "),
                     FAMILIES[name.split("/")[0]].mirrors] for name in task_names()]
            gr.Dataframe(value=rows, headers=["task", "metric", "mirrors"], interactive=False)
        with gr.Tab("Model zoo"):
            gr.Markdown("Build a TinyLM/LLM pair with `gtapp zoo build --preset ci|demo|gpu --out DIR`.")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="gtapp dashboard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    build_app().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
