"""Admin tab (shown to admins only; every handler also checks the role server-side):
organisations and users, model pairs and their recipes (register a zoo folder found under
``zoo_dir``), shadow-pair generation and mapper (re)training jobs, mapper versions with
their validation numbers, and promotion of one version per pair."""

from __future__ import annotations

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

import json
from typing import Any

from ui.common import choices, first, guarded, status, table
from ui.service import Service

USER_COLUMNS = [("id", "id"), ("username", "username"), ("org", "organisation"), ("role", "role"),
                ("active", "active"), ("can_sign_in", "has password"), ("created", "created")]
PAIR_COLUMNS = [("id", "id"), ("name", "name"), ("fingerprint", "recipe"), ("tiny", "TinyLM LoRA"),
                ("llm", "LLM LoRA"), ("created", "registered")]
MAPPER_COLUMNS = [("id", "id"), ("pair", "pair"), ("version", "version"), ("kind", "kind"),
                  ("promoted", "promoted"), ("metrics_text", "validation"), ("job_id", "job"), ("created", "created")]


def parse_config(text: str) -> Any:
    text = (text or "").strip()
    if not text:
        return None
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the config is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError("the config must be a JSON object, e.g. {\"n_runs\": 10}")
    return cfg


def admin_overview(svc: Service, request) -> tuple:
    who = svc.who(request)
    svc.require_admin(who)
    pairs = svc.list_pairs()
    cands = [c for c in svc.zoo_candidates() if not c["registered"]]
    mappers = svc.list_mappers()
    return (table(svc.list_users(who), USER_COLUMNS), table(pairs, PAIR_COLUMNS), table(mappers, MAPPER_COLUMNS),
            choices(pairs, lambda p: f"{p['name']} (id {p['id']})"), [c["name"] for c in cands],
            choices(mappers, lambda m: f"{m['pair']} v{m['version']} {m['kind']} (id {m['id']})"
                                       + (" ★" if m["promoted"] else "")))


def zoo_note(svc: Service, who) -> str:
    kinds = svc.job_kinds(who)
    where = svc.settings.zoo_root
    if "zoo" in kinds and kinds["zoo"]["wired"]:
        return f"Build a zoo pair with a `zoo` job below; it lands in `{where}` and can then be registered."
    return (f"Zoo folders are looked for under `{where}` (setting `zoo_dir`). To build one, run "
            f"`gtapp zoo build --preset micro|ci|demo --out {where}/<name>` on the server; it then appears in the "
            "list above (this version has no `zoo` job kind).")


def submit_provider_job(svc: Service, request, kind: str, pair_id: Any, config_text: str) -> str:
    who = svc.who(request)
    svc.require_admin(who)
    if pair_id in (None, ""):
        raise ValueError("choose a model pair")
    params = {"pair_id": int(pair_id), "config": parse_config(config_text)}
    job_id = svc.submit(who, kind, params)
    return status(True, f"{kind} job {job_id} queued; follow it in the Jobs tab")


