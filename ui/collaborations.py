"""The Collaborations tab: several organisations pool one TinyLM adapter each into one LLM
adapter (storage.collaborations holds the rules; ui.service.collaborations the calls)."""

from __future__ import annotations

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here

from gtapp.choices import COMBINE_METHODS, ORGANISATIONS
from storage.collaborations import WEIGHTINGS
from ui.common import choices, first, guarded, md_escape, status, table, when_open
from ui.service import Service

LIST_COLUMNS = (("id", "id"), ("name", "name"), ("status", "status"), ("your_state", "your organisation"),
                ("contributions", "contributions"), ("method", "combining"))
EVENT_COLUMNS = (("at", "when"), ("org", "organisation"), ("action", "what"), ("detail", "detail"))
PRIVACY_NOTE = ("Privacy: with respect to each member's data, the combined adapter keeps that member's own (ε, δ), "
                "by post-processing (the members' datasets are disjoint; combining and mapping touch no data). A "
                "member without DP has no guarantee.")


def collab_markdown(c: dict) -> str:
    """A collaboration as its member sees it: members and whether each contributed (never what)."""
    lines = [f"**{md_escape(c['name'])}** (id {c['id']}) · **{c['status']}** · model pair {c['pair_id']} · "
             f"{c['organisation']} / {c['method']} · weighting {c['weighting']} · created by "
             f"{md_escape(c['created_by'] or '?')}"]
    for m in c["members"]:
        you = " (you)" if m["you"] else ""
        lines.append(f"- {md_escape(m['org'] or '?')}{you}: {m['state']}"
                     + (" · contributed" if m["contributed"] else ""))
    own = c.get("your_contribution")
    if own:
        lines.append(f"\nYour contribution: adapter {own['adapter_id']} ({md_escape(own['name'] or '')})"
                     + (f", weight {own['weight']:g}" if own.get("weight") else "")
                     + ". Other members see only that your organisation contributed.")
    res = c.get("result")
    if res:
        lines.append(f"\n**Result**: LLM adapter {res['adapter_id']} (download it on the Generate tab) · "
                     f"{res.get('flagged_out_of_distribution', 0)} contribution(s) flagged out of distribution")
        for x in res.get("contributors", []):
            eps = f"ε={x['epsilon']:g}" if x.get("epsilon") is not None else "no DP"
            lines.append(f"- {md_escape(x['org'] or '?')}: weight {x['weight']:.3g}, {eps}")
        lines.append("\n" + PRIVACY_NOTE)
    lines.append("\nThe benchmark's 3-client rows (Compare tab, clients = 3) measure what a collaboration does.")
    return "\n".join(lines)


