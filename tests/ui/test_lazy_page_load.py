"""A page load fills only the open tab (issue #15 item 16): every tab's page-load event runs its
queries when the page's URL names that tab or none (a bare / fills them all, as before), and
leaves its components alone otherwise; the tab's own select event fills it when it is opened.
The sign-in lands on ``?tab=upload``. Checked on the real Blocks' page-load wirings."""

from __future__ import annotations

import gradio as gr


def page_load_fns(blocks) -> dict[str, list]:
    """Page-load event handlers by qualname (the demo.load wirings, not the tab selects)."""
    out: dict[str, list] = {}
    for bf in blocks.fns.values():
        triggers = {name for _, name in bf.targets}
        if "load" in triggers and bf.fn is not None:
            out.setdefault(bf.fn.__qualname__, []).append(bf.fn)
    return out


def test_page_load_events_fill_only_the_tab_the_url_names(svc, users, pair_id):
    from ui.app import build_blocks

    loads = page_load_fns(build_blocks(svc))
    (finetune_load,) = loads["build_finetune_tab.<locals>.load"]
    (upload_load,) = loads["build_upload_tab.<locals>.load"]

    def call(fn, tab, *inputs):
        query = {"tab": tab} if tab else {}
        return fn(*inputs, gr.Request(username="alice", query_params=query))

    filled = call(finetune_load, "finetune", None, None)
    assert filled[1].choices and filled[1].value == pair_id  # the pair dropdown was filled
    assert call(finetune_load, None, None, None)[1].value == pair_id  # a bare URL fills every tab
    skipped = call(finetune_load, "upload", None, None)
    assert all(x == gr.skip() for x in skipped)  # not its tab: no queries
    assert call(upload_load, "upload")[0].value == pair_id
    assert all(x == gr.skip() for x in call(upload_load, "jobs"))
    # ?tab=admin shows a member the first tab: every tab fills, as for a bare URL
    assert call(upload_load, "admin")[0].value == pair_id
    # an unknown tab name is not a tab: it fills (as a bare URL does)
    assert call(finetune_load, "../etc", None, None)[1].value == pair_id


def test_sign_in_lands_on_the_first_tab_named(svc, users):
    from starlette.testclient import TestClient

    from ui.app import create_app

    with TestClient(create_app(svc.settings, bootstrap=False), base_url="http://127.0.0.1") as http:
        r = http.post("/login", data={"username": "alice", "password": "password123"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "./?tab=upload", (r.status_code, r.headers)


def test_the_queue_keeps_a_bounded_analytics_table(tmp_path, monkeypatch):
    """Gradio's queue summarises its past events after each one; the dashboard bounds that
    (settings queue_analytics_events / _every, Gradio's own variable names accepted)."""
    from ui.app import create_app
    from ui_helpers import make_settings

    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "77")
    settings = make_settings(tmp_path / "d")
    assert (settings.queue_analytics_events, settings.queue_analytics_every) == (1000, 77)
    app = create_app(settings, bootstrap=False)
    (blocks,) = [r.app.get_blocks() for r in app.routes if hasattr(getattr(r, "app", None), "get_blocks")]
    q = blocks._queue
    assert (q.ANALYTICS_MAX_EVENTS, q.ANAYLTICS_CACHE_FREQUENCY) == (1000, 77)
    q.event_analytics.update({str(i): {"function": "f", "status": "success", "process_time": 0.1}
                              for i in range(5)})
    q.events_recorded = 5
    assert q.compute_analytics_summary(list(q.event_analytics.values())) == {"functions": {}}  # not yet: 5 < 77
