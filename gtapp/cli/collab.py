"""``gtapp collab``: collaborations across organisations, as on the Collaborations tab.

    gtapp collab create "three shops" --pair 1 --invite globex,initech [--method median]
    gtapp collab list
    gtapp collab show 3                 # members, states, your contribution, the result; --events
    gtapp collab accept 3 | decline 3 | withdraw 3
    gtapp collab contribute 3 --adapter 12 [--weight 2]
    gtapp collab start 3 [--wait]

Acts as ``--user`` (default: GTAPP_CLI_USER, else the first admin), through the same rules
as the dashboard (storage.collaborations): an outsider is told a collaboration does not exist,
and no member ever sees another's contribution.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("collab", help="collaborations: several organisations pool TinyLM adapters",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--user", default=None, help="act as this user (default: GTAPP_CLI_USER, else the first admin)")
    csub = p.add_subparsers(dest="collab_command", required=True)
    c = csub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--pair", type=int, required=True, help="model pair id")
    c.add_argument("--invite", required=True, help="organisation names, comma-separated")
    c.add_argument("--mapper", type=int, default=None, help="mapper version id (default: the promoted one)")
    c.add_argument("--organisation", default="average_then_map", choices=["average_then_map", "map_then_average"])
    c.add_argument("--method", default="mean", choices=["mean", "median", "clip"])
    c.add_argument("--weighting", default="data_size", choices=["data_size", "equal", "given"])
    csub.add_parser("list")
    s = csub.add_parser("show")
    s.add_argument("id", type=int)
    s.add_argument("--events", action="store_true", help="also the audit log")
    for name in ("accept", "decline", "withdraw"):
        csub.add_parser(name).add_argument("id", type=int)
    k = csub.add_parser("contribute")
    k.add_argument("id", type=int)
    k.add_argument("--adapter", type=int, required=True, help="one of your organisation's TinyLM adapters")
    k.add_argument("--weight", type=float, default=None)
    st = csub.add_parser("start")
    st.add_argument("id", type=int)
    st.add_argument("--wait", action="store_true", help="wait for the run and print the result")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from gtapp.cli.jobs import _client, _user, _user_errors
    from ui.service import Service

    @_user_errors
    def run(args) -> int:
        client = _client()
        svc = Service(client.settings)
        svc.client = client
        who = svc.client.principal(_user(client, args))
        cmd = args.collab_command
        if cmd == "create":
            out = svc.create_collaboration(who, args.name, args.pair, args.invite, args.mapper, args.organisation,
                                           args.method, args.weighting)
        elif cmd == "list":
            out = svc.list_collaborations(who)
        elif cmd == "show":
            out = svc.collaboration(who, args.id)
            if args.events:
                out["events"] = svc.collaboration_events(who, args.id)
        elif cmd in ("accept", "decline"):
            out = {"message": svc.answer_invitation(who, args.id, cmd == "accept")}
        elif cmd == "withdraw":
            out = {"message": svc.withdraw(who, args.id)}
        elif cmd == "contribute":
            out = {"message": svc.contribute(who, args.id, args.adapter, args.weight)}
        else:
            job_id = svc.start_collaboration(who, args.id)
            out = {"job_id": job_id}
            if args.wait:
                view = client.wait(job_id, user=who)
                out = {"job_id": job_id, "status": view.status, "error": view.error,
                       "collaboration": svc.collaboration(who, args.id)}
        print(json.dumps(out, indent=2, default=str))
        return 0

    return run(args)
