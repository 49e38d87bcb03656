"""The gtapp dashboard (Gradio Blocks mounted on a FastAPI app).

One builder per tab (``ui.auth``, ``ui.upload``, ``ui.finetune``, ``ui.generate``,
``ui.jobs``, ``ui.compare``, ``ui.admin``), assembled by ``ui.app``; Plotly figures in
``ui.charts``; every read and write of an organisation's data goes through the
tenancy-checked ``ui.service.Service``.

Nothing here imports torch: heavy work runs as jobs (``workers.client``), and an uploaded
adapter is validated in a child process (``ui.validate_child``).
"""
