"""Tenancy over the dashboard's WHOLE HTTP surface, found by enumeration, not by a hand-picked list.

The real app (``ui.app.create_app``: FastAPI with Gradio mounted, SQLite in a temporary data
dir) is driven over HTTP with ``starlette.testclient.TestClient``, each user signed in through
``POST /login`` and carrying only their session cookie. Gradio events are called through the
dispatcher the browser itself uses (``POST /gradio_api/queue/join`` with an ``fn_index`` and a
session hash, then ``GET /gradio_api/queue/data``), so the user is resolved server-side from
the cookie exactly as in production.

Organisation A (alice) owns one object of every kind: a dataset with a privacy budget and a
ledger entry, a TinyLM and an LLM adapter, a queued, a failed and a succeeded (bench) job, an
evaluation, a bench result artifact, a results JSON loaded for her browser session only, and a
CSV export. Every one of her objects uses the same ids (41, 42, 43) so one id probes every kind.
Organisation B (bob) owns a dataset and an adapter of his own; "admin" is the provider admin.

* ``test_every_route_and_event_is_classified``: ``app.routes`` and every backend function of
  the Blocks (``blocks.fns``, checked against the config's ``dependencies``) must be exactly the
  routes in ROUTES and the handlers in EVENTS. A new route or event fails here until someone
  decides what it returns.
* ``test_routes_refuse_another_organisations_objects``: every route with a path or query
  parameter is called as bob with alice's values in every parameter: 404, nothing of alice's in
  the body, and answered exactly like a missing id. Alice gets her own (the probe could see it).
* ``test_gradio_data_routes``: Gradio's own data routes (config, API info, its file route
  pointed at alice's artifacts) show bob nothing of hers.
* ``test_events_return_nothing_of_another_organisation``: EVERY event, called as bob with what
  bob's page would send, then with alice's ids (and values alice's or an admin's page offers)
  in each input slot in turn: nothing of alice's comes back; a slot that selects an object
  answers "not found", exactly as for a missing id, and creates no job; none of alice's objects
  changes.
* ``test_owners_see_what_the_probes_look_for``: each data-returning handler, called by alice
  the same way, does return her data (so the probes would have seen a leak).
* ``test_a_borrowed_session_hash_reads_no_state``: Gradio keeps ``gr.State`` server-side per
  session hash, which the page chooses; bob sending alice's hash gets none of her state.
* ``test_members_cannot_start_admin_jobs_or_actions``: every admin action, called as a member
  with what an admin's page would send: refused for the role, and no job, user, pair, promotion
  or stored benchmark appears.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from ui_helpers import make_settings

# --------------------------------------------------------------------------- the fixture's objects

ALICE_INTS = (41, 42, 43)  # alice's ids: dataset 41, adapters 41/42, jobs 41/42/43, evaluation 41, ledger 41
MISSING = 9999  # an id of no object of any kind
BENCH_KEY = "job:43:results_artifact"  # the Compare tab's key of alice's bench job's results
MISSING_BENCH_KEY = "job:9999:results_artifact"
BOB_DATASET = BOB_ADAPTER = 61
ADMIN_JOB = 44  # a failed shadow job of the admin's organisation (which has a member too: pete)
ORG_A, ORG_B = "orga-q7", "orgb-m3"
PASSWORD = "password123"
ADMIN_REFUSAL = ("this needs an admin account", "for admins only")

# alice's objects of each kind, as a slot that selects one would hold them; and a missing twin
OBJECTS = {"dataset": ([41], MISSING), "adapter": ([41, 42], MISSING), "job": (list(ALICE_INTS), MISSING),
           "bench": ([BENCH_KEY], MISSING_BENCH_KEY), "collaboration": ([41], MISSING), "try_job": ([45], MISSING)}

# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Ev:
    """What a handler returns or does. ``selects``: input slots (elem_id -> object kind) that pick
    one of the caller's objects: alice's object there must read as missing. ``fill``: values bob's
    probes put in other slots so the handler gets as far as the object (e.g. a valid budget).
    ``admin_when``: inputs that make a member-reachable event an admin action."""

    kind: str
    why: str
    selects: tuple = ()
    fill: tuple = ()
    admin_when: tuple = ()


KINDS = {
    "none": "returns no organisation's data (layout, constants, shared catalogues: pairs, mappers, job kinds)",
    "own": "returns only the caller's own account",
    "tenant_read": "returns data of the caller's organisation",
    "tenant_write": "acts on an object of the caller's organisation chosen by id",
    "own_create": "stores an upload as the caller's organisation's",
    "admin_read": "returns data to admins only",
    "admin_action": "an admin operation or admin job",
}

_U, _F, _G, _J, _C, _A = ("ui.upload:build_upload_tab.<locals>.", "ui.finetune:build_finetune_tab.<locals>.",
                          "ui.generate:build_generate_tab.<locals>.", "ui.jobs:build_jobs_tab.<locals>.",
                          "ui.compare:build_compare_tab.<locals>.", "ui.admin:build_admin_tab.<locals>.")
_L = "ui.collaborations:build_collaborations_tab.<locals>."
_T = "ui.try_it:build_try_tab.<locals>."
_PICK = (("col-pick", "collaboration"),)

# Keys: "<module>:<qualname>" of the handler (a lambda also names its outputs). Every wiring of a
# handler is probed with its own inputs; the classification is per handler.
EVENTS: dict[str, Ev] = {
    "ui.app:build_blocks.<locals>.header": Ev("own", "the signed-in user's name, organisation and role"),
    "ui.app:build_blocks.<locals>.open_tab": Ev("none", "selects the tab the page's URL names (admin only for admins)"),
    "ui.common:clear_message": Ev("none", "empties a status line"),
    "ui.auth:build_account_tab.<locals>.show_me": Ev("own", "the signed-in user's account"),
    "ui.auth:build_account_tab.<locals>.change_pw": Ev("own", "changes the caller's own password"),
    _U + "load": Ev("tenant_read", "pairs; the organisation's datasets and adapters"),
    _U + "uploads": Ev("tenant_read", "the organisation's datasets and adapters"),
    _U + "on_show": Ev("tenant_read", "one adapter's summary", selects=(("adapter-show-id", "adapter"),)),
    _U + "on_adapter": Ev("own_create", "validates and stores an uploaded adapter"),
    _U + "on_dataset": Ev("own_create", "validates and stores an uploaded dataset"),
    _U + "clear_files": Ev("none", "clears a file input"),
    _F + "load": Ev("tenant_read", "the organisation's datasets and the first one's ledger"),
    _F + "on_dataset": Ev("tenant_read", "a dataset's privacy ledger", selects=(("ft-dataset", "dataset"),)),
    _F + "on_start": Ev("tenant_write", "a fine-tune job on a dataset", selects=(("ft-dataset", "dataset"),)),
    _F + "on_budget": Ev("tenant_write", "sets a dataset's privacy budget", selects=(("ft-dataset", "dataset"),),
                         fill=(("ft-budget", 50.0),)),
    _F + "on_no_dp": Ev("tenant_write", "marks a dataset 'no DP required'", selects=(("ft-dataset", "dataset"),),
                        fill=(("ft-no-dp-confirm", True),)),
    _A + "on_mapper": Ev("admin_read", "a mapper version's learning curve (the shared catalogue's model card)"),
    _F + "on_cli": Ev("none", "the form's values as a gtapp command line (no lookup)"),
    "ui.common:wire_saved_settings.<locals>.on_save": Ev("none", "a form's settings into the browser's own storage "
                                                                 "(no lookup)"),
    "ui.common:wire_saved_settings.<locals>.on_restore": Ev("none", "settings from the browser's own storage back "
                                                                    "into the form (no lookup)"),
    _G + "on_cli": Ev("none", "the form's values as a gtapp command line (no lookup)"),
    _T + "load": Ev("tenant_read", "model pairs (shared); the organisation's own LLM and TinyLM adapters"),
    _T + "on_run": Ev("tenant_write", "a try job on the organisation's adapters",
                      selects=(("try-llm", "adapter"), ("try-tiny", "adapter")), fill=(("try-prompt", "hello"),)),
    _T + "on_poll": Ev("tenant_read", "the outputs of one of the organisation's try jobs",
                       selects=(("try-job", "try_job"),)),
    _L + "refresh": Ev("tenant_read", "the collaborations the organisation is in; model pairs (shared)"),
    _L + "show": Ev("tenant_read", "a collaboration the organisation is in (never another member's contribution), "
                                   "its audit log, the organisation's own TinyLM adapters", selects=_PICK),
    _L + "on_create": Ev("own_create", "creates a collaboration of the caller's organisation, inviting others"),
    _L + "on_accept": Ev("tenant_write", "accepts an invitation of the caller's organisation", selects=_PICK),
    _L + "on_decline": Ev("tenant_write", "declines an invitation of the caller's organisation", selects=_PICK),
    _L + "on_withdraw": Ev("tenant_write", "withdraws the caller's organisation", selects=_PICK),
    _L + "on_contribute": Ev("tenant_write", "contributes one of the caller's adapters", selects=_PICK),
    _L + "on_start": Ev("tenant_write", "starts a collaboration the caller's organisation created", selects=_PICK),
    _G + "load": Ev("tenant_read", "pairs, the organisation's adapters, datasets and downloads"),
    _G + "pair_changed": Ev("tenant_read", "the organisation's TinyLM adapters of a pair; mappers (shared)"),
    _G + "on_contrib": Ev("tenant_read", "the chosen adapters' contributions", selects=(("gen-adapters", "adapter"),)),
    _G + "on_start": Ev("tenant_write", "a generate job on adapters (+ an evaluation dataset)",
                        selects=(("gen-adapters", "adapter"), ("gen-eval-ds", "dataset")),
                        fill=(("gen-adapters", [BOB_ADAPTER]),)),
    _G + "on_refresh": Ev("tenant_read", "the organisation's adapter downloads"),
    _J + "load": Ev("none", "the job kinds the caller may filter by"),
    _J + "tick": Ev("tenant_read", "the organisation's jobs table and one job's details", selects=(("job-id", "job"),)),
    _J + "<lambda>->[Timer]": Ev("none", "switches the polling timer"),
    _J + "on_show": Ev("tenant_read", "one job's details and log", selects=(("job-id", "job"),)),
    _J + "on_cancel": Ev("tenant_write", "cancels a job", selects=(("job-id", "job"),)),
    _J + "on_retry": Ev("tenant_write", "retries a job as a new one", selects=(("job-id", "job"),)),
    _C + "load": Ev("tenant_read", "result sources: evaluations, stored benchmarks, the organisation's bench jobs"),
    _C + "select_source": Ev("tenant_read", "one source's rows (into server-side state) and filter choices",
                             selects=(("cmp-source", "bench"),)),
    _C + "render": Ev("tenant_read", "charts, table and a CSV export of the state's rows"),
    _C + "<lambda>->[]": Ev("none", "starts a chain"),
    _C + "<lambda>->[File#cmp-upload]": Ev("none", "clears a file input"),
    _C + "on_upload": Ev("own_create", "loads a results JSON for this session (or, admins, for everyone)",
                         admin_when=(("cmp-share", True),)),
    _A + "visible": Ev("none", "whether the Admin tab is shown"),
    _A + "<lambda>->[]": Ev("none", "starts a chain"),
    _A + "overview": Ev("admin_read", "users, pairs, mappers, pair sets (nothing for members)"),
    _A + "on_recipe": Ev("admin_read", "a pair's full recipe (nothing for members)"),
    _A + "on_create": Ev("admin_action", "creates a user"),
    _A + "on_enable": Ev("admin_action", "enables a user"),
    _A + "on_disable": Ev("admin_action", "disables a user"),
    _A + "on_register": Ev("admin_action", "registers a zoo folder as a model pair"),
    _A + "on_zoo_build": Ev("admin_action", "a zoo job"),
    _A + "on_shadow": Ev("admin_action", "a shadow-pair job"),
    _A + "on_train": Ev("admin_action", "a mapper training job"),
    _A + "on_bench": Ev("admin_action", "a benchmark job"),
    _A + "on_promote": Ev("admin_action", "promotes a mapper version"),
}

# FastAPI routes: (method, path) -> ("public", why) or ("tenant", {parameter: object kind}).
# The Gradio app mounted at / is enumerated through its events instead (its own routes are the
# event transport, static assets and Gradio's file cache, probed in test_gradio_data_routes).
ROUTES: dict[tuple[str, str], tuple[str, Any]] = {
    ("GET", "/login"): ("public", "the sign-in form (static HTML)"),
    ("POST", "/login"): ("public", "checks a password; sets the caller's own session cookie"),
    ("GET", "/logout"): ("public", "the sign-out button (static HTML)"),
    ("POST", "/logout"): ("public", "ends the caller's own session"),
    ("GET", "/healthz"): ("public", "liveness: {'ok': true}"),
    ("GET", "/download/adapter/{adapter_id}"): ("tenant", {"adapter_id": "adapter"}),
    ("GET", "/download/export/{token}"): ("tenant", {"token": "export"}),
}
MAX_PUBLIC_ROUTES = 5

# Input types and what bob puts in them. Checkbox: a boolean carries no id. File: Gradio accepts
# only files in its upload folder, which are named by their content's hash (knowing the path means
# having the file), and the handlers delete them once read. State: held server-side per session
# (see test_a_borrowed_session_hash_reads_no_state).
PROBED_INPUTS = {"Number", "Textbox", "Dropdown", "CheckboxGroup"}
# BrowserState: a form's saved settings, kept in the user's own browser (no object of anyone's).
# Radio: one of a fixed list of words (Generate's refine mode); Gradio refuses any other value.
UNPROBED_INPUTS = {"Checkbox", "Radio", "File", "State", "BrowserState"}


def handler_key(bf) -> str:
    f = bf.fn
    key = f"{f.__module__}:{f.__qualname__}"
    if f.__name__ == "<lambda>":
        key += "->[" + ",".join(_describe(c) for c in bf.outputs) + "]"
    return key


def _describe(c) -> str:
    return f"{type(c).__name__}#{c.elem_id}" if c.elem_id else type(c).__name__


def _slot(c) -> str:
    return c.elem_id or getattr(c, "label", None) or type(c).__name__


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass
class Reply:
    ok: bool
    text: str  # the outputs (or the error) and any gr.Warning/gr.Info, as JSON


class Page:
    """A browser tab: a :class:`Browser` (one user's session cookie) and a Gradio session hash."""

    def __init__(self, client, blocks, session_hash: Optional[str] = None):
        self.client, self.blocks = client, blocks
        self.sh = session_hash or uuid.uuid4().hex[:11]

    def call(self, fn_index: int, data: list) -> Reply:
        bf = self.blocks.fns[fn_index]
        trigger = next((t for t, _ in bf.targets if t is not None), None)
        r = self.client.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": fn_index, "session_hash": self.sh, "event_data": None, "trigger_id": trigger})
        assert r.status_code == 200, f"event {fn_index}: queue/join answered {r.status_code} {r.text[:300]}"
        event_id = r.json()["event_id"]
        body = self.client.get("/gradio_api/queue/data", params={"session_hash": self.sh}).text
        parts: list = []
        ok = None
        self.last_outputs, self.last_logs = None, []  # this call's outputs (by position) and toasts
        for line in body.splitlines():
            if not line.startswith("data: "):
                continue
            msg = json.loads(line[6:])
            if msg.get("event_id") != event_id:
                continue
            if msg.get("msg") == "log":
                parts.append({"log": msg.get("log"), "level": msg.get("level")})
                self.last_logs.append(str(msg.get("log")))
            elif msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                ok = bool(msg.get("success"))
                self.last_outputs = out.get("data") if ok else None
                parts.append(out.get("data") if ok else {"error": out.get("error")})
        assert ok is not None, f"event {fn_index} never completed: {body[-2000:]}"
        return Reply(ok, json.dumps(parts, ensure_ascii=False, default=str))

    # the page's current form: the values the browser would send (Gradio's per-session config)
    def session(self):
        return self.blocks.state_holder[self.sh]

    def values(self, bf) -> list:
        sess = self.session()
        out = []
        for c in bf.inputs:
            if c.stateful:
                out.append(None)
                continue
            props = (sess.config_values.get(c._id) or {}).get("props") or {}
            v = props["value"] if "value" in props else getattr(c, "value", None)
            out.append(None if callable(v) else copy.deepcopy(v))
        return out

    def choices(self, c) -> list:
        sess = self.session()
        cur = sess[c._id] if c._id in sess else c
        return [v for _, v in (getattr(cur, "choices", None) or [])]

    def offer(self, c, values) -> None:
        """Add ``values`` to a dropdown's choices in this session. Gradio refuses a value the page
        was never offered; widening the list (as a page of alice's, or a borrowed session, would
        hold) lets a probe reach the handler's own server-side check, which is what is tested."""
        flat = []
        for v in values:
            flat.extend(v if isinstance(v, list) else [v])
        sess = self.session()
        cur = sess[c._id] if c._id in sess else c
        have = [v for _, v in (cur.choices or [])]
        add = [v for v in flat if v is not None and v not in have]
        if add:
            new = copy.copy(cur)
            new.choices = list(cur.choices or []) + [(str(v), v) for v in add]
            sess.blocks_config.blocks[c._id] = new  # (not sess[...] =, which resets the page's value)


class Browser:
    """One user's cookie on the shared TestClient (one client, so one event loop: Gradio's
    per-session queues are bound to the loop that made them)."""

    def __init__(self, client, cookie: str):
        self.http, self._cookie = client, cookie

    def request(self, method: str, url: str, **kw):
        from ui.auth import COOKIE

        self.http.cookies.clear()
        return self.http.request(method, url, headers={"cookie": f"{COOKIE}={self._cookie}"}, **kw)

    def get(self, url: str, **kw):
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw):
        return self.request("POST", url, **kw)