def build_admin_tab(svc: Service, demo):
    with gr.Tab("Admin", id="admin", visible=False) as tab:
        refresh = gr.Button("Refresh", size="sm")
        with gr.Accordion("Organisations and users", open=True):
            users = gr.Dataframe(table([], USER_COLUMNS), interactive=False, elem_id="admin-users")
            with gr.Row():
                org = gr.Textbox(label="Organisation (created if new)", max_length=100, elem_id="admin-org")
                uname = gr.Textbox(label="Username", max_length=100, elem_id="admin-username")
                pw = gr.Textbox(label="Password (8+ characters)", type="password", elem_id="admin-password")
                role = gr.Dropdown(label="Role", choices=["member", "admin"], value="member", elem_id="admin-role")
            with gr.Row():
                create = gr.Button("Create user", variant="primary", elem_id="admin-create-user")
                toggle_user = gr.Textbox(label="Username to enable/disable", max_length=100, scale=2)
                enable = gr.Button("Enable", size="sm")
                disable = gr.Button("Disable", size="sm", variant="stop")
            user_msg = gr.Markdown(elem_id="admin-user-status")
        with gr.Accordion("Model pairs and recipes", open=True):
            pairs = gr.Dataframe(table([], PAIR_COLUMNS), interactive=False, elem_id="admin-pairs")
            with gr.Row():
                recipe_pair = gr.Dropdown(label="Show the recipe of", choices=[], elem_id="admin-recipe-pair")
                zoo_folder = gr.Dropdown(label="Unregistered zoo folder", choices=[], elem_id="admin-zoo-folder")
                pair_name = gr.Textbox(label="Name (default: the folder's)", max_length=200)
                register = gr.Button("Register pair", elem_id="admin-register")
            pair_msg = gr.Markdown(elem_id="admin-pair-status")
            recipe = gr.JSON(label="Recipe (TinyLM and LLM)", elem_id="admin-recipe")
            zoo_md = gr.Markdown()
        with gr.Accordion("Shadow pairs and mapper training", open=True):
            with gr.Row():
                job_pair = gr.Dropdown(label="Model pair", choices=[], elem_id="admin-job-pair")
                cfg = gr.Textbox(label="Config (JSON object, optional)", placeholder='{"n_runs": 30}', lines=2,
                                 elem_id="admin-job-config")
            with gr.Row():
                shadow = gr.Button("Start shadow-pair generation", elem_id="admin-shadow")
                train = gr.Button("Start mapper (re)training", elem_id="admin-train")
            job_msg = gr.Markdown(elem_id="admin-job-status")
        with gr.Accordion("Mapper versions", open=True):
            mappers = gr.Dataframe(table([], MAPPER_COLUMNS), interactive=False, elem_id="admin-mappers")
            with gr.Row():
                mapper_pick = gr.Dropdown(label="Mapper version", choices=[], elem_id="admin-mapper-pick")
                promote = gr.Button("Promote", variant="primary", elem_id="admin-promote")
            mapper_msg = gr.Markdown(elem_id="admin-mapper-status")

    overview_outputs = [users, pairs, mappers, recipe_pair, zoo_folder, mapper_pick, job_pair, zoo_md]

    def overview(cur_pair, cur_mapper, request: gr.Request):
        who = svc.who(request)
        if not who.is_admin:
            return tuple(gr.skip() for _ in overview_outputs)
        u, p, m, pc, zc, mc = admin_overview(svc, request)
        pv = first(pc, cur_pair)
        return (u, p, m, gr.Dropdown(choices=pc, value=pv), gr.Dropdown(choices=zc, value=zc[0] if zc else None),
                gr.Dropdown(choices=mc, value=first(mc, cur_mapper)), gr.Dropdown(choices=pc, value=pv),
                zoo_note(svc, who))

    def visible(request: gr.Request):
        try:
            return gr.Tab(visible=svc.who(request).is_admin)
        except PermissionError:
            return gr.Tab(visible=False)

    @guarded(user_msg)
    def on_create(o, u, p, r, request: gr.Request):
        return status(True, svc.create_user(svc.who(request), o, u, p, r))

    @guarded(user_msg)
    def on_enable(u, request: gr.Request):
        return status(True, svc.set_active(svc.who(request), (u or "").strip(), True))

    @guarded(user_msg)
    def on_disable(u, request: gr.Request):
        return status(True, svc.set_active(svc.who(request), (u or "").strip(), False))

    @guarded(pair_msg)
    def on_register(folder, name, request: gr.Request):
        if not folder:
            raise ValueError("no unregistered zoo folder to register")
        return status(True, svc.register_zoo_pair(svc.who(request), folder, name))

    def on_recipe(pid, request: gr.Request):
        who = svc.who(request)
        if not who.is_admin or pid in (None, ""):
            return None
        return svc.get_pair(int(pid))["recipe"]

    @guarded(job_msg)
    def on_shadow(pid, c, request: gr.Request):
        return submit_provider_job(svc, request, "shadow", pid, c)

    @guarded(job_msg)
    def on_train(pid, c, request: gr.Request):
        return submit_provider_job(svc, request, "train_mapper", pid, c)

    @guarded(mapper_msg)
    def on_promote(mid, request: gr.Request):
        if mid in (None, ""):
            raise ValueError("choose a mapper version")
        return status(True, svc.promote(svc.who(request), int(mid)))

    def chain(event):
        return event.then(overview, [recipe_pair, mapper_pick], overview_outputs, api_name=False)

    demo.load(visible, outputs=tab, api_name=False)
    chain(demo.load(lambda: None, api_name=False))
    chain(tab.select(lambda: None, api_name=False))
    chain(refresh.click(lambda: None, api_name=False))
    chain(create.click(on_create, [org, uname, pw, role], user_msg, api_name="admin_create_user"))
    chain(enable.click(on_enable, toggle_user, user_msg, api_name=False))
    chain(disable.click(on_disable, toggle_user, user_msg, api_name=False))
    chain(register.click(on_register, [zoo_folder, pair_name], pair_msg, api_name="admin_register_pair"))
    recipe_pair.change(on_recipe, recipe_pair, recipe, api_name=False)
    shadow.click(on_shadow, [job_pair, cfg], job_msg, api_name="admin_shadow")
    train.click(on_train, [job_pair, cfg], job_msg, api_name="admin_train_mapper")
    chain(promote.click(on_promote, mapper_pick, mapper_msg, api_name="admin_promote"))
    return tab
