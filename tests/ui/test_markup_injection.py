"""Markdown/HTML injection (security finding 5): a job name with a backtick broke out of its code
span in Jobs → Show, and the admin's page rendered a phishing link and a remote image.

Every user-supplied string an organisation controls — its user and organisation names, a
dataset's name and file name, adapter names and notes, a job's name, stage, error, log and
outputs, evaluation tasks, ledger notes, contributor names — holds a payload here. EVERY event
of the dashboard is then called over HTTP (Gradio's queue protocol, through the gate) by the
owner or an admin, with the page's own values and the payload objects' ids; every Markdown and
HTML output (and every toast) is parsed as the browser's renderer would: no link, image, raw
HTML tag, heading or autolink may come from the payload."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt
from test_tenancy_enumerated import EVENTS, Page, _call_as, handler_key, sign_in
from ui_helpers import make_settings

PAYLOAD = ("q9`](http://evil.example/p) ![i](http://evil.example/i.png) <img src=x onerror=alert(1)> "
           "[c](javascript:alert(1)) www.evil.example m@evil.example **B** | a | b |\n# Heading-q9\n```\n<script>x</script>")
NAME = ("q9`] ![i](evil.example) <img src=x onerror=alert(1)> [c](javascript:alert(1)) www.evil.example "
        "m@evil.example **B** | x |")  # names allow no slashes or line breaks
USER, ORG = "alice@evil.example", "orga@evil.example"  # account names allow @ and .
PASSWORD = "password123"
IDS = {"dataset": 51, "adapter": 51, "job": 51}

_md = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _tokens(tokens):
    for t in tokens:
        yield t
        if t.children:
            yield from _tokens(t.children)


def markdown_problems(text: str) -> list[str]:
    """What the payload managed to become in this Markdown, as a renderer sees it."""
    out = []
    blocks = _md.parse(text)
    for j, t in enumerate(blocks):
        if t.type == "heading_open" and "Heading-q9" in blocks[j + 1].content:
            out.append("a heading from the payload")
    for t in _tokens(blocks):
        href = (t.attrs or {}).get("href") or (t.attrs or {}).get("src") or ""
        if t.type in ("link_open", "image") and ("evil" in str(href) or "javascript" in str(href)):
            out.append(f"{t.type} {href}")
        if t.type in ("html_inline", "html_block") and re.search(r"<(img|script|a|iframe)\b", t.content, re.I):
            out.append(f"raw HTML {t.content[:60]!r}")
    # autolinks (GFM: www.…, e-mail addresses) need their dots and @ unescaped, outside code blocks
    outside_code = re.sub(r"(`{3,})[\s\S]*?\1", "", text)
    for bare in ("www.evil.example", "m@evil.example", "alice@evil.example", "orga@evil.example"):
        if bare in outside_code:
            out.append(f"autolinkable {bare}")
    return out


def html_problems(text: str) -> list[str]:
    out = []
    if re.search(r"<(img|script|iframe)\b", text, re.I):
        out.append("a tag from the payload")
    if re.search(r"""<a\b[^>]*href=['"]?(javascript:|http://evil)""", text, re.I):
        out.append("a link from the payload")
    return out


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    import gradio
    from fastapi.testclient import TestClient

    from storage import accounts
    from storage.catalog import recipe_fingerprint
    from storage.models import (Adapter, Dataset, Evaluation, Job, ModelPairRecord, PrivacyLedgerEntry, User,
                                utcnow)
    from ui.app import create_app
    from workers.client import JobClient

    root = tmp_path_factory.mktemp("markup")
    settings = make_settings(root / "deploy")
    app = create_app(settings, bootstrap=False)
    svc = app.state.gtapp_service
    svc.client = JobClient(settings, run_embedded=False)
    svc.bootstrap()
    store = svc.store
    with svc.session() as s:
        from sqlalchemy import select

        accounts.create_user(s, ORG, USER, PASSWORD, "member")
        alice = s.scalars(select(User).where(User.username == USER)).one()
        org, uid = alice.org_id, alice.id
    recipe = {"tiny": {"num_layers": 2, "rank": 2, "alpha": 4, "target_modules": ["q_proj"]},
              "llm": {"num_layers": 3, "rank": 2, "alpha": 4, "target_modules": ["q_proj"]}}
    d = root / "tree"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    (d / "adapter_model.safetensors").write_bytes(b"x" * 16)
    tree = store.put_tree(d)
    ds_sha = store.put_bytes(b'{"prompt": "p", "answer": "a"}\n')
    now = utcnow()
    with svc.session() as s:
        pair = ModelPairRecord(name=NAME, tiny_path="/nonexistent/tiny", llm_path="/nonexistent/llm", recipe=recipe,
                         recipe_fingerprint=recipe_fingerprint(recipe))
        s.add(pair)
        s.flush()
        s.add(Dataset(id=51, org_id=org, user_id=uid, name=NAME, task="exact_match", artifact=ds_sha, n_examples=1,
                      epsilon_budget=3.0, delta=1e-5, source={"format": "prompt/answer", "metric": "exact_match",
                                                              "file": PAYLOAD, "uploaded_by": USER}))
        s.flush()
        s.add(Adapter(id=51, org_id=org, user_id=uid, model_pair_id=pair.id, model="tiny", origin="uploaded",
                      name=NAME, artifact=tree, dataset_id=51,
                      meta={"uploaded_files": [PAYLOAD], "pair": NAME, "record": {"note": PAYLOAD, "epsilon": 1.5}}))
        s.add(Adapter(id=52, org_id=org, user_id=uid, model_pair_id=pair.id, model="llm", origin="generated",
                      name=NAME, artifact=tree,
                      meta={"record": {"note": PAYLOAD}, "pair": NAME, "mapper": {"version": 1, "kind": PAYLOAD},
                            "evaluation": {"metric": "exact_match", "value": 0.5, "task": PAYLOAD},
                            "contributors": [{"name": PAYLOAD, "adapter_id": 51, "weight": 1.0, "epsilon": 1.5}]}))
        s.flush()
        common = dict(kind="finetune", queue="gpu", org_id=org, user_id=uid, created_at=now, stage=PAYLOAD,
                      log_tail=PAYLOAD, params={"dataset_id": 51, "pair_id": pair.id, "name": PAYLOAD})
        s.add(Job(id=51, status="failed", error=PAYLOAD, finished_at=now, outputs={"note": PAYLOAD}, **common))
        s.add(Job(id=52, status="running", started_at=now, heartbeat_at=now, progress=0.5, **common))
        s.flush()
        s.add(Evaluation(id=51, org_id=org, adapter_id=52, method="gt", task=PAYLOAD, metric="exact_match",
                         value=0.5, seed=0, meta={"protocol": PAYLOAD}))
        s.add(PrivacyLedgerEntry(id=51, dataset_id=51, org_id=org, job_id=51, epsilon=1.5, delta=1e-5, status="spent",
                                 total_epsilon=1.5, accountant="basic", note=PAYLOAD))
    mounts = [r for r in app.routes if type(r).__name__ == "Mount"]
    blocks = mounts[0].app.get_blocks()
    assert isinstance(mounts[0].app, gradio.routes.App)
    client = TestClient(app)
    client.__enter__()
    pages = {"alice": Page(sign_in(client, USER, PASSWORD), blocks),
             "admin": Page(sign_in(client, "admin", settings.first_admin_password), blocks)}
    yield pages, blocks
    client.__exit__(None, None, None)


def test_no_event_renders_user_text_as_markup(deployment):
    pages, blocks = deployment
    checked, with_payload, problems = 0, 0, []
    for i, bf in sorted(blocks.fns.items()):
        if bf.fn is None:
            continue
        key = handler_key(bf)
        ev = EVENTS.get(key)
        assert ev is not None, f"{key} is not classified (test_tenancy_enumerated.EVENTS)"
        page = pages["admin" if ev.kind.startswith("admin") else "alice"]
        data = page.values(bf)
        selects = dict(ev.selects)
        for pos, c in enumerate(bf.inputs):
            kind = selects.get(c.elem_id or "")
            if kind in IDS:
                data[pos] = [IDS[kind]] if type(c).__name__ == "CheckboxGroup" else IDS[kind]
        _call_as(page, i, data)
        for log in page.last_logs:
            problems += [f"{key} toast: {p}" for p in html_problems(log)]
        for c, value in zip(bf.outputs, page.last_outputs or []):
            if isinstance(value, dict) and value.get("__type__") == "update":
                value = value.get("value")
            if not isinstance(value, str):
                continue
            kind = type(c).__name__
            if kind == "Markdown":
                found = markdown_problems(value)
            elif kind == "HTML":
                found = html_problems(value)
            else:
                continue
            checked += 1
            with_payload += "q9" in value or "evil" in value
            problems += [f"{key} -> {kind}#{c.elem_id}: {p}" for p in found]
    assert not problems, "\n".join(problems[:20])
    # the probes saw the payload: job details, the jobs table, adapter summaries, the ledger, the
    # header and account lines, downloads
    assert checked >= 20 and with_payload >= 6, (checked, with_payload)


@pytest.mark.parametrize("text", [PAYLOAD, NAME, "``` a ```` b", "[x](y)", "a\u2028# b"])
def test_escaping_helpers_hold(text):
    from ui.common import md_code, md_escape

    assert not markdown_problems(md_escape(text))
    block = md_code(text)
    tokens = [t for t in _md.parse(block) if t.type == "fence"]
    assert len(tokens) == 1 and tokens[0].content.rstrip("\n") == text  # shown verbatim, not closed early
