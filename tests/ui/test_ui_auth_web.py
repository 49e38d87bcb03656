"""Sign-in sessions and the HTTP surface: the page, Gradio's event API and the download
routes all need a valid session; downloads are tenancy-checked."""

from __future__ import annotations

import time

import pytest

from storage import accounts
from ui.auth import COOKIE, Sessions
from ui.service import Service


@pytest.fixture
def sessions(svc, users) -> Sessions:
    return Sessions(svc)


def test_tokens_sign_expire_and_die_with_the_password(svc, users, sessions, settings):
    alice = svc.who(users["alice"])
    tok = sessions.issue(alice)
    assert sessions.principal(tok).username == "alice"
    uid, exp, nonce, sig = tok.split(".")
    for bad in (f"{int(uid) + 1}.{exp}.{nonce}.{sig}", f"{uid}.{int(exp) + 10}.{nonce}.{sig}", tok[:-2] + "xx",
                "", "garbage", "a.b.c.d"):
        assert sessions.principal(bad) is None
    # a second dashboard process with the same data dir accepts it (the key is kept on disk)
    assert Sessions(Service(settings)).principal(tok).username == "alice"
    # revoked at sign-out
    tok2 = sessions.issue(alice)
    sessions.revoke(tok2)
    assert sessions.principal(tok2) is None
    # ... and by every other dashboard process on the same database, also after a restart
    tok5 = sessions.issue(alice)
    other = Sessions(Service(settings))
    assert other.principal(tok5).username == "alice"
    sessions.revoke(tok5)
    other._cache.clear()  # the other process re-checks after its few-second cache
    assert other.principal(tok5) is None and Sessions(Service(settings)).principal(tok5) is None
    assert Sessions(Service(settings)).principal(tok).username == "alice"  # other sessions live on
    sessions.revoke("1.2.forged.sig")  # a forged token records nothing
    from storage.models import RevokedSession

    with svc.session() as s:
        assert {r.nonce for r in s.query(RevokedSession)} == {tok2.split(".")[2], tok5.split(".")[2]}
    # a password change ends every session of the account; so does disabling it
    tok3 = sessions.issue(alice)
    with svc.session() as s:
        accounts.set_password(s, "alice", "another-password")
    sessions._cache.clear()
    assert sessions.principal(tok3) is None and sessions.principal(tok) is None
    bob_tok = sessions.issue(svc.who(users["bob"]))
    svc.set_active(svc.who(users["root"]), "bob", False)
    sessions._cache.clear()
    assert sessions.principal(bob_tok) is None
    # expiry
    short = Sessions(Service(settings.model_copy(update={"session_ttl_s": 1})))
    tok4 = short.issue(svc.who(users["carol"]))
    time.sleep(2.1)
    assert short.principal(tok4) is None


def test_http_surface_needs_a_session_and_checks_tenancy(settings, svc, users, pair_id, adapter_dir):
    from fastapi.testclient import TestClient

    from storage.models import Adapter
    from ui.app import create_app

    alice = svc.who(users["alice"])
    sha = svc.store.put_tree(adapter_dir)
    with svc.session() as s:
        a = Adapter(org_id=alice.org_id, user_id=alice.user_id, model_pair_id=pair_id, model="tiny",
                    origin="uploaded", name="mine", artifact=sha, meta={})
        s.add(a)
        s.flush()
        aid = a.id
    app = create_app(settings, bootstrap=False)
    with TestClient(app) as anon, TestClient(app) as a_client, TestClient(app) as b_client:
        r = anon.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("login")
        assert anon.get("/login").status_code == 200
        assert anon.get(f"/download/adapter/{aid}").status_code == 401
        assert anon.post("/gradio_api/call/job_detail", json={"data": [1]}).status_code == 401
        assert anon.get("/config").status_code == 401
        bad = anon.post("/login", data={"username": "alice", "password": "wrong-password"}, follow_redirects=False)
        assert bad.status_code == 401 and "Wrong username or password" in bad.text

        for c, name in ((a_client, "alice"), (b_client, "bob")):
            r = c.post("/login", data={"username": name, "password": "password123"}, follow_redirects=False)
            assert r.status_code == 303 and COOKIE in r.cookies
        assert a_client.get("/", follow_redirects=False).status_code == 200

        r = a_client.get(f"/download/adapter/{aid}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip" and r.content[:2] == b"PK"
        r = b_client.get(f"/download/adapter/{aid}")
        assert r.status_code == 404 and "not found" in r.json()["error"]
        assert b_client.get("/download/adapter/../../etc/passwd").status_code == 404

        # an event called directly through Gradio's API runs as the cookie's user
        ev = b_client.post("/gradio_api/call/job_detail", json={"data": [1]}).json()["event_id"]
        out = b_client.get(f"/gradio_api/call/job_detail/{ev}").text
        assert "job 1 not found" in out

        # signing out is a POST: GET /logout only shows the button, and a session survives it
        r = a_client.get("/logout", follow_redirects=False)
        assert r.status_code == 200 and 'method="post"' in r.text
        assert a_client.get("/", follow_redirects=False).status_code == 200
        assert a_client.post("/logout", follow_redirects=False).status_code == 303
        assert a_client.get("/", follow_redirects=False).status_code == 303  # back to the sign-in page