def sign_in(client, username: str, password: str = PASSWORD) -> Browser:
    """Sign in through POST /login; the browser then sends only the cookie it was given."""
    from ui.auth import COOKIE

    client.cookies.clear()
    r = client.post("/login", data={"username": username, "password": password}, follow_redirects=False)
    assert r.status_code == 303 and COOKIE in r.cookies, (username, r.status_code, r.text[:300])
    token = r.cookies[COOKIE]
    client.cookies.clear()
    return Browser(client, token)


# --------------------------------------------------------------------------- the deployment


@dataclass
class World:
    app: Any
    svc: Any
    blocks: Any
    settings: Any
    alice: Page
    bob: Page
    admin: Page
    secrets: list
    alice_export: str
    alice_artifact_paths: list
    pete: Page  # a member of the admin's organisation
    primed: dict  # name -> {component id: offered choice values}


def _secret_rows(task: str) -> bytes:
    return json.dumps({"rows": [{"protocol": "p-q7", "task": task, "method": "gt", "metric": "exact_match",
                                 "value": 0.5, "seed": 0}]}).encode()


def _make_objects(svc, settings, tmp: Path) -> dict:
    from sqlalchemy import select

    from gtapp.tasks import task_names
    from storage import accounts
    from storage.catalog import recipe_fingerprint
    from storage.models import (Adapter, Collaboration, CollaborationEvent, CollaborationMember, Dataset, Evaluation,
                                Job, MapperVersion, ModelPairRecord, PairSetRecord, PrivacyLedgerEntry, User, utcnow)

    svc.bootstrap()  # the first admin ("admin", password from the test settings)
    store = svc.store
    with svc.session() as s:
        accounts.create_user(s, ORG_A, "alice", PASSWORD, "member")
        accounts.create_user(s, ORG_B, "bob", PASSWORD, "member")
        admin = s.scalars(select(User).where(User.username == settings.first_admin_username)).one()
        accounts.create_user(s, admin.org.name, "pete", PASSWORD, "member")
        p_org, p_uid = admin.org_id, admin.id
        alice = s.scalars(select(User).where(User.username == "alice")).one()
        bob = s.scalars(select(User).where(User.username == "bob")).one()
        a_org, a_uid, b_org, b_uid = alice.org_id, alice.id, bob.org_id, bob.id
    recipe = {"tiny": {"num_layers": 2, "rank": 2, "alpha": 4, "target_modules": ["q_proj"]},
              "llm": {"num_layers": 3, "rank": 2, "alpha": 4, "target_modules": ["q_proj"]}}
    ds_bytes = b"".join(json.dumps({"prompt": f"ALICE-SECRET-PROMPT-{i}-q7", "answer": f"ALICE-SECRET-ANSWER-{i}-q7"})
                        .encode() + b"\n" for i in range(4))
    ds_sha = store.put_bytes(ds_bytes)
    bob_ds_sha = store.put_bytes(b'{"prompt": "bob prompt", "answer": "bob answer"}\n')
    trees = {}
    for who, text in (("alice-tiny", b"ALICE-ADAPTER-BYTES-tiny-q7"), ("alice-llm", b"ALICE-ADAPTER-BYTES-llm-q7"),
                      ("bob", b"bob adapter bytes")):
        d = tmp / who
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({"note": text.decode()}))
        (d / "adapter_model.safetensors").write_bytes(text * 8)
        trees[who] = store.put_tree(d)
    results_sha = store.put_bytes(_secret_rows("orga/bench-task-q7"))
    zoo = settings.zoo_root / "zoo-cand"  # an unregistered zoo folder (for the register probe)
    (zoo / "tiny").mkdir(parents=True)
    (zoo / "llm").mkdir()
    (zoo / "recipe.json").write_text(json.dumps(recipe))
    with svc.session() as s:
        pair = ModelPairRecord(name="syn", tiny_path="/nonexistent/tiny", llm_path="/nonexistent/llm", recipe=recipe,
                         recipe_fingerprint=recipe_fingerprint(recipe))
        s.add(pair)
        s.flush()
        pid = pair.id
        ps = PairSetRecord(model_pair_id=pid, name="shadow-set", n_pairs=4, artifact="0" * 64, meta={"tasks": ["t"]})
        s.add(ps)
        s.flush()
        s.add(MapperVersion(model_pair_id=pid, version=1, kind="gt", artifact="1" * 64, pair_set_id=ps.id,
                            metrics={"val_loss": 0.5}))
        s.add(Dataset(id=41, org_id=a_org, user_id=a_uid, name="orga-private-dataset-q7", task="exact_match",
                      artifact=ds_sha, n_examples=4, epsilon_budget=3.0, delta=1e-5,
                      source={"format": "prompt/answer", "metric": "exact_match", "file": "alice-file-q7.jsonl",
                              "uploaded_by": "alice"}))
        s.add(Dataset(id=BOB_DATASET, org_id=b_org, user_id=b_uid, name="bob-own-dataset", task="exact_match",
                      artifact=bob_ds_sha, n_examples=1, source={"format": "prompt/answer", "metric": "exact_match"}))
        s.flush()
        s.add(Adapter(id=41, org_id=a_org, user_id=a_uid, model_pair_id=pid, model="tiny", origin="uploaded",
                      name="orga-tiny-adapter-q7", artifact=trees["alice-tiny"], dataset_id=41,
                      meta={"uploaded_files": ["alice-weights-q7.safetensors"], "pair": "syn",
                            "record": {"note": "ALICE-RECORD-q7", "epsilon": 1.5}}))
        s.add(Adapter(id=42, org_id=a_org, user_id=a_uid, model_pair_id=pid, model="llm", origin="generated",
                      name="orga-llm-adapter-q7", artifact=trees["alice-llm"],
                      meta={"record": {"note": "ALICE-LLM-q7"}}))
        s.add(Adapter(id=BOB_ADAPTER, org_id=b_org, user_id=b_uid, model_pair_id=pid, model="tiny", origin="uploaded",
                      name="bob-own-adapter", artifact=trees["bob"], meta={}))
        s.flush()
        now = utcnow()
        s.add(Job(id=41, kind="finetune", queue="gpu", status="queued", org_id=a_org, user_id=a_uid, created_at=now,
                  params={"dataset_id": 41, "pair_id": pid, "name": "orga-job-name-q7"}, log_tail="ALICE-JOB-LOG-q7"))
        s.add(Job(id=42, kind="finetune", queue="gpu", status="failed", org_id=a_org, user_id=a_uid, created_at=now,
                  params={"dataset_id": 41, "pair_id": pid, "name": "orga-failed-job-q7"}, error="ALICE-JOB-ERROR-q7",
                  finished_at=now))
        s.add(Job(id=43, kind="bench", queue="gpu", status="succeeded", org_id=a_org, user_id=a_uid, created_at=now,
                  params={"preset": "ci"}, outputs={"results_artifact": results_sha}, progress=1.0, finished_at=now))
        s.add(Job(id=45, kind="try", queue="gpu", status="succeeded", org_id=a_org, user_id=a_uid, created_at=now,
                  params={"pair_id": pid, "prompt": "ALICE-TRY-PROMPT-q7"}, progress=1.0, finished_at=now,
                  outputs={"rows": [{"model": "base LLM", "output": "ALICE-TRY-OUTPUT-q7"}]}))
        s.add(Job(id=ADMIN_JOB, kind="shadow", queue="gpu", status="failed", org_id=p_org, user_id=p_uid,
                  created_at=now, params={"pair_id": pid, "tasks": task_names()[:1]}, error="stopped", finished_at=now))
        s.flush()
        s.add(Evaluation(id=41, org_id=a_org, adapter_id=42, method="gt", task="orga/eval-task-q7",
                         metric="exact_match", value=0.75, seed=0, meta={"protocol": "orga-protocol-q7"}))
        s.add(PrivacyLedgerEntry(id=41, dataset_id=41, org_id=a_org, job_id=42, epsilon=1.5, delta=1e-5,
                                 status="spent", total_epsilon=1.5, accountant="basic", note="ALICE-LEDGER-NOTE-q7"))
        s.add(Collaboration(id=41, name="orga-collab-q7", model_pair_id=pid, created_by_org=a_org, created_by_user=a_uid,
                            status="open", result={}))
        s.flush()
        s.add(CollaborationMember(collaboration_id=41, org_id=a_org, state="accepted", adapter_id=41))
        s.add(CollaborationEvent(collaboration_id=41, org_id=a_org, user_id=a_uid, action="created",
                                 detail="ALICE-COLLAB-EVENT-q7"))
    secrets = ["orga-private-dataset-q7", "ALICE-SECRET-PROMPT", "ALICE-SECRET-ANSWER", "alice-file-q7",
               "orga-tiny-adapter-q7", "orga-llm-adapter-q7", "alice-weights-q7", "ALICE-RECORD-q7", "ALICE-LLM-q7",
               "ALICE-ADAPTER-BYTES", "orga-job-name-q7", "orga-failed-job-q7", "ALICE-JOB-LOG-q7",
               "ALICE-JOB-ERROR-q7", "orga/bench-task-q7", "orga/eval-task-q7", "orga-protocol-q7",
               "ALICE-LEDGER-NOTE-q7", "orga/session-task-q7", "orga-collab-q7", "ALICE-COLLAB-EVENT-q7", "ALICE-TRY-PROMPT-q7",
               "ALICE-TRY-OUTPUT-q7", ORG_A,
               "alice", BENCH_KEY,
               ds_sha, results_sha, trees["alice-tiny"], trees["alice-llm"]]
    return {"pair_id": pid, "secrets": secrets,
            "artifact_paths": [store.path(ds_sha), store.path(results_sha)]}


