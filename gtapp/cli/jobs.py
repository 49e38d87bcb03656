"""``gtapp jobs``: submit, list, watch, cancel and retry jobs; run a worker.

    gtapp jobs submit selftest --param steps=20 --param step_s=0.1 --wait
    gtapp jobs list [--status running] [--kind finetune]
    gtapp jobs show 12 --follow          # live progress bar with stage and ETA
    gtapp jobs cancel 12
    gtapp jobs retry 12
    gtapp jobs kinds
    gtapp jobs worker                     # Celery worker if BROKER_URL is set, else the embedded one

Acts as ``--user`` (default: GTAPP_CLI_USER, else the first admin). Storage and workers are
imported inside the handlers, so ``import gtapp`` never pulls in SQLAlchemy or Celery.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _user_errors(fn):
    """Job-API refusals (not found, not allowed, queue down, not available) become the CLI's
    plain 'error: ...' line instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except (LookupError, PermissionError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        except RuntimeError as e:
            if type(e).__name__ in ("QueueUnavailable", "JobNotAvailable"):
                raise ValueError(str(e)) from None
            raise
    return wrapper


def _parse_value(raw: str):
    """JSON when it parses (numbers, true/false/null, lists, objects), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _params(args) -> dict:
    params = {}
    if args.params_json:
        loaded = json.loads(args.params_json)
        if not isinstance(loaded, dict):
            raise ValueError("--params-json must be a JSON object")
        params.update(loaded)
    for item in args.param or []:
        if "=" not in item:
            raise ValueError(f"--param expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        params[key.strip()] = _parse_value(raw)
    return params


def _client(run_embedded: bool = True):
    from workers.client import JobClient

    client = JobClient(run_embedded=run_embedded)
    from storage.accounts import ensure_first_admin
    from storage.db import session_scope

    with session_scope(settings=client.settings) as s:
        ensure_first_admin(s, client.settings)
    return client


def _user(client, args) -> str | int:
    """--user, else GTAPP_CLI_USER, else the first admin."""
    if getattr(args, "user", None):
        return args.user
    if client.settings.cli_user:
        return client.settings.cli_user
    from sqlalchemy import select

    from storage.db import session_scope
    from storage.models import User

    with session_scope(settings=client.settings) as s:
        uid = s.scalar(select(User.id).where(User.role == "admin", User.is_active.is_(True)).order_by(User.id).limit(1))
    if uid is None:
        raise ValueError("no admin user exists: create one with `gtapp admin create-user --role admin`")
    return uid


def _fmt_eta(seconds) -> str:
    try:
        from gtapp.cli.progress_line import format_eta
        return format_eta(seconds)
    except ImportError:  # pragma: no cover
        return "--:--" if seconds is None else f"{int(seconds)}s"


def _bar(view, width: int = 24) -> str:
    filled = int(round(view.progress * width))
    eta = "" if view.finished else f"  ETA {_fmt_eta(view.eta_s)}"
    return (f"job {view.id} {view.kind:<10} [{'#' * filled}{'.' * (width - filled)}] {view.progress * 100:5.1f}%  "
            f"{view.status:<9} {view.stage[:40]:<40}{eta}")


def _follow(client, job_id: int, user, poll: float = 0.5, out=None) -> int:
    """Live progress until the job finishes; exit code 0 if it succeeded."""
    out = out or sys.stdout
    tty = out.isatty()
    last_line, last_print = None, 0.0
    try:
        while True:
            view = client.get(job_id, user)
            line = _bar(view)
            if tty:
                out.write("\r" + line.ljust(120)[:max(len(line), 120)])
                out.flush()
            elif line != last_line and (view.finished or time.monotonic() - last_print > 2.0):
                out.write(line + "\n")
                out.flush()
                last_print = time.monotonic()
            last_line = line
            if view.finished:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        out.write(f"\nstopped following; job {job_id} keeps running (cancel it with `gtapp jobs cancel {job_id}`)\n")
        return 130
    if tty:
        out.write("\n")
    return _report_end(view, out)


def _report_end(view, out) -> int:
    if view.status == "succeeded":
        out.write(f"job {view.id} succeeded in {view.elapsed_s or 0:.1f}s; "
                  f"outputs: {json.dumps(view.outputs)[:2000]}\n")
        return 0
    out.write(f"job {view.id} {view.status}: {view.error or ''}\n")
    return 1


@_user_errors
def cmd_submit(args) -> int:
    client = _client(run_embedded=args.wait)
    user = _user(client, args)
    job_id = client.submit(args.kind, _params(args), user, max_attempts=args.max_attempts)
    if args.wait:
        print(f"job {job_id} submitted")
        return _follow(client, job_id, user)
    print(job_id if args.quiet else f"job {job_id} queued")
    if client.settings.embedded and not args.quiet:
        print("no broker is configured (BROKER_URL): the job runs when `gtapp jobs worker` or the dashboard "
              "is running; pass --wait to run it in this process", file=sys.stderr)
    return 0


@_user_errors
def cmd_list(args) -> int:
    client = _client(run_embedded=False)
    views = client.list(_user(client, args), status=args.status, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps([v.to_dict() for v in views], indent=2))
        return 0
    print(f"{'id':>6}  {'kind':<12} {'status':<10} {'progress':>8}  {'stage':<32} {'created (UTC)':<19}  error")
    for v in views:
        print(f"{v.id:>6}  {v.kind:<12} {v.status:<10} {v.progress * 100:7.1f}%  {v.stage[:32]:<32} "
              f"{v.created_at.strftime('%Y-%m-%d %H:%M:%S')}  {(v.error or '')[:60]}")
    return 0


@_user_errors
def cmd_show(args) -> int:
    client = _client(run_embedded=False)
    user = _user(client, args)
    if args.follow:
        return _follow(client, args.id, user)
    view = client.get(args.id, user)
    if args.json:
        print(json.dumps(view.to_dict(), indent=2))
        return 0
    print(_bar(view))
    for key in ("attempts", "max_attempts", "worker", "created_at", "started_at", "finished_at", "run_dir"):
        print(f"  {key:<13} {getattr(view, key)}")
    print(f"  {'params':<13} {json.dumps(view.params)}")
    if view.outputs:
        print(f"  {'outputs':<13} {json.dumps(view.outputs)[:2000]}")
    if view.error:
        print(f"  {'error':<13} {view.error}")
    if args.log and view.log_tail:
        print("  log (tail):")
        for line in view.log_tail.splitlines():
            print("    " + line)
    return 0


@_user_errors
def cmd_cancel(args) -> int:
    client = _client(run_embedded=False)
    view = client.cancel(args.id, _user(client, args))
    if view.status == "cancelled":
        print(f"job {view.id} cancelled")
    elif view.status == "running":
        print(f"job {view.id} asked to stop; it stops at its next progress report")
    else:
        print(f"job {view.id} already {view.status}; nothing to cancel")
    return 0


@_user_errors
def cmd_retry(args) -> int:
    client = _client(run_embedded=args.wait)
    user = _user(client, args)
    job_id = client.retry(args.id, user)
    print(f"job {job_id} queued (retry of {args.id})")
    return _follow(client, job_id, user) if args.wait else 0


@_user_errors
def cmd_kinds(args) -> int:
    client = _client(run_embedded=False)
    for k in client.kinds():
        flags = ", ".join(f for f, on in (("admin only", k["admin_only"]), ("unavailable", not k["available"])) if on)
        print(f"{k['kind']:<13} queue={k['queue']:<4} {('(' + flags + ')') if flags else ''}")
        print(f"    params: {json.dumps(k['defaults'])}")
        if not k["available"]:
            print(f"    {k['why_not']}")
    return 0


def cmd_worker(args) -> int:
    from storage.settings import get_settings

    settings = get_settings()
    if settings.embedded:
        from workers.embedded import EmbeddedWorker

        _client(run_embedded=False)  # migrate, first admin
        worker = EmbeddedWorker(settings, threads=args.concurrency).start()
        print(f"embedded worker running ({worker.n} thread(s)) on {settings.db_url}; Ctrl-C to stop",
              file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            worker.stop()
        return 0
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", args.queues,
           "-c", str(args.concurrency or 1), "--pool", "prefork", "-l", args.loglevel]
    print("exec: " + " ".join(cmd[2:]), file=sys.stderr)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def register(subparsers) -> None:
    p = subparsers.add_parser("jobs", help="submit, watch and cancel jobs; run a worker",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="jobs_command", required=True)

    def with_user(sp):
        sp.add_argument("--user", help="act as this username (default: GTAPP_CLI_USER, else the first admin)")
        return sp

    s = with_user(sub.add_parser("submit", help="submit a job"))
    s.add_argument("kind", help="job kind (see `gtapp jobs kinds`)")
    s.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="a parameter; VALUE is parsed as JSON when it can be (repeatable)")
    s.add_argument("--params-json", help="parameters as one JSON object")
    s.add_argument("--max-attempts", type=int, default=None)
    s.add_argument("--wait", action="store_true", help="follow progress until the job finishes")
    s.add_argument("--quiet", "-q", action="store_true", help="print only the job id")
    s.set_defaults(func=cmd_submit)

    s = with_user(sub.add_parser("list", help="list jobs"))
    s.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    s.add_argument("--kind")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = with_user(sub.add_parser("show", help="show one job"))
    s.add_argument("id", type=int)
    s.add_argument("--follow", "-f", action="store_true", help="live progress bar until it finishes")
    s.add_argument("--log", action="store_true", help="print the log tail")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = with_user(sub.add_parser("cancel", help="cancel a job"))
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_cancel)

    s = with_user(sub.add_parser("retry", help="resubmit a failed or cancelled job"))
    s.add_argument("id", type=int)
    s.add_argument("--wait", action="store_true")
    s.set_defaults(func=cmd_retry)

    s = sub.add_parser("kinds", help="list job kinds and their parameters")
    s.set_defaults(func=cmd_kinds)

    s = sub.add_parser("worker", help="run a worker (Celery when BROKER_URL is set, else embedded)")
    s.add_argument("--concurrency", "-c", type=int, default=None)
    s.add_argument("--queues", "-Q", default="cpu,gpu")
    s.add_argument("--loglevel", "-l", default="info")
    s.set_defaults(func=cmd_worker)