def build_collaborations_tab(svc: Service, demo):
    with gr.Tab("Collaborations", id="collaborations") as tab:
        gr.Markdown("Pool TinyLM adapters of several organisations into **one LLM adapter** without sharing data. "
                    "Create a collaboration and invite organisations by name; each accepts or declines, then "
                    "contributes one of its own TinyLM adapters — which no other member can see. The creator "
                    "starts the run; every contributing member receives the result.")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Create")
                name = gr.Textbox(label="Name", max_length=200, elem_id="col-name")
                pair = gr.Dropdown(label="Model pair", choices=[], elem_id="col-pair")
                invite = gr.Textbox(label="Invite organisations (names, comma-separated)", elem_id="col-invite")
                with gr.Row():
                    organisation = gr.Dropdown(label="Organisation", choices=list(ORGANISATIONS),
                                               value=ORGANISATIONS[0], elem_id="col-organisation")
                    method = gr.Dropdown(label="Combine (median / clip resist a hostile member)",
                                         choices=list(COMBINE_METHODS), value=COMBINE_METHODS[0], elem_id="col-method")
                    weighting = gr.Dropdown(label="Weighting", choices=list(WEIGHTINGS), value=WEIGHTINGS[0],
                                            elem_id="col-weighting")
                create = gr.Button("Create collaboration", variant="primary", elem_id="col-create")
                create_msg = gr.Markdown(elem_id="col-create-status")
            with gr.Column():
                gr.Markdown("### Your collaborations")
                listing = gr.Dataframe(table([], LIST_COLUMNS), interactive=False, elem_id="col-list")
                with gr.Row():
                    pick = gr.Dropdown(label="Collaboration", choices=[], elem_id="col-pick", scale=4)
                    reload = gr.Button("Refresh", size="sm", scale=1, elem_id="col-refresh")
                detail = gr.Markdown(elem_id="col-detail")
                with gr.Row():
                    accept = gr.Button("Accept", size="sm", elem_id="col-accept")
                    decline = gr.Button("Decline", size="sm", elem_id="col-decline")
                    withdraw = gr.Button("Withdraw", size="sm", elem_id="col-withdraw")
                    start = gr.Button("Start the run", size="sm", variant="primary", elem_id="col-start")
                with gr.Row():
                    adapter = gr.Dropdown(label="Contribute one of your TinyLM adapters", choices=[],
                                          elem_id="col-adapter")
                    weight = gr.Number(label="Weight (weighting 'given')", value=None, elem_id="col-weight")
                    contribute = gr.Button("Contribute", size="sm", elem_id="col-contribute")
                action_msg = gr.Markdown(elem_id="col-action-status")
                events = gr.Dataframe(table([], EVENT_COLUMNS), label="Audit log (every member reads it)",
                                      interactive=False, elem_id="col-events")

    def refresh(current, request: gr.Request):
        who = svc.who(request)
        rows = svc.list_collaborations(who)
        opts = choices(rows, lambda r: f"{r['name']} (id {r['id']}, {r['status']})")
        pc = choices(svc.list_pairs(), lambda p: f"{p['name']} (id {p['id']})")
        return (table(rows, LIST_COLUMNS), gr.Dropdown(choices=opts, value=first(opts, current)),
                gr.Dropdown(choices=pc, value=first(pc)))

    @guarded(detail, n_outputs=3)
    def show(cid, request: gr.Request):
        who = svc.who(request)
        if cid in (None, ""):
            return "Create a collaboration, or wait for an invitation.", table([], EVENT_COLUMNS), gr.Dropdown()
        c = svc.collaboration(who, cid)
        ads = svc.list_adapters(who, model="tiny", pair_id=c["pair_id"], own_only=True)
        opts = choices(ads, lambda a: f"{a['name']} (id {a['id']})")
        return (collab_markdown(c), table(svc.collaboration_events(who, cid), EVENT_COLUMNS),
                gr.Dropdown(choices=opts, value=first(opts)))

    @guarded(create_msg)
    def on_create(nm, p, inv, org, meth, wt, request: gr.Request):
        c = svc.create_collaboration(svc.who(request), nm, p, inv, organisation=org, method=meth, weighting=wt)
        return status(True, f"collaboration '{c['name']}' (id {c['id']}) created; "
                            f"{len(c['members']) - 1} organisation(s) invited")

    @guarded(action_msg)
    def on_accept(cid, request: gr.Request):
        return status(True, svc.answer_invitation(svc.who(request), cid, True))

    @guarded(action_msg)
    def on_decline(cid, request: gr.Request):
        return status(True, svc.answer_invitation(svc.who(request), cid, False))

    @guarded(action_msg)
    def on_withdraw(cid, request: gr.Request):
        return status(True, svc.withdraw(svc.who(request), cid))

    @guarded(action_msg)
    def on_contribute(cid, aid, w, request: gr.Request):
        return status(True, svc.contribute(svc.who(request), cid, aid, w))

    @guarded(action_msg)
    def on_start(cid, request: gr.Request):
        job_id = svc.start_collaboration(svc.who(request), cid)
        return status(True, f"collaboration run started as job {job_id}; follow it in the Jobs tab")

    outs = [listing, pick, pair]
    shown = [detail, events, adapter]
    demo.load(when_open("collaborations", refresh, len(outs)), pick, outs, api_name=False)
    tab.select(refresh, pick, outs, api_name=False)
    pick.change(show, pick, shown, api_name=False)
    reload.click(show, pick, shown, api_name=False).then(refresh, pick, outs, api_name=False)
    create.click(on_create, [name, pair, invite, organisation, method, weighting], create_msg,
                 api_name="create_collaboration").then(refresh, pick, outs, api_name=False)
    for btn, fn, inputs, api in ((accept, on_accept, [pick], "collab_accept"),
                                 (decline, on_decline, [pick], "collab_decline"),
                                 (withdraw, on_withdraw, [pick], "collab_withdraw"),
                                 (contribute, on_contribute, [pick, adapter, weight], "collab_contribute"),
                                 (start, on_start, [pick], "collab_start")):
        btn.click(fn, inputs, action_msg, api_name=api).then(show, pick, shown, api_name=False) \
            .then(refresh, pick, outs, api_name=False)
    return tab
