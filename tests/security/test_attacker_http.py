"""The dashboard attacked as a hostile member would: a real ``python app.py`` (SQLite, the
embedded worker, the micro zoo registered), spoken to over HTTP with nothing but a session
cookie, through Gradio's own queue protocol (``POST /gradio_api/queue/join``, then ``GET
/gradio_api/queue/data``), exactly as ``bench/dashboard_load.py`` and the browser do.

The file-input test enumerates every event with a File/UploadButton input from the running
app's ``/config`` (not from a hand-written list) and sends each hostile path in turn.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import threading
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from live_dashboard import Dashboard

from bench.dashboard_load import EventFailed, Recorder, Session

pytestmark = pytest.mark.slow

CANARY = "CANARY-Q9-SERVER-FILE"
PASSWORD = "password-q9-long"
FILE_TYPES = {"file", "uploadbutton"}


class Healthz(threading.Thread):
    """Polls /healthz every 50 ms while an attack runs: the slowest answer, and failures."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.worst, self.failures, self.n = url + "healthz", 0.0, [], 0
        self.stop_event = threading.Event()

    def run(self):
        with httpx.Client(timeout=10) as c:
            while not self.stop_event.is_set():
                t = time.perf_counter()
                try:
                    ok = c.get(self.url).status_code == 200
                except httpx.HTTPError as e:
                    ok = False
                    self.failures.append(repr(e))
                self.worst = max(self.worst, time.perf_counter() - t)
                self.n += 1
                if not ok:
                    self.failures.append("status")
                time.sleep(0.05)

    def __enter__(self):
        self.start()
        while self.n == 0 and self.is_alive():
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.join(15)


@pytest.fixture(scope="module")
def live(micro_zoo, tmp_path_factory):
    import shutil

    from storage import accounts
    from storage.db import session_scope
    from storage.settings import Settings

    zoo_dir = tmp_path_factory.mktemp("attack_zoo")
    shutil.copytree(micro_zoo, zoo_dir / "micro")
    d = Dashboard(tmp_path_factory.mktemp("attack"), zoo_dir, GTAPP_SIGNIN_LOCK_BASE_S="1",
                  GTAPP_SIGNIN_LOCK_MAX_S="3", GTAPP_SIGNIN_FREE_FAILURES="3").start()
    settings = Settings(data_dir=d.data_dir, _env_file=None)
    with session_scope(settings=settings) as s:
        accounts.create_user(s, "orga-q9", "alice", PASSWORD, "member")
        accounts.create_user(s, "orgb-q9", "bob", PASSWORD, "member")
        accounts.create_user(s, "orgb-q9", "victim", PASSWORD, "member")
    yield d
    d.stop()


def member(live, username: str) -> Session:
    s = Session(live.url, Recorder(), timeout=60)
    s.login(username, PASSWORD)
    s.load_page()
    return s