def _is_priming(bf, blocks) -> bool:
    """Events a page fires by itself: page load, tab select, and what follows them."""
    if bf.trigger_after is not None:
        return _is_priming(blocks.fns[bf.trigger_after], blocks)
    return bool(bf.targets) and all(ev in ("load", "select") for _, ev in bf.targets)


def prime(page: Page) -> list[Reply]:
    """Open the page: run the events the browser fires on load and on each tab, in order."""
    return [page.call(i, page.values(bf)) for i, bf in sorted(page.blocks.fns.items())
            if bf.fn is not None and _is_priming(bf, page.blocks)]


def offered(page: Page) -> dict:
    return {c._id: page.choices(c) for bf in page.blocks.fns.values() for c in bf.inputs
            if type(c).__name__ in ("Dropdown", "CheckboxGroup")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import gradio
    from fastapi.testclient import TestClient

    from ui.app import create_app
    from workers.client import JobClient

    root = tmp_path_factory.mktemp("tenancy")
    settings = make_settings(root / "deploy")
    app = create_app(settings, bootstrap=False)
    svc = app.state.gtapp_service
    svc.client = JobClient(settings, run_embedded=False)  # jobs stay queued; nothing trains
    objs = _make_objects(svc, settings, root / "trees")
    mounts = [r for r in app.routes if type(r).__name__ == "Mount"]
    assert len(mounts) == 1 and isinstance(mounts[0].app, gradio.routes.App)
    blocks = mounts[0].app.get_blocks()

    client = TestClient(app)
    client.__enter__()
    clients = {n: sign_in(client, n, p) for n, p in (("alice", PASSWORD), ("bob", PASSWORD),
                                                     ("admin", settings.first_admin_password))}
    pages = {n: Page(c, blocks) for n, c in clients.items()}
    primed_replies = {n: prime(p) for n, p in pages.items()}
    pete = Page(sign_in(client, "pete"), blocks)

    # alice loads a results JSON for her browser session only (Compare tab), then shows it
    i_upload = _fn_index(blocks, _C + "on_upload")
    data = pages["alice"].values(blocks.fns[i_upload])
    data[0] = _upload(pages["alice"], "alice-session.json", _secret_rows("orga/session-task-q7"))
    rep = pages["alice"].call(i_upload, data)
    assert rep.ok and "1 result rows loaded for this session" in rep.text, rep.text
    for i in (i for i, bf in sorted(blocks.fns.items()) if bf.trigger_after == i_upload or (
            bf.trigger_after is not None and blocks.fns[bf.trigger_after].trigger_after == i_upload)):
        pages["alice"].call(i, pages["alice"].values(blocks.fns[i]))
    assert "orga/session-task-q7" in pages["alice"].call(
        _fn_index(blocks, _C + "render"), pages["alice"].values(blocks.fns[_fn_index(blocks, _C + "render")])).text

    exports = [m for r in primed_replies["alice"] for m in re.findall(r"download/export/([A-Za-z0-9_-]+)", r.text)]
    assert exports, "alice's Compare tab made no CSV export"
    w = World(app=app, svc=svc, blocks=blocks, settings=settings, secrets=objs["secrets"] + exports,
              alice=pages["alice"], bob=pages["bob"], admin=pages["admin"], alice_export=exports[-1],
              alice_artifact_paths=objs["artifact_paths"], pete=pete, primed={n: offered(p) for n, p in pages.items()})
    # the probes would see alice's data: her own pages show it
    alice_text = "".join(r.text for r in primed_replies["alice"])
    for s in ("orga-private-dataset-q7", "orga-tiny-adapter-q7", "orga/eval-task-q7", "ALICE-LEDGER-NOTE-q7"):
        assert s in alice_text, f"alice's own pages do not show {s!r}"
    yield w
    client.__exit__(None, None, None)


def ev_of(bf) -> Ev:
    key = handler_key(bf)
    if key not in EVENTS:
        pytest.fail(f"event handler {key} is not classified: see test_every_route_and_event_is_classified")
    return EVENTS[key]


def _fn_index(blocks, key: str) -> int:
    return next(i for i, bf in sorted(blocks.fns.items()) if bf.fn is not None and handler_key(bf) == key)


def leaks(w: World, text: str, sent: Any = None) -> list[str]:
    """Alice's secrets in ``text`` (those bob sent himself are not news to him)."""
    sent_text = json.dumps(sent, default=str) if sent is not None else ""
    return [s for s in w.secrets if s in text and s not in sent_text]


def normalise(text: str) -> str:
    return re.sub(r"\d+", "N", text)


def db_state(w: World) -> dict:
    from sqlalchemy import func, select

    from storage.models import (BenchmarkRecord, Collaboration, CollaborationMember, Dataset, Job, MapperVersion,
                                ModelPairRecord, PairSetRecord, User)

    with w.svc.session() as s:
        return {
            "jobs": s.scalar(select(func.count(Job.id))),
            "admin_jobs": s.scalar(select(func.count(Job.id)).where(Job.kind.in_(("zoo", "shadow", "shadow_batch", "train_mapper",
                                                                                    "bench")))),
            "alice_jobs": [(j.id, j.status, j.cancel_requested, j.kind) for j in
                           s.scalars(select(Job).where(Job.id.in_(ALICE_INTS)).order_by(Job.id))],
            "users": sorted((u.username, u.role, u.is_active, u.org_id) for u in s.scalars(select(User))),
            "pairs": s.scalar(select(func.count(ModelPairRecord.id))),
            "pair_sets": s.scalar(select(func.count(PairSetRecord.id))),
            "promoted": sorted((m.id, m.promoted) for m in s.scalars(select(MapperVersion))),
            "budgets": sorted((d.id, d.epsilon_budget, d.delta, d.no_dp_required) for d in s.scalars(select(Dataset))
                              if d.id != BOB_DATASET),
            "benchmarks": sorted((b.id, b.name, b.artifact) for b in s.scalars(select(BenchmarkRecord))),
            "collaborations": sorted((c.id, c.status, c.job_id) for c in s.scalars(select(Collaboration))),
            "members": sorted((m.collaboration_id, m.org_id, m.state, m.adapter_id)
                              for m in s.scalars(select(CollaborationMember))),
        }


# --------------------------------------------------------------------------- the tests


def test_every_route_and_event_is_classified(world):
    from fastapi.routing import APIRoute

    w = world
    # routes
    found = {}
    for r in w.app.routes:
        if type(r).__name__ == "Mount":
            continue  # the Gradio app (asserted in the fixture); its events are enumerated below
        assert isinstance(r, APIRoute), f"route {r!r} ({type(r).__name__}) is neither an API route nor Gradio's mount"
        for m in r.methods:
            found[(m, r.path)] = r
    unclassified = sorted(set(found) - set(ROUTES))
    assert not unclassified, (f"routes not classified for tenancy: {unclassified}. Add each to ROUTES in "
                              f"{__file__} as public (returns no organisation's data) or tenant (with each "
                              "parameter's object kind), and make the tenant ones refuse foreign ids.")
    assert not sorted(set(ROUTES) - set(found)), f"ROUTES lists routes the app no longer has: " \
                                                 f"{sorted(set(ROUTES) - set(found))}"
    public = [k for k, (kind, _) in ROUTES.items() if kind == "public"]
    assert len(public) <= MAX_PUBLIC_ROUTES, f"the allowlist of public routes grew: {public}"
    for key, (kind, params) in ROUTES.items():
        dep = found[key].dependant
        names = {p.name for p in dep.path_params + dep.query_params}
        if kind == "tenant":
            assert names and names == set(params), (key, names, params)
            assert all(k in OBJECTS or k == "export" for k in params.values())
        else:
            assert not (names - {"username", "password"}), f"public route {key} takes {names}: classify it"

    # events: the Blocks' backend functions, the same set as the config's dependencies
    deps = w.blocks.get_config_file()["dependencies"]
    assert {d["id"] for d in deps} == set(w.blocks.fns), "blocks.fns and the config's dependencies differ"
    keys: dict[str, list[int]] = {}
    for i, bf in w.blocks.fns.items():
        assert bf.fn is not None, f"event {i} has no backend function (JS only): classify it here"
        keys.setdefault(handler_key(bf), []).append(i)
        for c in bf.inputs:
            t = type(c).__name__
            assert t in PROBED_INPUTS | UNPROBED_INPUTS, (f"event {i} ({handler_key(bf)}) has an input of type {t}: "
                                                          "decide what the tenancy probes put in it")
    unclassified = sorted(set(keys) - set(EVENTS))
    assert not unclassified, (f"Gradio event handlers not classified for tenancy: {unclassified}. Add each to "
                              f"EVENTS in {__file__} with what it returns ({', '.join(KINDS)}); name the inputs "
                              "that select an object in `selects`.")
    assert not sorted(set(EVENTS) - set(keys)), f"EVENTS lists handlers the app no longer has: " \
                                                f"{sorted(set(EVENTS) - set(keys))}"
    for key, ev in EVENTS.items():
        assert ev.kind in KINDS, (key, ev.kind)
        slots = {_slot(c) for i in keys[key] for c in w.blocks.fns[i].inputs}
        for name, kind in ev.selects:
            assert name in slots and kind in OBJECTS, (key, name, kind)
        for name, _ in ev.fill + ev.admin_when:
            assert name in slots, (key, name)
    n_data = sum(len(keys[k]) for k, ev in EVENTS.items() if ev.kind in ("tenant_read", "tenant_write"))
    n_admin = sum(len(keys[k]) for k, ev in EVENTS.items() if ev.kind == "admin_action" or ev.admin_when)
    print(f"\n{len(found)} routes ({len(found) - len(public)} tenant), {len(w.blocks.fns)} events "
          f"({len(keys)} handlers; {n_data} events return or act on tenant data; {n_admin} admin actions)")


def _body(r) -> bytes:
    """A response's bytes, with a zip's members unpacked (deflated bytes would hide a secret)."""
    import io
    import zipfile

    if r.content[:2] == b"PK":
        z = zipfile.ZipFile(io.BytesIO(r.content))
        return r.content + b"".join(z.read(n) for n in z.namelist())
    return r.content


def test_routes_refuse_another_organisations_objects(world):
    w = world
    bob, alice = w.bob.client, w.alice.client
    probed = 0
    for (method, path), (kind, params) in ROUTES.items():
        if kind != "tenant":
            continue
        for name, obj in params.items():
            if obj == "export":
                cands, missing = [w.alice_export], "x" * len(w.alice_export)
            else:  # alice's ids, also spelled as the route's int() parsing would still accept them
                ids, missing = OBJECTS[obj]
                cands = ids + [f"0{v}" for v in ids if isinstance(v, int)] + [f"+{ids[0]}"]

            def url(v):
                return path.replace("{" + name + "}", str(v))
            twin = bob.request(method, url(missing))
            for v in cands:
                r = bob.request(method, url(v))
                probed += 1
                assert r.status_code == 404 and "not found" in r.text, (method, path, v, r.status_code, r.text[:300])
                assert not [s for s in w.secrets if s.encode() in _body(r)], (method, path, v)
                assert (r.status_code, normalise(r.text)) == (twin.status_code, normalise(twin.text)), \
                    f"{path} with alice's {v!r} answers unlike a missing one: {r.text!r} vs {twin.text!r}"
            # the owner gets it: the probe would have seen the object
            own = alice.request(method, url(cands[0]))
            assert own.status_code == 200 and [s for s in w.secrets if s.encode() in _body(own)], \
                (path, own.status_code, own.content[:200])
    assert probed >= 5
    # the public routes answer bob with nothing of alice's (a second session of bob's: /logout ends it)
    c = sign_in(w.bob.client.http, "bob")
    for (method, path), (kind, _) in ROUTES.items():
        if kind != "public":
            continue
        r = c.request(method, path, data={"username": "alice", "password": "wrong-password"}
                      if method == "POST" else None, follow_redirects=False)
        assert r.status_code < 500 and not leaks(w, r.text, sent="alice"), (method, path, r.status_code)


def test_gradio_data_routes(world):
    """Gradio's own routes that return data: the config and API info hold no one's data (the
    Blocks are shared); its file route does not serve the artifact store."""
    w = world
    for path in ("/config", "/gradio_api/info", "/gradio_api/info?all_endpoints=true"):
        r = w.bob.client.get(path)
        assert r.status_code == 200 and not leaks(w, r.text), path
    for p in w.alice_artifact_paths:
        r = w.bob.client.get(f"/gradio_api/file={p}")
        assert r.status_code in (403, 404) and b"q7" not in r.content, (p, r.status_code)


def _slot_candidates(w: World, bf) -> list[tuple[int, Any]]:
    """(input position, value) pairs bob tries: alice's ids in every number/text slot; in every
    dropdown, the values alice's or an admin's page offers that bob's does not (and alice's ids
    when the dropdown holds ids)."""
    out = []
    for pos, c in enumerate(bf.inputs):
        t = type(c).__name__
        if t in UNPROBED_INPUTS:
            continue
        if t == "Number":
            vals = list(ALICE_INTS)
        elif t == "Textbox":
            vals = [str(ALICE_INTS[0])]
        else:
            mine = set(map(repr, w.primed["bob"].get(c._id, [])))
            others = [v for v in w.primed["alice"].get(c._id, []) if repr(v) not in mine]
            others += [v for v in w.primed["admin"].get(c._id, []) if repr(v) not in mine][:2]
            every = w.primed["alice"].get(c._id, []) + w.primed["admin"].get(c._id, []) + \
                w.primed["bob"].get(c._id, [])
            if any(isinstance(v, int) and not isinstance(v, bool) for v in every):
                others += [i for i in ALICE_INTS if i not in others]
            vals = []
            for v in others:
                if repr(v) not in map(repr, vals):
                    vals.append(v)
            multi = t == "CheckboxGroup" or getattr(c, "multiselect", False)
            vals = [[v] for v in vals] if multi else vals
        out += [(pos, v) for v in vals]
    return out


def _bob_base(w: World, bf, ev: Ev) -> list:
    data = w.bob.values(bf)
    for pos, c in enumerate(bf.inputs):
        for name, v in ev.fill:
            if _slot(c) == name:
                data[pos] = copy.deepcopy(v)
    return data


def _upload(page: Page, name: str, data: bytes) -> dict:
    r = page.client.post("/gradio_api/upload", files={"files": (name, data)})
    assert r.status_code == 200, r.text
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def _call_as(page: Page, i: int, data: list) -> Reply:
    """Call event ``i`` with ``data``, its dropdowns first offered the values being sent."""
    for c, v in zip(page.blocks.fns[i].inputs, data):
        if type(c).__name__ in ("Dropdown", "CheckboxGroup"):
            page.offer(c, [v])
    return page.call(i, data)


def test_events_return_nothing_of_another_organisation(world):
    w = world
    before = db_state(w)
    calls, refused = 0, 0
    t0 = time.monotonic()
    swept = set()
    for i, bf in sorted(w.blocks.fns.items()):
        key = handler_key(bf)
        ev = ev_of(bf)
        base = _bob_base(w, bf, ev)
        rep = _call_as(w.bob, i, base)
        calls += 1
        assert not leaks(w, rep.text, base), f"event {i} ({key}) shows bob alice's data: {leaks(w, rep.text)}"
        # another wiring of the same function on the same inputs runs the same server code: its
        # slots are swept once (every wiring is still called above)
        same = (key, tuple(c._id for c in bf.inputs), bf.preprocess, bf.postprocess, bf.batch)
        if same in swept:
            continue
        swept.add(same)
        selects = dict(ev.selects)
        for pos, v in _slot_candidates(w, bf):
            data = list(base)
            data[pos] = v
            rep = _call_as(w.bob, i, data)
            calls += 1
            found = leaks(w, rep.text, data)
            assert not found, \
                f"event {i} ({key}) with {_slot(bf.inputs[pos])}={v!r} shows bob {found}: {rep.text[:600]}"
        # slots that select an object: alice's reads exactly like a missing one, and does nothing
        for pos, c in enumerate(bf.inputs):
            kind = selects.get(_slot(c))
            if kind is None:
                continue
            multi = type(c).__name__ == "CheckboxGroup"
            ids, missing = OBJECTS[kind]
            twin_data = list(base)
            twin_data[pos] = [missing] if multi else missing
            jobs_before = db_state(w)["jobs"]
            twin = _call_as(w.bob, i, twin_data)
            calls += 1
            for v in ids:
                data = list(base)
                data[pos] = [v] if multi else v
                rep = _call_as(w.bob, i, data)
                calls += 1
                refused += 1
                assert "not found" in rep.text, \
                    f"event {i} ({key}): bob's {_slot(c)}={v!r} is not refused: {rep.text[:600]}"
                assert normalise(rep.text) == normalise(twin.text), \
                    f"event {i} ({key}): alice's {_slot(c)}={v!r} answers unlike a missing one:\n{rep.text[:800]}\n" \
                    f"vs\n{twin.text[:800]}"
            assert db_state(w)["jobs"] == jobs_before, f"event {i} ({key}) made a job from a foreign {kind}"

    # alice's objects are as they were: nothing cancelled, retried, re-budgeted
    after = db_state(w)
    for k in ("alice_jobs", "users", "pairs", "promoted", "budgets", "benchmarks", "admin_jobs", "collaborations",
              "members"):
        assert after[k] == before[k], (k, before[k], after[k])
    print(f"\n{calls} event calls as bob ({refused} foreign objects refused) in {time.monotonic() - t0:.1f}s")


def test_owners_see_what_the_probes_look_for(world):
    """Every data-returning handler, called by alice the way bob's probes call it (her own
    page's values, her own object in each selecting slot), shows her data: so the probes above
    would have caught it had bob been shown the same."""
    w = world
    seen = set()
    for i, bf in sorted(w.blocks.fns.items()):
        key = handler_key(bf)
        ev = ev_of(bf)
        if ev.kind != "tenant_read" or key in seen:
            continue
        data = w.alice.values(bf)
        for pos, c in enumerate(bf.inputs):
            kind = dict(ev.selects).get(_slot(c))
            if kind:
                v = OBJECTS[kind][0][0]
                data[pos] = [v] if type(c).__name__ == "CheckboxGroup" else v
        rep = _call_as(w.alice, i, data)
        assert rep.ok and leaks(w, rep.text, data), f"event {i} ({key}) shows alice none of her data: {rep.text[:600]}"
        seen.add(key)
    assert len(seen) == sum(1 for ev in EVENTS.values() if ev.kind == "tenant_read")


def test_a_borrowed_session_hash_reads_no_state(world):
    """gr.State lives on the server keyed by the page's session hash, which the browser picks. Bob
    sending alice's hash (with her page's current values) to every event that reads a State is
    refused at the door (the hash is bound to alice's sign-in, ui.gate), and so is reading her
    event stream by it; and each State value is read only by the user it was made for anyway."""
    w = world
    n = 0
    for i, bf in sorted(w.blocks.fns.items()):
        if not any(c.stateful for c in bf.inputs):
            continue
        data = w.alice.values(bf)
        r = w.bob.client.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": i, "session_hash": w.alice.sh, "event_data": None, "trigger_id": None})
        n += 1
        assert r.status_code == 403 and not leaks(w, r.text, data), (i, handler_key(bf), r.status_code, r.text[:300])
    r = w.bob.client.get("/gradio_api/queue/data", params={"session_hash": w.alice.sh})
    assert r.status_code == 403 and not leaks(w, r.text, []), r.text[:300]
    assert n >= 3
    # while alice's own page still reads her state
    from ui.compare import SESSION

    i_load, i_select = _fn_index(w.blocks, _C + "load"), _fn_index(w.blocks, _C + "select_source")
    w.alice.call(i_load, w.alice.values(w.blocks.fns[i_load]))  # (bob's calls reset her page's choices)
    data = w.alice.values(w.blocks.fns[i_select])
    data[0] = SESSION
    rep = w.alice.call(i_select, data)
    assert "orga/session-task-q7" in rep.text, rep.text[:400]


ADMIN_FILL = {"admin-org": ORG_B, "admin-username": "mallory", "admin-password": "password123",
              "admin-role": "admin", "Username to enable/disable": "alice", "Seeds": "0",
              "admin-zoo-preset": "micro", "admin-train-kind": "gt", "Name (default: the folder's)": "stolen",
              "On the model pair above (else the preset's own zoo)": True}


def test_members_cannot_start_admin_jobs_or_actions(world):
    w = world
    before = db_state(w)
    # what an admin's page would send: the admin page's values, with every required field filled
    n = 0
    for i, bf in sorted(w.blocks.fns.items()):
        ev = ev_of(bf)
        if ev.kind != "admin_action" and not ev.admin_when:
            continue
        data = w.admin.values(bf)
        offers = []
        for pos, c in enumerate(bf.inputs):
            name, t = _slot(c), type(c).__name__
            admin_has = w.primed["admin"].get(c._id, [])
            if name in ADMIN_FILL:
                data[pos] = ADMIN_FILL[name]
            elif t == "Dropdown" and data[pos] in (None, "", []) and admin_has:
                data[pos] = [admin_has[0]] if getattr(c, "multiselect", False) else admin_has[0]
            elif t == "File":
                data[pos] = "UPLOAD"  # a fresh upload per call (the handler deletes it)
            for n_, v in ev.admin_when:
                if name == n_:
                    data[pos] = v
            if t in ("Dropdown", "CheckboxGroup"):
                offers.append((c, admin_has))
        for c, vals in offers:
            w.bob.offer(c, vals)
        for who in (w.bob, w.alice):
            sent = [_upload(who, "results.json", _secret_rows("t/x")) if v == "UPLOAD" else v for v in data]
            rep = _call_as(who, i, sent)
            n += 1
            assert any(r in rep.text for r in ADMIN_REFUSAL), \
                f"event {i} ({handler_key(bf)}) as a member is not refused for the role: {rep.text[:600]}"
            assert db_state(w) == before, f"event {i} ({handler_key(bf)}) as a member changed something"
    assert n >= 2 * 10
    # a member of the admin's own organisation sees its admin jobs in the Jobs tab; no event that
    # takes a job (retry above all) starts an admin job from one
    for i, bf in sorted(w.blocks.fns.items()):
        ev = ev_of(bf)
        for pos, c in enumerate(bf.inputs):
            if dict(ev.selects).get(_slot(c)) == "job":
                data = w.pete.values(bf)
                data[pos] = ADMIN_JOB
                rep = w.pete.call(i, data)
                assert db_state(w) == before, f"event {i} ({handler_key(bf)}) let a member restart an admin job"
                if handler_key(bf) == _J + "on_retry":
                    assert "for admins only" in rep.text, rep.text[:400]
    # members' admin reads (with an admin page's values) come back empty
    for i, bf in sorted(w.blocks.fns.items()):
        if ev_of(bf).kind == "admin_read":
            data = w.admin.values(bf)
            rep = _call_as(w.bob, i, data)
            assert "mallory" not in rep.text and "alice" not in rep.text and ORG_A not in rep.text, rep.text[:400]
