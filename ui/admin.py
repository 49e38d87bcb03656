"""Admin tab (shown to admins only; every handler also checks the role server-side):
organisations and users, model pairs and their recipes (register a zoo folder found under
``zoo_dir``), shadow-pair generation and mapper (re)training jobs, mapper versions with
their validation numbers, and promotion of one version per pair."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from ui.common import choices, first, guarded, status, table, when_open
from ui.service import Service, _num
from gtapp.choices import BENCH_PRESETS, MAPPER_KINDS, ZOO_PRESETS



def _int_or_none(v: Any):
    f = _num(v)
    return int(f) if f is not None and f == int(f) else None

USER_COLUMNS = [("id", "id"), ("username", "username"), ("org", "organisation"), ("role", "role"),
                ("active", "active"), ("can_sign_in", "has password"), ("created", "created")]
PAIR_COLUMNS = [("id", "id"), ("name", "name"), ("fingerprint", "recipe"), ("tiny", "TinyLM LoRA"),
                ("llm", "LLM LoRA"), ("created", "registered")]
PAIRSET_COLUMNS = [("id", "id"), ("name", "name"), ("pairs", "pairs"), ("runs", "runs"), ("tasks", "tasks"),
                   ("job_id", "job"), ("created", "created")]
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
    return (f"Build a zoo pair with a `zoo` job below (or `gtapp zoo build --preset micro|ci|demo --out "
            f"{svc.settings.zoo_root}/<name>` on the server); it lands under the zoo folder (setting `zoo_dir`) "
            "and can then be registered.")


def _int_list(text: str, what: str) -> list[int]:
    parts = [p.strip() for p in (text or "").replace(";", ",").split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas") from None


def provider_params(kind: str, pair_id: Any, fields: dict, extra_text: str) -> dict:
    """A provider job's parameters: the form's fields, then the JSON box's keys on top (any
    parameter of the kind; the job API refuses unknown ones, naming the accepted ones)."""
    params = {k: v for k, v in fields.items() if v is not None}
    if pair_id not in (None, ""):
        params["pair_id"] = int(pair_id)
    extra = parse_config(extra_text)
    if extra:
        params.update(extra)
    return params


def submit_provider_job(svc: Service, request, kind: str, params: dict) -> str:
    who = svc.who(request)
    svc.require_admin(who)
    job_id = svc.submit(who, kind, params)
    return status(True, f"{kind} job {job_id} queued; follow it in the Jobs tab")


def learning_curve_figure(curve):
    """Held-out relative error against shadow pairs, one line per mapper, held-out tasks solid and
    held-out runs dotted, 95 % intervals as error bars; where the GT crosses ridge in the title."""
    import plotly.graph_objects as go

    from ui.charts import LAYOUT, colour, empty_figure

    if not curve or not curve.get("points"):
        return empty_figure("Learning curve", "this mapper version has no learning curve (tick 'Learning curve "
                                              "first' when training)")
    fig = go.Figure()
    labels = sorted({p["label"] for p in curve["points"]})
    for label in labels:
        pts = sorted((p for p in curve["points"] if p["label"] == label), key=lambda p: p["pairs"])
        for where, dash in (("held_out_tasks", "solid"), ("held_out_runs", "dot")):
            ys = [p[where]["rel_err"] for p in pts]
            lo = [p[where]["ci95"][0] for p in pts]
            hi = [p[where]["ci95"][1] for p in pts]
            fig.add_trace(go.Scatter(
                x=[p["pairs"] for p in pts], y=ys, mode="lines+markers", name=f"{label} ({where.replace('_', ' ')})",
                line={"dash": dash, "color": colour({"gt": "gt", "ridge": "ridge", "mean": "mean_shadow"}.get(
                    label, label))},
                error_y={"type": "data", "symmetric": False, "array": [h - y for h, y in zip(hi, ys)],
                         "arrayminus": [y - lw for y, lw in zip(ys, lo)]}))
    cross = curve.get("crossing") or {}
    where = (f"GT below ridge on held-out tasks from {cross['first_below_at_pairs']} pairs"
             if cross.get("first_below_at_pairs") else "GT not below ridge on held-out tasks at any size")
    fig.update_layout(**{**LAYOUT, "title": {"text": f"Learning curve: {where}"}, "xaxis_title": "shadow pairs",
                         "xaxis_type": "log", "yaxis_title": "relative error of the LLM update (lower is better)"})
    return fig


def card_summary(card: dict) -> str:
    """A mapper version's model card in a few lines: its pair set, its OOD reference and what to
    watch for (gtapp.ood.card_warnings)."""
    from gtapp.ood import card_warnings  # pure Python

    if not card:
        return "*No model card recorded for this version.*"
    ps, ood, val = card.get("pair_set") or {}, card.get("ood") or {}, card.get("validation") or {}
    tasks = ood.get("shadow_tasks")
    lines = [f"**{card.get('kind', '?')}** on {ps.get('n_pairs', '?')} pairs from {ps.get('n_runs', '?')} runs"
             + (f" of {tasks} shadow tasks" if tasks is not None else "")]
    if isinstance(val.get("rel_err_mean"), (int, float)):
        lines.append(f"validation runs: relative error {val['rel_err_mean']:.3f} (the mean shadow update: "
                     f"{(card.get('validation_mean_baseline') or {}).get('rel_err_mean', float('nan')):.3f})")
    lines += [f"⚠ {w}" for w in card_warnings(card)]
    return "\n\n".join(lines)


def build_admin_tab(svc: Service, demo):
    with gr.Tab("Admin", id="admin", visible=False) as tab:
        refresh = gr.Button("Refresh", size="sm", elem_id="admin-refresh")
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
            with gr.Row():
                z_preset = gr.Dropdown(label="Build a zoo pair: preset", choices=list(ZOO_PRESETS),
                                       value="ci", elem_id="admin-zoo-preset")
                z_name = gr.Textbox(label="Name (default: <preset>-s<seed>)", max_length=64)
                z_seed = gr.Number(label="Seed", value=0, precision=0)
                z_build = gr.Button("Build and register", elem_id="admin-zoo-build")
        with gr.Accordion("Shadow pairs, mapper training and the benchmark", open=True):
            job_pair = gr.Dropdown(label="Model pair", choices=[], elem_id="admin-job-pair")
            gr.Markdown("**Shadow-pair generation**: for each task × bootstrap subset × seed, fine-tune the pair's "
                        "TinyLM and LLM on the same public examples; every snapshot gives a (ΔTiny, ΔLLM) pair.")
            with gr.Row():
                sh_tasks = gr.Dropdown(label="Shadow tasks", choices=[], multiselect=True, scale=3,
                                       elem_id="admin-shadow-tasks")
                sh_subsets = gr.Number(label="Subsets", value=4, precision=0, scale=1)
                sh_size = gr.Number(label="Subset size", value=64, precision=0, scale=1)
                sh_steps = gr.Number(label="Steps", value=40, precision=0, scale=1)
                sh_seeds = gr.Textbox(label="Seeds", value="0", scale=1)
            with gr.Row():
                sh_extra = gr.Textbox(label="More parameters (JSON object, optional)", lines=1, scale=3,
                                      placeholder='{"snapshot_steps": [20, 30], "n_train": 512}',
                                      elem_id="admin-shadow-extra")
                shadow = gr.Button("Start shadow-pair generation", scale=1, elem_id="admin-shadow")
            pair_sets = gr.Dataframe(table([], PAIRSET_COLUMNS), label="Pair sets", interactive=False,
                                     elem_id="admin-pair-sets")
            gr.Markdown("**Mapper (re)training** on a pair set (split by run; validation numbers land on the "
                        "mapper version).")
            with gr.Row():
                tm_set = gr.Dropdown(label="Pair set (default: the pair's newest)", choices=[], scale=2,
                                     elem_id="admin-train-set")
                tm_kind = gr.Dropdown(label="Mapper kind", choices=list(MAPPER_KINDS), value=MAPPER_KINDS[0], scale=1,
                                      elem_id="admin-train-kind")
                tm_promote = gr.Checkbox(label="Promote when trained", value=False, scale=1)
                tm_curve = gr.Checkbox(label="Learning curve first (mean, ridge and it at 100/400/1600/all pairs)",
                                       value=False, scale=1, elem_id="admin-train-curve")
            with gr.Row():
                cfg = gr.Textbox(label="Mapper settings (JSON object, optional)", placeholder='{"epochs": 200}',
                                 lines=1, scale=3, elem_id="admin-job-config")
                train = gr.Button("Start mapper (re)training", scale=1, elem_id="admin-train")
            gr.Markdown("**Benchmark** (`gtapp bench` as a job): its results JSON appears in the Compare tab.")
            with gr.Row():
                b_preset = gr.Dropdown(label="Preset", choices=list(BENCH_PRESETS), value=BENCH_PRESETS[0], scale=1)
                b_on_pair = gr.Checkbox(label="On the model pair above (else the preset's own zoo)", value=False,
                                        scale=2)
                b_record = gr.Checkbox(label="Also record rows as evaluations", value=False, scale=2)
                bench = gr.Button("Start benchmark", scale=1, elem_id="admin-bench")
            job_msg = gr.Markdown(elem_id="admin-job-status")
        with gr.Accordion("Mapper versions", open=True):
            mappers = gr.Dataframe(table([], MAPPER_COLUMNS), interactive=False, elem_id="admin-mappers")
            with gr.Row():
                mapper_pick = gr.Dropdown(label="Mapper version", choices=[], elem_id="admin-mapper-pick")
                promote = gr.Button("Promote", variant="primary", elem_id="admin-promote")
            mapper_msg = gr.Markdown(elem_id="admin-mapper-status")
            card_md = gr.Markdown(elem_id="admin-mapper-card")
            curve_plot = gr.Plot(label="Learning curve of the chosen version (from its model card)",
                                 elem_id="admin-learning-curve")

    overview_outputs = [users, pairs, mappers, recipe_pair, zoo_folder, mapper_pick, job_pair, zoo_md, sh_tasks,
                        pair_sets, tm_set]

    def overview(cur_pair, cur_mapper, cur_job_pair, request: gr.Request):
        who = svc.who(request)
        if not who.is_admin:
            return tuple(gr.skip() for _ in overview_outputs)
        from gtapp.tasks import task_names  # pure Python

        u, p, m, pc, zc, mc = admin_overview(svc, request)
        pv, jp = first(pc, cur_pair), first(pc, cur_job_pair)
        sets = svc.list_pair_sets(jp) if jp is not None else []
        return (u, p, m, gr.Dropdown(choices=pc, value=pv), gr.Dropdown(choices=zc, value=zc[0] if zc else None),
                gr.Dropdown(choices=mc, value=first(mc, cur_mapper)), gr.Dropdown(choices=pc, value=jp),
                zoo_note(svc, who), gr.Dropdown(choices=task_names()), table(sets, PAIRSET_COLUMNS),
                gr.Dropdown(choices=[("(newest)", "")] + choices(sets, lambda x: f"{x['name']} (id {x['id']}, "
                                                                                  f"{x['pairs']} pairs)"), value=""))

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

    @guarded(pair_msg)
    def on_zoo_build(preset, name, seed, request: gr.Request):
        params = {"preset": preset, "name": (name or "").strip() or None, "seed": int(seed or 0)}
        return submit_provider_job(svc, request, "zoo", params)

    def on_recipe(pid, request: gr.Request):
        who = svc.who(request)
        if not who.is_admin or pid in (None, ""):
            return None
        return svc.get_pair(int(pid))["recipe"]

    @guarded(job_msg)
    def on_shadow(pid, tasks, subsets, size, steps, seeds, extra, request: gr.Request):
        if pid in (None, ""):
            raise ValueError("choose a model pair")
        fields = {"tasks": list(tasks or []), "subsets": _int_or_none(subsets), "subset_size": _int_or_none(size),
                  "steps": _int_or_none(steps), "seeds": _int_list(seeds, "seeds") or None}
        return submit_provider_job(svc, request, "shadow", provider_params("shadow", pid, fields, extra))

    @guarded(job_msg)
    def on_train(pid, set_id, kind, promote_it, c, with_curve, request: gr.Request):
        if pid in (None, "") and set_id in (None, ""):
            raise ValueError("choose a model pair or a pair set")
        params = {"kind": kind, "promote": bool(promote_it), "config": parse_config(c) or {},
                  "learning_curve": bool(with_curve)}
        if set_id not in (None, ""):
            params["pair_set_id"] = int(set_id)
        else:
            params["pair_id"] = int(pid)
        return submit_provider_job(svc, request, "train_mapper", params)

    @guarded(job_msg)
    def on_bench(pid, preset, on_pair, record, request: gr.Request):
        params = {"preset": preset, "record_evaluations": bool(record)}
        if on_pair:
            if pid in (None, ""):
                raise ValueError("choose a model pair (or untick 'on the model pair above')")
            params["pair_id"] = int(pid)
        return submit_provider_job(svc, request, "bench", params)

    @guarded(mapper_msg)
    def on_promote(mid, request: gr.Request):
        if mid in (None, ""):
            raise ValueError("choose a mapper version")
        return status(True, svc.promote(svc.who(request), int(mid)))

    def chain(event):
        return event.then(overview, [recipe_pair, mapper_pick, job_pair], overview_outputs, api_name=False)

    demo.load(visible, outputs=tab, api_name=False)
    demo.load(when_open("admin", overview, len(overview_outputs)), [recipe_pair, mapper_pick, job_pair],
              overview_outputs, api_name=False)
    chain(tab.select(lambda: None, api_name=False))
    chain(refresh.click(lambda: None, api_name=False))
    chain(create.click(on_create, [org, uname, pw, role], user_msg, api_name="admin_create_user"))
    chain(enable.click(on_enable, toggle_user, user_msg, api_name=False))
    chain(disable.click(on_disable, toggle_user, user_msg, api_name=False))
    chain(register.click(on_register, [zoo_folder, pair_name], pair_msg, api_name="admin_register_pair"))
    chain(z_build.click(on_zoo_build, [z_preset, z_name, z_seed], pair_msg, api_name="admin_build_zoo"))
    recipe_pair.change(on_recipe, recipe_pair, recipe, api_name=False)
    shadow.click(on_shadow, [job_pair, sh_tasks, sh_subsets, sh_size, sh_steps, sh_seeds, sh_extra], job_msg,
                 api_name="admin_shadow")
    train.click(on_train, [job_pair, tm_set, tm_kind, tm_promote, cfg, tm_curve], job_msg,
                api_name="admin_train_mapper")

    def on_mapper(mid, request: gr.Request):
        if not svc.who(request).is_admin or mid in (None, ""):
            return learning_curve_figure(None), ""
        card = svc.mapper_card(int(mid))
        return learning_curve_figure(card.get("learning_curve")), card_summary(card)

    mapper_pick.change(on_mapper, mapper_pick, [curve_plot, card_md], api_name=False)
    bench.click(on_bench, [job_pair, b_preset, b_on_pair, b_record], job_msg, api_name="admin_bench")
    chain(job_pair.input(lambda: None, api_name=False))
    chain(promote.click(on_promote, mapper_pick, mapper_msg, api_name="admin_promote"))
    return tab
