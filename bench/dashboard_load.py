"""Load benchmark of the dashboard: N concurrent signed-in sessions browsing, uploading and
polling for a while against one job worker, through the same HTTP calls a browser makes.

Each session (a thread with its own cookie and Gradio session hash):

* arrives (spread over ``--ramp-s``; 0 means all at once, the worst case) and signs in
  (``POST /login``),
* loads the page: ``GET /``, ``GET /config`` and every event the page fires on load, each
  with the ``.then`` chain after it, as the browser does,
* then, until the time is up: polls the Jobs table (its ``gr.Timer`` event) every
  ``--poll-s``; every ``--upload-every-s`` uploads a small dataset (``POST /gradio_api/upload``
  then the ``upload_dataset`` event); after its first upload submits one short fine-tune of
  the TinyLM (``start_finetune``), so the worker has real work while the others poll; and
  every ``--reload-every-s`` loads the page again.

Measured: p50 / p95 / max latency per call type (page load as a whole, each HTTP route,
each event kind), the number of calls, and errors (non-2xx answers, failed events, events
whose status line reports a failure, and jobs that did not succeed) — the target is 0.

By default it starts its own dashboard (``python app.py``: SQLite, the embedded worker with
one worker thread) on a free port with a temporary data dir and the ``micro`` zoo, creates
the users through the Admin tab's ``admin_create_user`` event, and stops it afterwards.

    python bench/dashboard_load.py --sessions 20 --duration 120 --out bench-dashboard.json
    python bench/dashboard_load.py --url http://host:7860/ --admin admin:PASSWORD   # a running one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.jobs_load import summary  # noqa: E402
from storage.settings import child_environment  # noqa: E402
from testkit.services import free_port  # noqa: E402


class EventFailed(RuntimeError):
    pass


class Recorder:
    """Thread-safe latencies (seconds) per call type, and errors with a short reason."""

    def __init__(self):
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.lat[kind].append(seconds)

    def error(self, kind: str, reason: str) -> None:
        with self._lock:
            self.errors.append(f"{kind}: {reason[:300]}")


class Session:
    """One signed-in browser tab, speaking Gradio's queue protocol over HTTP."""

    def __init__(self, base: str, rec: Recorder, timeout: float = 120.0):
        self.base = base.rstrip("/") + "/"
        self.rec = rec
        self.timeout = timeout
        self.http = httpx.Client(base_url=self.base, timeout=timeout, follow_redirects=False)
        self.session_hash = uuid.uuid4().hex[:11]
        self.values: dict[int, object] = {}
        self.deps: list[dict] = []
        self.by_api: dict[str, dict] = {}

    def timed(self, kind: str, fn):
        t = time.perf_counter()
        out = fn()
        self.rec.add(kind, time.perf_counter() - t)
        return out

    def _ok(self, kind: str, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            raise EventFailed(f"{kind}: HTTP {r.status_code} {r.text[:200]}")
        return r

    def login(self, username: str, password: str) -> None:
        r = self.timed("POST /login", lambda: self.http.post("login", data={"username": username, "password": password}))
        if r.status_code not in (302, 303) or "gtapp_session" not in r.cookies:
            raise EventFailed(f"sign-in as {username} failed: HTTP {r.status_code}")
        self.http.cookies = r.cookies
        # the page the sign-in lands on (e.g. ./?tab=upload): its query goes with the page's GET
        # and with every event, as Gradio's client sends the page's URL parameters
        self.page_query = urllib.parse.urlsplit(r.headers.get("location", "")).query

    def _q(self, path: str) -> str:
        query = getattr(self, "page_query", "")
        return f"{path}?{query}" if query else path

    def load_page(self) -> None:
        """``GET /``, ``GET /config``, then every load event at once (as the browser fires
        them), then the ``.then`` events of those that finished, level by level."""
        def page():
            self._ok("GET /", self.timed("GET /", lambda: self.http.get(self._q(""))))
            cfg = self._ok("GET /config", self.timed("GET /config", lambda: self.http.get("config"))).json()
            self.deps = cfg["dependencies"]
            self.by_api = {d["api_name"]: d for d in self.deps if d.get("api_name")}
            self.values = {c["id"]: c.get("props", {}).get("value") for c in cfg["components"]}
            self.tab_ids = {c.get("props", {}).get("id"): c["id"] for c in cfg["components"] if c.get("type") == "tabitem"}
            wave = [d for d in self.deps if any(t[1] == "load" for t in d["targets"])]
            kind = "load events"
            while wave:
                self.call_many([(d, None) for d in wave], kind)
                done = {d["id"] for d in wave}
                wave, kind = [d for d in self.deps if d.get("trigger_after") in done], "load events (then)"
        self.timed("page load (all)", page)

    def run(self, dep: dict, kind: str, data: list | None = None) -> list:
        """Run one event and then its ``.then`` chain, updating the page's values as the browser would."""
        out = self.call(dep, kind, data)
        for nxt in self.deps:
            if nxt.get("trigger_after") == dep["id"]:
                self.run(nxt, kind if kind.endswith("(then)") else f"{kind} (then)")
        return out

    def call(self, dep: dict, kind: str, data: list | None = None) -> list:
        return self.call_many([(dep, data)], kind)[0]

    def call_many(self, calls: list[tuple[dict, list | None]], kind: str) -> list[list]:
        """Join the queue with every (event, inputs) at once, then read this session's event
        stream until all have completed; each event's latency is join → its completion.
        Inputs default to the page's current values."""
        started, order = {}, []
        for dep, data in calls:
            data = [self.values.get(i) for i in dep["inputs"]] if data is None else data
            body = {"data": data, "fn_index": dep["id"], "session_hash": self.session_hash, "event_data": None,
                    "trigger_id": dep["targets"][0][0] if dep["targets"] else None}
            t = time.perf_counter()
            r = self._ok(kind, self.http.post(self._q("gradio_api/queue/join"), json=body))
            event_id = r.json()["event_id"]
            started[event_id] = (dep, t)
            order.append(event_id)
        results: dict[str, list] = {}
        deadline = time.monotonic() + self.timeout
        while len(results) < len(order):  # the server may close the stream between events: reopen it
            if time.monotonic() > deadline:
                raise EventFailed(f"{kind}: {len(order) - len(results)} events not completed in {self.timeout:g} s")
            with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session_hash}) as s:
                for line in s.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    eid = msg.get("event_id")
                    if eid in started and msg.get("msg") == "process_completed":
                        dep, t = started[eid]
                        self.rec.add(f"event: {kind}", time.perf_counter() - t)
                        if not msg.get("success"):
                            raise EventFailed(f"{kind}: {msg.get('output', {}).get('error')}")
                        results[eid] = msg["output"]["data"]
                        self._apply(dep, results[eid])
                        if len(results) == len(order):
                            break
        return [results[e] for e in order]

    def _apply(self, dep: dict, out: list) -> None:
        """Put an event's outputs into the page's values (an update dict changes only what it names)."""
        for cid, value in zip(dep["outputs"], out):
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" in value:
                    self.values[cid] = value["value"]
            else:
                self.values[cid] = value

    def upload_file(self, path: Path) -> dict:
        def go():
            with open(path, "rb") as f:
                r = self._ok("upload", self.http.post("gradio_api/upload", files={"files": (path.name, f)}))
            return r.json()[0]
        server_path = self.timed("POST /gradio_api/upload", go)
        return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def poll_jobs(self) -> str:
        timer = next(d for d in self.deps if any(t[1] == "tick" for t in d["targets"]))
        return self.call(timer, "poll jobs table")[0]

    def upload_dataset(self, path: Path) -> str:
        dep = self.by_api["upload_dataset"]
        data = [self.values.get(i) for i in dep["inputs"]]
        data[0] = self.upload_file(path)
        out = self.run(dep, "upload dataset", data)
        if not str(out[0]).startswith("✔"):
            raise EventFailed(f"upload dataset: {out[0]}")
        return str(out[0])

    def open_tab(self, tab_id: str) -> None:
        """Click a tab: its select events (each with its .then chain), as the browser fires them
        (a page load fills only the tab its URL names)."""
        cid = self.tab_ids[tab_id]
        for dep in [d for d in self.deps if [cid, "select"] in [list(t) for t in d["targets"]]]:
            self.run(dep, "open tab")

    def start_finetune(self, steps: int) -> str:
        self.open_tab("finetune")  # the dataset just uploaded appears in its dropdown
        dep = self.by_api["start_finetune"]
        data = [self.values.get(i) for i in dep["inputs"]]
        data[2], data[4], data[5] = steps, 4, 64  # steps, batch size, max length: a short job
        out = self.run(dep, "start fine-tune", data)
        if "queued" not in str(out[0]):
            raise EventFailed(f"start fine-tune: {out[0]}")
        return str(out[0])

    def sign_out(self) -> None:
        self.http.post("logout")
        self.http.close()


