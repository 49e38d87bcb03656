"""``gtapp admin``: accounts, database, model pairs, datasets, privacy ledger, reaper.

    gtapp admin db upgrade                       # Alembic upgrade head (GTAPP_DATABASE_URL / DATABASE_URL)
    gtapp admin db current
    gtapp admin create-user --org acme --username alice --role member   # prompts for the password
    gtapp admin set-password --username alice
    gtapp admin register-pair --name micro --dir zoo/micro
    gtapp admin create-dataset --org acme --name sums --jsonl sums.jsonl --epsilon-budget 3
    gtapp admin ledger 4
    gtapp admin reap                             # one reaper pass: requeue or fail jobs of dead workers

Storage is imported inside the handlers, so ``import gtapp`` stays free of SQLAlchemy.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys


def _password(args) -> str | None:
    if args.password is not None:
        return args.password
    if args.no_password:
        return None
    if not sys.stdin.isatty():
        raise ValueError("no --password given and no terminal to prompt on (or pass --no-password)")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("repeat password: "):
        raise ValueError("the passwords differ")
    return first


def cmd_db(args) -> int:
    from storage import db
    from storage.settings import get_settings

    url = get_settings().db_url
    if args.db_command == "upgrade":
        db.upgrade(url, args.revision)
        print(f"database at revision {db.current_revision(url)}")
    else:
        print(db.current_revision(url) or "(empty: run `gtapp admin db upgrade`)")
    return 0


def cmd_create_user(args) -> int:
    from storage.accounts import create_user
    from storage.db import session_scope

    password = _password(args)
    with session_scope() as s:
        user = create_user(s, args.org, args.username, password, role=args.role)
        s.flush()
        print(f"user '{user.username}' (id {user.id}, {user.role}) created in organisation '{args.org}'"
              + ("" if password else "; it cannot log in until `gtapp admin set-password`"))
    return 0


def cmd_set_password(args) -> int:
    from storage.accounts import set_password
    from storage.db import session_scope

    password = _password(args)
    if password is None:
        raise ValueError("a password is required")
    with session_scope() as s:
        try:
            set_password(s, args.username, password)
        except LookupError as e:
            raise ValueError(str(e)) from None
    print(f"password of '{args.username}' set")
    return 0


def cmd_register_pair(args) -> int:
    from storage.catalog import register_pair
    from storage.db import session_scope

    with session_scope() as s:
        pair = register_pair(s, args.name, args.dir)
        print(f"model pair '{pair.name}' registered with id {pair.id} (recipe {pair.recipe_fingerprint[:12]})")
    return 0


def cmd_create_dataset(args) -> int:
    from storage.accounts import get_or_create_org
    from storage.artifacts import store_from_settings
    from storage.catalog import create_dataset
    from storage.db import session_scope

    examples = []
    with open(args.jsonl, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if line.strip():
                d = json.loads(line)
                if not isinstance(d, dict) or "prompt" not in d or "answer" not in d:
                    raise ValueError(f"{args.jsonl}:{i + 1}: expected {{\"prompt\": ..., \"answer\": ...}}")
                examples.append(d)
    with session_scope() as s:
        org = get_or_create_org(s, args.org)
        ds = create_dataset(s, store_from_settings(), org.id, args.name, examples, task=args.task,
                            epsilon_budget=args.epsilon_budget, delta=args.delta,
                            source={"imported_from": "cli"})
        print(f"dataset '{ds.name}' (id {ds.id}) with {ds.n_examples} examples"
              + (f", privacy budget ε={ds.epsilon_budget:g} at δ={ds.delta:g}" if ds.epsilon_budget else ""))
    return 0


def cmd_ledger(args) -> int:
    from storage import ledger
    from storage.db import session_scope
    from storage.models import Dataset

    with session_scope() as s:
        ds = s.get(Dataset, args.dataset_id)
        if ds is None:
            raise ValueError(f"dataset {args.dataset_id} not found")
        summary = ledger.summary(s, ds)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    budget = "none" if summary["budget"] is None else f"{summary['budget']:g}"
    print(f"dataset '{summary['dataset']}': budget ε={budget} at δ={summary['delta']:g}; "
          f"spent ε={summary['spent']:.4g} ({summary['accountant']})")
    for e in summary["entries"]:
        print(f"  job {e['job_id']!s:>6}  ε={e['epsilon']:.4g}  {e['status']:<8}  "
              f"total ε={e['total_epsilon']:.4g}  {e['note']}")
    return 0


def cmd_reap(args) -> int:
    from storage.settings import get_settings
    from workers.reaper import reap

    actions = reap(get_settings())
    for a in actions:
        print(f"job {a['job_id']}: {a['action']} ({a['reason']})")
    if not actions:
        print("nothing to do")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("admin", help="accounts, database, model pairs, datasets, ledger",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="admin_command", required=True)

    s = sub.add_parser("db", help="database schema (Alembic)")
    dbsub = s.add_subparsers(dest="db_command", required=True)
    u = dbsub.add_parser("upgrade", help="migrate to the latest schema")
    u.add_argument("--revision", default="head")
    u.set_defaults(func=cmd_db)
    c = dbsub.add_parser("current", help="print the current schema revision")
    c.set_defaults(func=cmd_db)

    def password_opts(sp):
        sp.add_argument("--password", help="the password (default: prompt)")
        sp.add_argument("--no-password", action="store_true", help=argparse.SUPPRESS)

    s = sub.add_parser("create-user", help="create a user (and its organisation if new)")
    s.add_argument("--org", required=True)
    s.add_argument("--username", required=True)
    s.add_argument("--role", choices=["member", "admin"], default="member")
    password_opts(s)
    s.set_defaults(func=cmd_create_user)

    s = sub.add_parser("set-password", help="set a user's password")
    s.add_argument("--username", required=True)
    password_opts(s)
    s.set_defaults(func=cmd_set_password)

    s = sub.add_parser("register-pair", help="register a TinyLM/LLM pair folder (tiny/, llm/, recipe.json)")
    s.add_argument("--name", required=True)
    s.add_argument("--dir", required=True)
    s.set_defaults(func=cmd_register_pair)

    s = sub.add_parser("create-dataset", help="import a JSONL dataset ({prompt, answer} per line) for an organisation")
    s.add_argument("--org", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--jsonl", required=True)
    s.add_argument("--task", default=None)
    s.add_argument("--epsilon-budget", type=float, default=None, help="total DP budget ε for this dataset")
    s.add_argument("--delta", type=float, default=1e-5)
    s.set_defaults(func=cmd_create_dataset)

    s = sub.add_parser("ledger", help="a dataset's privacy ledger")
    s.add_argument("dataset_id", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ledger)

    s = sub.add_parser("reap", help="one reaper pass (requeue or fail jobs whose worker died)")
    s.set_defaults(func=cmd_reap)