def db_counts(live) -> dict:
    con = sqlite3.connect(f"file:{live.data_dir / 'gtapp.db'}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in ("datasets", "adapters", "jobs")}
    finally:
        con.close()


def join(s: Session, dep: dict, data: list, session_hash: str | None = None, **kw) -> httpx.Response:
    return s.http.post("gradio_api/queue/join", json={
        "data": data, "fn_index": dep["id"], "session_hash": session_hash or s.session_hash, "event_data": None,
        "trigger_id": dep["targets"][0][0] if dep["targets"] else None}, **kw)


def file_events(s: Session) -> list[tuple[dict, int, dict]]:
    """(dependency, input position, component) for every event input that is a file component,
    read from the running app's /config."""
    cfg = s.http.get("config").json()
    comps = {c["id"]: c for c in cfg["components"]}
    out = []
    for dep in cfg["dependencies"]:
        for pos, cid in enumerate(dep["inputs"]):
            if comps.get(cid, {}).get("type") in FILE_TYPES:
                out.append((dep, pos, comps[cid]))
    return out


def file_data(path: str, url: str | None = None) -> dict:
    d = {"path": path, "orig_name": os.path.basename(path) or "x", "meta": {"_type": "gradio.FileData"}}
    if url:
        d["url"] = url
    return d


def jsonl(tag: str, n: int = 4) -> bytes:
    return "".join(json.dumps({"prompt": f"{tag} prompt {i}", "answer": f"{tag} answer {i}"}) + "\n"
                   for i in range(n)).encode()


def upload_bytes(s: Session, name: str, data: bytes) -> dict:
    r = s.http.post("gradio_api/upload", files={"files": (name, io.BytesIO(data))})
    assert r.status_code == 200, r.text[:300]
    return file_data(r.json()[0])


def run_event(s: Session, dep: dict, data: list) -> list:
    return s.call(dep, "attack", data)


# ------------------------------------------------------------------------------------- the tests


def test_every_file_input_refuses_every_path_it_did_not_receive(live, tmp_path):
    """Findings 1-4: read any file, steal an adapter from a job's scratch folder, corrupt the
    database, hang everyone. Each File input of every event, with each hostile path, is refused
    at the door: nothing stored, no byte of the target echoed, and /healthz answers throughout."""
    alice, bob = member(live, "alice"), member(live, "bob")
    alice2 = member(live, "alice")  # a second sign-in of the same user
    events = file_events(bob)
    assert {d.get("api_name") for d, _, _ in events} >= {"upload_adapter", "upload_dataset"} and len(events) >= 3

    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(jsonl(CANARY))
    sparse = tmp_path / "big.jsonl"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    run_dir = live.data_dir / "artifacts" / "runs" / "9" / "work"  # a running generate job's scratch
    run_dir.mkdir(parents=True)
    (run_dir / "adapter_config.json").write_text(json.dumps({"r": 2, "note": CANARY}))
    (run_dir / "adapter_model.safetensors").write_bytes(CANARY.encode() * 64)
    # alice's own data: a stored dataset (artifact store) and a pending upload of hers
    ds_dep = alice.by_api["upload_dataset"]
    data = [alice.values.get(i) for i in ds_dep["inputs"]]
    data[0] = upload_bytes(alice, "alice.jsonl", jsonl(CANARY))
    assert str(run_event(alice, ds_dep, data)[0]).startswith("✔")
    objects = sorted(p for p in (live.data_dir / "artifacts" / "objects").rglob("*") if p.is_file())
    alice_pending = upload_bytes(alice, "pending.jsonl", jsonl(CANARY))["path"]
    db = live.data_dir / "gtapp.db"
    own_dir = os.path.dirname(upload_bytes(bob, "mine.jsonl", jsonl("bob"))["path"])

    hostile = {
        "a file outside every upload folder": str(secret),
        "the live database": str(db),
        "the database's WAL": str(db) + "-wal",
        "/dev/zero": "/dev/zero",
        "a 2 GiB file": str(sparse),
        "/etc/passwd": "/etc/passwd",
        "a missing path": str(tmp_path / "missing.jsonl"),
        "another organisation's stored dataset": str(objects[0]),
        "another organisation's job scratch adapter": str(run_dir / "adapter_model.safetensors"),
        "another organisation's job scratch config": str(run_dir / "adapter_config.json"),
        "another session's pending upload": alice_pending,
        "a traversal out of the caller's own folder": own_dir + "/../../../gtapp.db",
        "a relative path": "gtapp.db",
        "a URL (SSRF)": live.url + "healthz",
    }
    before = db_counts(live)
    answers = {}
    with Healthz(live.url) as health:
        for dep, pos, comp in events:
            for label, path in hostile.items():
                for who in (bob, alice2):
                    if who is alice2 and label != "another session's pending upload":
                        continue
                    data = [who.values.get(i) for i in dep["inputs"]]
                    fd = file_data(path)
                    data[pos] = [fd] if comp["props"].get("file_count") == "multiple" else fd
                    t = time.perf_counter()
                    r = join(who, dep, data, timeout=30)
                    answers[(dep["id"], label)] = r.text
                    assert r.status_code == 403, (dep.get("api_name"), label, r.status_code, r.text[:300])
                    assert time.perf_counter() - t < 5, (label, "took", time.perf_counter() - t)
                    assert CANARY not in r.text and "root:" not in r.text, (label, r.text[:300])
            # a file object with only a url, and one nested in another input, are refused too
            data = [bob.values.get(i) for i in dep["inputs"]]
            data[pos] = {"url": live.url + "healthz", "orig_name": "x", "meta": {"_type": "gradio.FileData"}}
            assert join(bob, dep, data).status_code == 403
    assert health.n >= 1 and not health.failures and health.worst < 2.0, (health.worst, health.failures[:3])
    assert db_counts(live) == before, "a refused request stored something"
    # one answer for every path: whether a path exists cannot be probed
    assert len({normalise(t) for t in answers.values()}) == 1, set(answers.values())
    # the REST API route is held to the same rule
    r = bob.http.post("gradio_api/call/upload_dataset", json={"data": [file_data(str(secret)), "prompt/answer", None,
                                                                       "", None, None]})
    assert r.status_code == 403 and CANARY not in r.text

    # the database is intact and writable: an honest upload through the same event still works
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()
    ds_dep = bob.by_api["upload_dataset"]
    data = [bob.values.get(i) for i in ds_dep["inputs"]]
    data[0] = upload_bytes(bob, "honest.jsonl", jsonl("bob-honest"))
    out = run_event(bob, ds_dep, data)
    assert str(out[0]).startswith("✔") and "4 examples" in str(out[0]), out[0]
    assert db_counts(live)["datasets"] == before["datasets"] + 1
    # alice's pending upload is still hers to use
    data = [alice.values.get(i) for i in ds_dep["inputs"]]
    data[0], data[3] = file_data(alice_pending), "alice-second"
    assert str(run_event(alice, ds_dep, data)[0]).startswith("✔")


def normalise(text: str) -> str:
    return text.strip()


def test_file_route_serves_only_the_callers_own_pending_upload(live):
    """Finding 9: /gradio_api/file=<path of a pending upload> served another user's upload."""
    alice, bob = member(live, "alice"), member(live, "bob")
    path = upload_bytes(alice, "mine.jsonl", jsonl(CANARY))["path"]
    for route in (f"gradio_api/file={path}", f"file={path}", f"gradio_api/file/{path}"):
        r = bob.http.get(route)
        assert r.status_code == 404 and CANARY not in r.text, (route, r.status_code)
    assert alice.http.get(f"gradio_api/file={path}").status_code == 200
    assert CANARY in alice.http.get(f"gradio_api/file={path}").text
    for p in (str(live.data_dir / "gtapp.db"), "/etc/passwd"):
        assert alice.http.get(f"gradio_api/file={p}").status_code == 404


def test_identical_uploads_at_once_do_not_collide(live):
    """Finding 10: two users uploading identical bytes at once shared one temp path; the first
    handler deleted it and the other failed."""
    alice, bob = member(live, "alice"), member(live, "bob")
    data = jsonl("same-bytes", 6)
    paths = {}

    def go(s, key):
        paths[key] = upload_bytes(s, "same.jsonl", data)

    ts = [threading.Thread(target=go, args=(s, k)) for s, k in ((alice, "a"), (bob, "b"))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert paths["a"]["path"] != paths["b"]["path"]
    results = {}

    def submit(s, key, fd):
        dep = s.by_api["upload_dataset"]
        d = [s.values.get(i) for i in dep["inputs"]]
        d[0], d[3] = fd, f"same-{uuid.uuid4().hex[:6]}"
        results[key] = run_event(s, dep, d)[0]

    ts = [threading.Thread(target=submit, args=(s, k, paths[k])) for s, k in ((alice, "a"), (bob, "b"))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert all(str(v).startswith("✔") and "6 examples" in str(v) for v in results.values()), results


def test_session_hashes_belong_to_one_sign_in(live):
    """Finding 8: /gradio_api/queue/data?session_hash=<A's> returned A's outputs to B."""
    alice, bob = member(live, "alice"), member(live, "bob")
    dep = alice.by_api["job_detail"]
    assert join(alice, dep, [1]).status_code == 200
    r = bob.http.get("gradio_api/queue/data", params={"session_hash": alice.session_hash}, timeout=10)
    assert r.status_code == 403
    assert join(bob, dep, [1], session_hash=alice.session_hash).status_code == 403
    assert bob.http.get(f"gradio_api/heartbeat/{alice.session_hash}", timeout=10).status_code == 403
    r = bob.http.post("gradio_api/cancel", json={"session_hash": alice.session_hash, "fn_index": dep["id"],
                                                 "event_id": "x"})
    assert r.status_code == 403
    # alice's own stream still answers her
    with alice.http.stream("GET", "gradio_api/queue/data", params={"session_hash": alice.session_hash}) as s:
        assert s.status_code == 200


def test_signed_out_clients_reach_nothing_but_sign_in(live):
    """Finding 14: heartbeat, cancel and /openapi.json answered without a session."""
    anon = httpx.Client(base_url=live.url, timeout=10, follow_redirects=False)
    for method, path in (("GET", "gradio_api/heartbeat/abc"), ("POST", "gradio_api/cancel"), ("GET", "openapi.json"),
                         ("GET", "gradio_api/openapi.json"), ("GET", "config"), ("GET", "gradio_api/info"),
                         ("POST", "gradio_api/upload"), ("POST", "gradio_api/queue/join"),
                         ("GET", "gradio_api/queue/data?session_hash=abc"), ("GET", "gradio_api/queue/status"),
                         ("GET", "gradio_api/file=/etc/passwd"), ("GET", "monitoring"), ("GET", "assets/index.js"),
                         ("GET", "download/adapter/1"), ("POST", "gradio_api/call/job_detail")):
        r = anon.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    assert anon.get("").status_code == 303 and anon.get("").headers["location"].endswith("login")
    assert anon.get("login").status_code == 200 and anon.get("healthz").json() == {"ok": True}
    # and signed in, Gradio's routes the page does not use are not served at all
    bob = member(live, "bob")
    for path in ("monitoring", "gradio_api/profiling/traces", "gradio_api/runs", "gradio_api/vibe-code",
                 "gradio_api/openapi.json", "gradio_api/dev/reload"):
        assert bob.http.get(path).status_code == 404, path


def test_cross_site_requests_are_refused_and_cors_is_not_reflected(live):
    """Finding 12: any localhost origin was reflected with credentials; sign-in accepted a
    foreign Origin; sign-out worked by GET."""
    anon = httpx.Client(base_url=live.url, timeout=10, follow_redirects=False)
    evil = {"Origin": "http://localhost:9999"}
    r = anon.post("login", data={"username": "alice", "password": PASSWORD}, headers=evil)
    assert r.status_code == 403 and "gtapp_session" not in r.cookies
    r = anon.post("login", data={"username": "alice", "password": PASSWORD},
                  headers={"Origin": live.url.rstrip("/")})
    assert r.status_code == 303 and "gtapp_session" in r.cookies  # the dashboard's own origin
    bob = member(live, "bob")
    for method, path in (("GET", "config"), ("GET", "gradio_api/info"), ("OPTIONS", "gradio_api/queue/join")):
        r = bob.http.request(method, path, headers={**evil, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers and "access-control-allow-credentials" not in r.headers
    dep = bob.by_api["job_detail"]
    assert join(bob, dep, [1], headers=evil).status_code == 403
    assert join(bob, dep, [1], headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # sign-out: GET only shows the button; POST from another site is refused; POST from here signs out
    assert bob.http.get("logout").status_code == 200 and bob.http.get("").status_code == 200
    assert bob.http.post("logout", headers=evil).status_code == 403 and bob.http.get("").status_code == 200
    assert bob.http.post("logout").status_code == 303
    assert bob.http.get("config").status_code == 401


def test_sign_in_is_throttled_per_username_and_address(live):
    """Finding 7: 120 guesses at 3.8/s, and the right password still worked. Now: after the free
    failures (3 here), each wrong guess makes the next attempt wait (1 s, doubling, at most 3 s
    here), the right password is refused meanwhile with a time to retry, and it works after."""
    anon = httpx.Client(base_url=live.url, timeout=10, follow_redirects=False)
    codes = []
    for _ in range(6):
        r = anon.post("login", data={"username": "victim", "password": "wrong-guess"})
        codes.append(r.status_code)
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:], codes
    r = anon.post("login", data={"username": "victim", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert re.search(r"Try again in \d+ s", r.text) and "gtapp_session" not in r.cookies
    # another user from the same address is not locked by victim's failures
    assert anon.post("login", data={"username": "alice", "password": PASSWORD}).status_code == 303
    time.sleep(int(r.headers["retry-after"]) + 0.5)
    r = anon.post("login", data={"username": "victim", "password": PASSWORD})
    assert r.status_code == 303 and "gtapp_session" in r.cookies
    con = sqlite3.connect(f"file:{live.data_dir / 'gtapp.db'}?mode=ro", uri=True)
    assert con.execute("select count(*) from sign_in_failures where username='victim'").fetchone()[0] == 0  # cleared
    con.close()


def test_parallel_adapter_uploads_of_one_member_do_not_starve_others(live, tmp_path):
    """Finding 15: 8 parallel adapter uploads by one member made another's take 39 s. Now one
    member validates one adapter at a time (the rest are refused at once, saying why)."""
    adapter = _micro_tiny_adapter(Path(live.env["GTAPP_ZOO_DIR"]) / "micro", tmp_path)
    pages = {f"bob{i}": member(live, "bob") for i in range(4)}  # four tabs of one member
    pages["alice"] = member(live, "alice")
    dep = pages["alice"].by_api["upload_adapter"]
    zdata = _zip(adapter)
    files = {k: upload_bytes(s, "a.zip", zdata) for k, s in pages.items()}
    outs = {}

    def go(key):
        s = pages[key]
        d = [s.values.get(i) for i in dep["inputs"]]
        d[0] = [files[key]]
        try:
            outs[key] = str(run_event(s, dep, d)[0])
        except EventFailed as e:
            outs[key] = f"failed: {e}"

    ts = [threading.Thread(target=go, args=(k,)) for k in pages]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    bobs = [v for k, v in outs.items() if k.startswith("bob")]
    assert outs["alice"].startswith("✔"), outs
    assert any(v.startswith("✔") for v in bobs), bobs
    refused = [v for v in bobs if "already running" in v or "in progress" in v]
    assert len(refused) >= 2, bobs


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"adapter/{f.name}")
    return buf.getvalue()


def _micro_tiny_adapter(zoo: Path, tmp_path: Path) -> Path:
    """A TinyLM adapter of the micro pair, as an organisation would train it (peft, seeded init)."""
    from gtapp.lora.peft_model import attach_lora
    from gtapp.models import ModelPair, load_model

    pair = ModelPair.from_dir(zoo)
    out = tmp_path / "tiny_adapter"
    attach_lora(load_model(pair.tiny_path), pair.recipes.tiny).save_pretrained(str(out))
    return out


def test_stored_adapter_configs_carry_no_field_the_uploader_chose(live, tmp_path):
    """Finding 13: ``base_model_name_or_path: "/etc/passwd"`` and odd ``revision`` values were
    accepted and stored verbatim. The stored (and downloaded) config is written from the recipe
    and names the model pair."""
    adapter = _micro_tiny_adapter(Path(live.env["GTAPP_ZOO_DIR"]) / "micro", tmp_path)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(base_model_name_or_path="/etc/passwd", revision="../../../etc/shadow")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    bob = member(live, "bob")
    dep = bob.by_api["upload_adapter"]
    d = [bob.values.get(i) for i in dep["inputs"]]
    d[0], d[2] = [upload_bytes(bob, "a.zip", _zip(adapter))], "odd-config"
    out = str(run_event(bob, dep, d)[0])
    assert out.startswith("✔"), out
    adapter_id = int(re.search(r"id (\d+)", out).group(1))
    r = bob.http.get(f"download/adapter/{adapter_id}")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        stored = json.loads(zf.read("adapter_config.json"))
    assert stored["base_model_name_or_path"] == "gtapp:micro:tiny" and stored.get("revision") is None, stored
    assert "/etc" not in json.dumps(stored)


def test_csv_export_neutralises_formulas(live, tmp_path):
    """Finding 11: cells beginning =, +, -, @ were exported verbatim into the Compare CSV."""
    bob = member(live, "bob")
    rows = [{"protocol": "in_distribution", "task": '=HYPERLINK("http://evil.example","x")', "method": "@SUM(1)",
             "metric": "+cmd|' /C calc'!A0", "value": -0.5, "seed": 0, "gap_recovery": -0.25}]
    cfg = bob.http.get("config").json()
    by_elem = {c["props"].get("elem_id"): c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id")}
    dep = next(d for d in bob.deps if by_elem["cmp-upload"] in d["inputs"] and by_elem["cmp-upload-status"]
               in d["outputs"])
    data = [bob.values.get(i) for i in dep["inputs"]]
    data[dep["inputs"].index(by_elem["cmp-upload"])] = upload_bytes(bob, "r.json", json.dumps({"rows": rows}).encode())
    bob.run(dep, "compare upload", data)
    link = str(bob.values.get(by_elem["cmp-csv"]))
    token = re.search(r"download/export/([\w-]+)", link).group(1)
    text = bob.http.get(f"download/export/{token}").text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["task"].startswith("'=") and row["method"].startswith("'@") and row["metric"].startswith("'+"), row
    assert row["value"] == "-0.5" and row["gap_recovery"] == "-0.25"  # numbers stay numbers


class SlowFile(io.RawIOBase):
    """A file an upload reads slowly: the request stays in progress for about ``seconds``."""

    def __init__(self, seconds: float, chunks: int = 10):
        self.left, self.pause = chunks, seconds / chunks

    def readable(self):
        return True

    def readinto(self, b):
        if self.left == 0:
            return 0
        time.sleep(self.pause)
        self.left -= 1
        b[:64] = b"x" * 64
        return 64


def test_one_sign_in_sends_at_most_two_uploads_at_once(live):
    """Finding 15, the upload side: parallel uploads of one sign-in hold disk and memory; the
    third at once is refused (429) saying why, while another member's goes through."""
    bob, alice = member(live, "bob"), member(live, "alice")
    codes = []

    def slow():
        r = bob.http.post("gradio_api/upload", files={"files": ("slow.bin", SlowFile(3.0))}, timeout=30)
        codes.append(r.status_code)

    ts = [threading.Thread(target=slow) for _ in range(2)]
    [t.start() for t in ts]
    time.sleep(1.0)  # both are in progress now
    r = bob.http.post("gradio_api/upload", files={"files": ("third.jsonl", io.BytesIO(jsonl("x")))})
    assert r.status_code == 429 and "already in progress" in r.text, (r.status_code, r.text)
    assert alice.http.post("gradio_api/upload", files={"files": ("a.jsonl", io.BytesIO(jsonl("a")))}).status_code == 200
    [t.join(30) for t in ts]
    assert codes == [200, 200]
    assert bob.http.post("gradio_api/upload", files={"files": ("later.jsonl", io.BytesIO(jsonl("x")))}).status_code == 200


def test_an_upload_declared_over_the_limit_is_refused_before_it_is_read(live):
    """Held up (kept so): a member announcing a 1 GiB upload gets 413 from its Content-Length,
    before the server reads the body; nothing lands in the member's upload folder and /healthz
    answers meanwhile. (A body sent without a length is cut at the limit by Gradio's streaming
    parser, which the dashboard's upload route runs with the same bound.)"""
    import socket
    from urllib.parse import urlparse

    bob = member(live, "bob")
    host = urlparse(live.url)
    cookie = "; ".join(f"{k}={v}" for k, v in bob.http.cookies.items())
    before = sorted(p for p in live.data_dir.rglob("*") if p.is_file())
    with Healthz(live.url) as health, socket.create_connection((host.hostname, host.port), timeout=10) as sock:
        head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host.netloc}\r\nCookie: {cookie}\r\n"
                f"Origin: {live.url.rstrip('/')}\r\n"
                f"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: {1 << 30}\r\n\r\n")
        sock.sendall(head.encode() + b"--xx\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jsonl\"\r\n\r\n")
        sock.sendall(b"0" * 65536)  # 64 KiB of the announced GiB, then wait for the answer
        answer = b""
        sock.settimeout(5)
        try:
            while b"limited to" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except socket.timeout:
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"uploads are limited to 512 MiB" in answer, answer[:300]
    assert not health.failures and health.worst < 2.0, (health.worst, health.failures[:3])
    after = sorted(p for p in live.data_dir.rglob("*") if p.is_file() and "big.jsonl" in p.name)
    assert after == [] and len(before) >= 1