def write_dataset(path: Path, n: int, tag: str) -> Path:
    rows = [json.dumps({"prompt": f"{tag}: what is {i} plus {i}?", "answer": str(2 * i)}) for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def session_loop(i: int, base: str, user: str, password: str, args, rec: Recorder, stop_at: float, root: Path,
                 job_ids: list, lock: threading.Lock) -> None:
    s = Session(base, rec)
    time.sleep(i * args.ramp_s / max(args.sessions, 1))  # sessions arrive spread over --ramp-s
    try:
        s.login(user, password)
        s.load_page()
        next_upload = time.monotonic()
        next_reload = next_upload + args.reload_every_s
        submitted = False
        n = 0
        while time.monotonic() < stop_at:
            now = time.monotonic()
            try:
                if now >= next_upload:
                    n += 1
                    s.upload_dataset(write_dataset(root / f"s{i}-{n}.jsonl", 24, f"session {i} upload {n}"))
                    next_upload = now + args.upload_every_s
                    if not submitted and args.finetune_steps > 0:
                        s.load_page()  # the fine-tune tab's dataset list now holds the new dataset
                        msg = s.start_finetune(args.finetune_steps)
                        with lock:
                            job_ids.append(int(msg.split("job ")[1].split()[0]))
                        submitted = True
                elif now >= next_reload:
                    s.load_page()
                    next_reload = now + args.reload_every_s
                else:
                    s.poll_jobs()
            except (EventFailed, httpx.HTTPError, KeyError, StopIteration) as e:
                rec.error("session", f"{user}: {type(e).__name__}: {e}")
            time.sleep(args.poll_s)
    except (EventFailed, httpx.HTTPError) as e:
        rec.error("session start", f"{user}: {e}")
    finally:
        s.sign_out()


def start_dashboard(root: Path, admin_password: str) -> tuple[subprocess.Popen, str]:
    zoo_dir = root / "zoo"
    subprocess.run([sys.executable, "-m", "gtapp", "zoo", "build", "--preset", "micro", "--out", str(zoo_dir / "micro")],
                   check=True, capture_output=True, cwd=REPO_ROOT)
    port = free_port()
    env = child_environment({"GTAPP_DATA_DIR": root / "data", "GTAPP_ZOO_DIR": zoo_dir,
                             "GTAPP_FIRST_ADMIN_PASSWORD": admin_password, "GTAPP_DASHBOARD_PORT": port,
                             "GTAPP_DASHBOARD_HOST": "127.0.0.1", "GTAPP_EMBEDDED_WORKERS": 1,
                             "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"},
                            drop_prefix="GTAPP_")
    log = open(root / "dashboard.log", "ab")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited: see {root / 'dashboard.log'}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the dashboard did not start in 180 s")


def stop_dashboard(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def create_users(url: str, admin: str, password: str, n: int, orgs: int, rec: Recorder) -> list[tuple[str, str]]:
    s = Session(url, rec)
    s.login(admin, password)
    s.load_page()
    tag = uuid.uuid4().hex[:6]
    users = []
    for i in range(n):
        name = f"load{tag}u{i}"
        out = s.run(s.by_api["admin_create_user"], "admin create user", [f"loadorg{tag}{i % orgs}", name,
                                                                        "load-password-1", "member"])
        if not str(out[0]).startswith("✔"):
            raise RuntimeError(f"could not create user {name}: {out[0]}")
        users.append((name, "load-password-1"))
    s.sign_out()
    return users


def job_outcomes(url: str, admin: str, password: str, job_ids: list[int], timeout: float, rec: Recorder) -> dict:
    """Wait (as the admin, through the Jobs tab's ``job_detail`` event) for the submitted jobs to finish."""
    s = Session(url, rec)
    s.login(admin, password)
    s.load_page()
    outcome = {}
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        for jid in list(pending):
            detail = str(s.call(s.by_api["job_detail"], "job detail (final)", [jid])[0])
            for st in ("succeeded", "failed", "cancelled"):
                if f"**{st}**" in detail:
                    outcome[jid] = st
                    pending.remove(jid)
                    break
        time.sleep(1.0)
    for jid in pending:
        outcome[jid] = "unfinished"
    s.sign_out()
    return outcome


def run(args) -> dict:
    rec = Recorder()
    root = Path(tempfile.mkdtemp(prefix="gtapp_dashload_"))
    proc = None
    admin, admin_pw = (args.admin.split(":", 1) if args.admin else ("admin", "load-admin-password"))
    url = args.url
    t0 = time.monotonic()
    if url is None:
        proc, url = start_dashboard(root, admin_pw)
    try:
        setup = Recorder()
        users = create_users(url, admin, admin_pw, args.sessions, args.orgs, setup)
        job_ids: list[int] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.duration
        threads = [threading.Thread(target=session_loop, args=(i, url, u, p, args, rec, stop_at, root, job_ids, lock),
                                    daemon=True) for i, (u, p) in enumerate(users)]
        t_load = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 300)
        load_s = time.monotonic() - t_load
        outcomes = job_outcomes(url, admin, admin_pw, job_ids, args.job_timeout, setup)
        for jid, st in outcomes.items():
            if st != "succeeded":
                rec.error("job", f"fine-tune job {jid} ended {st}")
    finally:
        if proc is not None:
            stop_dashboard(proc)
    calls = {k: summary(v) for k, v in sorted(rec.lat.items())}
    return {"sessions": args.sessions, "duration_s": args.duration, "ramp_s": args.ramp_s, "load_s": load_s,
            "orgs": args.orgs,
            "poll_s": args.poll_s, "upload_every_s": args.upload_every_s, "reload_every_s": args.reload_every_s,
            "finetune_steps": args.finetune_steps, "workers": 1 if args.url is None else None,
            "calls": calls, "total_calls": sum(v["n"] for v in calls.values()),
            "errors": len(rec.errors), "error_samples": rec.errors[:20],
            "jobs": {"submitted": len(job_ids), "outcomes": outcomes},
            "url": args.url or "own dashboard (SQLite, embedded worker, 1 thread)",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "total_s": time.monotonic() - t0}


def table(r: dict) -> str:
    lines = [f"{r['sessions']} sessions for {r['duration_s']:g} s (arriving over {r['ramp_s']:g} s) against {r['url']}",
             f"{'call':32s} {'n':>6s} {'p50 ms':>9s} {'p95 ms':>9s} {'max ms':>9s}"]
    for k, v in r["calls"].items():
        lines.append(f"{k:32s} {v['n']:6d} {v['p50_ms']:9.1f} {v['p95_ms']:9.1f} {v['max_ms']:9.1f}")
    outcomes = r["jobs"]["outcomes"]
    done = sum(1 for s in outcomes.values() if s == "succeeded")
    lines.append(f"calls {r['total_calls']}, errors {r['errors']}; fine-tune jobs {done}/{r['jobs']['submitted']} succeeded")
    lines += [f"  error: {e}" for e in r["error_samples"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    ap.add_argument("--ramp-s", type=float, default=0.0,
                    help="sessions start spread over this many seconds (0: all at once, the worst case)")
    ap.add_argument("--orgs", type=int, default=4, help="the sessions' users are spread over this many organisations")
    ap.add_argument("--poll-s", type=float, default=1.0, help="pause between a session's calls (the Jobs tab polls every 1 s)")
    ap.add_argument("--upload-every-s", type=float, default=30.0)
    ap.add_argument("--reload-every-s", type=float, default=45.0)
    ap.add_argument("--finetune-steps", type=int, default=8, help="each session's one fine-tune job (0: none)")
    ap.add_argument("--job-timeout", type=float, default=600.0, help="seconds to wait for the jobs after the load")
    ap.add_argument("--url", default=None, help="a running dashboard (default: start one)")
    ap.add_argument("--admin", default=None, help="USER:PASSWORD of an admin of --url")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.url and not args.admin:
        ap.error("--url needs --admin USER:PASSWORD (to create the load users)")
    result = run(args)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
