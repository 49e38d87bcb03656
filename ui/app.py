"""Assemble the dashboard: the Gradio Blocks (one builder per tab) mounted on a FastAPI app
with the sign-in and download routes.

    app = create_app(settings)          # FastAPI app; uvicorn.run(app, ...)

The Blocks are built once and shared by every user, so they hold no one's data: every
component is filled by per-user events (page load, tab select, timers), each of which
resolves the user from the session server-side.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from storage.settings import Settings, get_settings
from ui.common import TABS
from ui.service import Service

log = logging.getLogger("gtapp.dashboard")

CSS = """
.gt-header { display: flex; justify-content: space-between; align-items: baseline; }
.gt-jobs { width: 100%; border-collapse: collapse; font-size: 0.9rem; }
.gt-jobs th, .gt-jobs td { border-bottom: 1px solid #e5e7eb; padding: 6px 8px; text-align: left;
  vertical-align: middle; }
.gt-jobs th { background: #f9fafb; font-weight: 600; }
.gt-bar { display: inline-block; width: 140px; height: 10px; background: #e5e7eb; border-radius: 5px;
  overflow: hidden; vertical-align: middle; margin-right: 6px; }
.gt-fill { height: 100%; background: #3b82f6; transition: width .4s; }
.gt-fill.gt-succeeded { background: #16a34a; } .gt-fill.gt-failed { background: #dc2626; }
.gt-fill.gt-cancelled { background: #9ca3af; } .gt-fill.gt-queued { background: #cbd5e1; }
.gt-status { padding: 1px 7px; border-radius: 9px; font-size: 0.8rem; background: #e5e7eb; }
.gt-status.gt-running { background: #dbeafe; color: #1e40af; }
.gt-status.gt-succeeded { background: #dcfce7; color: #166534; }
.gt-status.gt-failed { background: #fee2e2; color: #991b1b; }
.gt-status.gt-cancelled { background: #f3f4f6; color: #4b5563; }
.gt-pct { font-size: 0.8rem; color: #4b5563; }
.gt-empty, .gt-muted { color: #6b7280; }
.gt-downloads li { margin: 4px 0; }
"""


# Run once when the page starts: mirror the open tab and the job shown into the URL
# (history.replaceState: no navigation, nothing sent anywhere). Restoring them is the server's
# job (`url_tab`, and the Jobs tab's load), from the query the page sends with every event.
URL_STATE_JS = """() => {
  const ids = %s;
  const remember = (key, value) => {
    const u = new URL(window.location.href);
    if (value) { u.searchParams.set(key, value); } else { u.searchParams.delete(key); }
    window.history.replaceState(window.history.state, "", u);
  };
  document.addEventListener("click", (e) => {
    const t = e.target.closest && e.target.closest("#tabs button[role=tab]");
    if (t && ids[t.innerText.trim()]) { remember("tab", ids[t.innerText.trim()]); }
    if (e.target.closest && e.target.closest("#job-show")) {
      const box = document.querySelector("#job-id input");
      const n = box ? parseInt(box.value, 10) : NaN;
      remember("job", n > 0 ? String(n) : "");
    }
  }, true);
}""" % json.dumps({label: tab_id for tab_id, label in TABS.items()})


def url_tab(query, is_admin: bool) -> Optional[str]:
    """The tab a page's URL asks for, if it names one this user may open."""
    tab = (query or {}).get("tab")
    if tab not in TABS or (tab == "admin" and not is_admin):
        return None
    return tab


def build_blocks(svc: Service):
    from ui.admin import build_admin_tab
    from ui.auth import build_account_tab
    from ui.collaborations import build_collaborations_tab
    from ui.try_it import build_try_tab
    from ui.common import md_escape
    from ui.compare import build_compare_tab
    from ui.finetune import build_finetune_tab
    from ui.generate import build_generate_tab
    from ui.jobs import build_jobs_tab
    from ui.upload import build_upload_tab

    # delete_cache: Gradio's temporary copies of uploads are deleted once processed; this also
    # sweeps any that were never submitted (older than an hour, checked hourly)
    with gr.Blocks(title="gtapp dashboard", delete_cache=(3600, 3600)) as demo:
        with gr.Row(elem_classes="gt-header"):
            gr.Markdown("## gtapp — TinyLM update → Gradient Transformer → LLM adapter")
            who = gr.Markdown(elem_id="whoami")
        with gr.Tabs(elem_id="tabs") as tabs:
            build_upload_tab(svc, demo)
            build_finetune_tab(svc, demo)
            build_generate_tab(svc, demo)
            build_collaborations_tab(svc, demo)
            build_try_tab(svc, demo)
            build_jobs_tab(svc, demo)
            build_compare_tab(svc, demo)
            build_admin_tab(svc, demo)
            build_account_tab(svc, demo)

        def header(request: gr.Request):
            p = svc.who(request)
            a = svc.account(p)
            return f"**{md_escape(a['username'])}** · {md_escape(a['org'])} · {a['role']} · [sign out](logout)"

        def open_tab(request: gr.Request):
            tab = url_tab(request.query_params, svc.who(request).is_admin)
            return gr.Tabs(selected=tab) if tab else gr.skip()

        demo.load(header, outputs=who, api_name=False)
        demo.load(open_tab, outputs=tabs, api_name=False)
    return demo


def limit_queue_analytics(demo, settings: Settings) -> None:
    """Bound what Gradio's queue keeps and summarises after every event (settings
    ``queue_analytics_events`` / ``queue_analytics_every``: its defaults rebuilt a pandas table of
    10,000 events per event, a quarter of the dashboard's CPU under bench/dashboard_load.py).
    Gradio reads these from its environment once, into the queue's attributes, which are set
    here instead; a Gradio that renames them fails
    tests/ui/test_lazy_page_load.py::test_the_queue_keeps_a_bounded_analytics_table."""
    q = demo._queue
    q.ANALYTICS_MAX_EVENTS = settings.queue_analytics_events
    q.ANAYLTICS_CACHE_FREQUENCY = settings.queue_analytics_every  # (sic: Gradio's spelling)


def create_app(settings: Optional[Settings] = None, bootstrap: bool = True):
    """The FastAPI app serving the dashboard (Gradio at /, plus /login, /logout, /download/...)."""
    from fastapi import FastAPI

    from ui import auth, web
    from ui.gate import Gate

    settings = settings or get_settings()
    svc = Service(settings)
    if bootstrap:
        for line in svc.bootstrap():
            log.info("%s", line)
        svc.client.ensure_ready()  # starts the embedded worker when no broker is configured
    sessions = auth.Sessions(svc)
    app = FastAPI(title="gtapp dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    auth.install_routes(app, sessions)
    web.install_routes(app, svc, sessions)

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    demo = build_blocks(svc)
    # Gradio uses files in its cache folder in place: make that the dashboard's own upload
    # folder, so an upload is never copied (and nothing else is ever read as one; ui.gate).
    for block in (demo, *demo.blocks.values()):
        block.GRADIO_CACHE = str(svc.uploads.root)
    demo.queue(default_concurrency_limit=4)
    limit_queue_analytics(demo, settings)
    app = gr.mount_gradio_app(app, demo, path="/", auth_dependency=sessions.dependency, css=CSS,
                              max_file_size=f"{settings.max_upload_mb}mb", show_error=True, ssr_mode=False,
                              run_history=False,  # no copies of private results in browser storage
                              footer_links=["api", "settings"], js=URL_STATE_JS,
                              theme=gr.themes.Soft(primary_hue="orange"))
    app.add_middleware(Gate, sessions=sessions, uploads=svc.uploads, allowed_origins=tuple(settings.allowed_origins))
    app.state.gtapp_service = svc
    return app
