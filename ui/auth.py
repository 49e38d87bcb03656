"""Sign-in: signed session cookies, the sign-in page, and the Account tab.

A successful sign-in (``POST /login``, checked against ``storage.accounts.authenticate``)
sets an HttpOnly, SameSite=Lax cookie holding ``user_id.expiry.nonce.signature`` where the
signature is an HMAC-SHA256 (key: ``settings.secret_key``, or a random key kept in
``<data_dir>/dashboard/session.key``) over the user id, expiry, nonce and a digest of the
user's current password hash. So a session survives a dashboard restart, and ends at its
expiry, at sign-out, when the password changes, or when an admin disables the account.

Gradio is mounted with :meth:`Sessions.dependency` as its ``auth_dependency``: every page
load, event and file route of the Gradio app runs it server-side and gets the username,
which Gradio hands to each handler as ``gr.Request.username``; a request without a valid
cookie gets 401 before any handler runs. The dashboard's own download routes call
:meth:`Sessions.principal` the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import secrets
import threading
import time
from typing import Optional

import gradio as gr  # module level: handlers' `request: gr.Request` annotations resolve here
from fastapi import Form, Request  # module level: route annotations must resolve here
from fastapi.responses import HTMLResponse, RedirectResponse

from storage.accounts import Principal

COOKIE = "gtapp_session"
_CACHE_TTL_S = 3.0


class Sessions:
    def __init__(self, service):
        self.service = service
        self.settings = service.settings
        self._key = self._load_key()
        self._revoked: dict[str, float] = {}  # nonce -> expiry: this process's sign-outs (also in the DB)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def _load_key(self) -> bytes:
        if self.settings.secret_key:
            return hashlib.sha256(self.settings.secret_key.encode()).digest()
        path = self.service.dashboard_dir / "session.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        for _ in range(50):  # another process may be writing it right now
            text = path.read_text().strip()
            if len(text) == 64:
                return bytes.fromhex(text)
            time.sleep(0.05)
        raise RuntimeError(f"{path}: not a session key; delete it to make a new one")

    @staticmethod
    def _pw_tag(password_hash: str) -> str:
        return hashlib.sha256(password_hash.encode()).hexdigest()[:16]

    def _sign(self, user_id: int, expiry: int, nonce: str, pw_tag: str) -> str:
        msg = f"v1|{user_id}|{expiry}|{nonce}|{pw_tag}".encode()
        return base64.urlsafe_b64encode(hmac.new(self._key, msg, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, who: Principal) -> str:
        tag = self.service.password_tag(who.user_id)
        if tag is None:
            raise PermissionError("no such user")
        expiry = int(time.time()) + int(self.settings.session_ttl_s)
        nonce = secrets.token_urlsafe(12)
        return f"{who.user_id}.{expiry}.{nonce}.{self._sign(who.user_id, expiry, nonce, self._pw_tag(tag[1]))}"

    def principal(self, token: Optional[str]) -> Optional[Principal]:
        """The signed-in user of a session token, or None (bad, expired, revoked, disabled)."""
        if not token or len(token) > 300:
            return None
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            uid_s, exp_s, nonce, sig = token.split(".")
            uid, expiry = int(uid_s), int(exp_s)
        except ValueError:
            return None
        if expiry < now or nonce in self._revoked or self.service.session_revoked(nonce):
            return None
        tag = self.service.password_tag(uid)
        if tag is None:
            return None
        username, pw_hash, active = tag
        if not active or not pw_hash:
            return None
        if not hmac.compare_digest(sig, self._sign(uid, expiry, nonce, self._pw_tag(pw_hash))):
            return None
        try:
            who = self.service.principal(username)
        except PermissionError:
            return None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (min(now + _CACHE_TTL_S, expiry), who)
        return who

    def revoke(self, token: Optional[str]) -> None:
        """Sign-out: the token is refused from now on, by this process at once and by every
        other dashboard process sharing the database (within the principal cache's few seconds)."""
        who = self.principal(token)  # only a valid token is recorded: no rows from forged ones
        try:
            _, exp_s, nonce, _ = (token or "").split(".")
            expiry = int(exp_s)
        except ValueError:
            return
        if who is not None:
            self.service.revoke_session(who.user_id, nonce, expiry)
        now = time.time()
        with self._lock:
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
            self._revoked[nonce] = expiry
            self._cache.pop(token, None)

    def owner(self, token: Optional[str]) -> Optional[str]:
        """A name for one sign-in (the user and this cookie's nonce, keyed so it cannot be
        forged or turned back into the cookie): the owner of the uploads and page sessions
        made under it (``ui.uploads``, ``ui.gate``). Call only for a valid token."""
        try:
            uid_s, _, nonce, _ = (token or "").split(".")
            uid = int(uid_s)
        except ValueError:
            return None
        tag = hmac.new(self._key, f"owner|{uid}|{nonce}".encode(), hashlib.sha256).hexdigest()[:20]
        return f"{uid}-{tag}"

    def dependency(self, request) -> Optional[str]:
        """Gradio's ``auth_dependency``: the username of the request's session, or None."""
        who = self.principal(request.cookies.get(COOKIE))
        return who.username if who else None


# ---------------------------------------------------------------------- the sign-in page

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gtapp — sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; background: #f4f5f7; margin: 0; }}
 main {{ max-width: 380px; margin: 10vh auto; background: white; padding: 2rem 2.2rem; border-radius: 10px;
        box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
 h1 {{ font-size: 1.4rem; margin: 0 0 .3rem; }} p.sub {{ color: #555; margin: 0 0 1.4rem; font-size: .92rem; }}
 label {{ display: block; font-size: .9rem; margin: .8rem 0 .25rem; color: #333; }}
 input {{ width: 100%; box-sizing: border-box; padding: .55rem .6rem; border: 1px solid #ccc; border-radius: 6px;
         font-size: 1rem; }}
 button {{ margin-top: 1.3rem; width: 100%; padding: .65rem; border: 0; border-radius: 6px; background: #ea580c;
          color: white; font-size: 1rem; cursor: pointer; }}
 .err {{ background: #fde8e8; color: #9b1c1c; padding: .55rem .7rem; border-radius: 6px; font-size: .9rem; }}
</style></head>
<body><main>
<h1>gtapp</h1><p class="sub">TinyLM update &rarr; Gradient Transformer &rarr; LLM adapter</p>
{error}
<form method="post" action="login">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required
 value="{username}" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form></main></body></html>
"""


LOGOUT_PAGE = LOGIN_PAGE.split("{error}")[0].replace("{{", "{").replace("}}", "}").replace(
    "sign in</title>", "sign out</title>") + """
<form method="post" action="logout"><button type="submit" id="sign-out-confirm">Sign out</button></form>
<p class="sub"><a href="./">Back to the dashboard</a></p></main></body></html>
"""


def login_page(error: str = "", username: str = "") -> str:
    err = f'<p class="err" id="login-error">{html.escape(error)}</p>' if error else ""
    return LOGIN_PAGE.format(error=err, username=html.escape(username))


def install_routes(app, sessions: Sessions) -> None:
    """``GET/POST /login``, ``GET/POST /logout`` (the page redirects to /login without a valid
    session: ``ui.gate``)."""
    settings = sessions.settings

    @app.get("/login", response_class=HTMLResponse)
    def login_form():
        return HTMLResponse(login_page())

    @app.post("/login")
    def login_submit(request: Request, username: str = Form(""), password: str = Form("")):
        from storage.throttle import SignInLocked

        username = (username or "").strip()[:100]
        address = (request.client.host if request.client else "unknown")[:64]
        try:
            who = sessions.service.authenticate(username, password or "", address) if username and password else None
        except SignInLocked as e:
            return HTMLResponse(login_page(str(e), username), status_code=429,
                                headers={"Retry-After": str(e.retry_after_s)})
        if who is None:
            return HTMLResponse(login_page("Wrong username or password (or the account is disabled).", username),
                                status_code=401)
        # the first tab, named: a page load then fills only it (ui.common.when_open)
        resp = RedirectResponse("./?tab=upload", status_code=303)
        resp.set_cookie(COOKIE, sessions.issue(who), max_age=int(settings.session_ttl_s), httponly=True,
                        samesite="lax", secure=bool(settings.cookie_secure), path="/")
        return resp

    @app.get("/logout", response_class=HTMLResponse)
    def logout_form():
        """Signing out changes state, so it is a POST (a link or an image on another page cannot
        sign anyone out); this page holds the button."""
        return HTMLResponse(LOGOUT_PAGE)

    @app.post("/logout")
    def logout(request: Request):
        sessions.revoke(request.cookies.get(COOKIE))
        resp = RedirectResponse("login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp


# ---------------------------------------------------------------------- the Account tab


def build_account_tab(svc, demo):
    """Who is signed in, their organisation and role; change password; sign out."""
    from ui.common import guarded, md_escape, status

    with gr.Tab("Account", id="account"):
        me = gr.Markdown("", elem_id="account-info")
        gr.Markdown("[Sign out](logout)", elem_id="sign-out")
        with gr.Accordion("Change password", open=False):
            cur = gr.Textbox(label="Current password", type="password")
            new = gr.Textbox(label="New password (at least 8 characters)", type="password")
            rep = gr.Textbox(label="Repeat the new password", type="password")
            change = gr.Button("Change password")
            msg = gr.Markdown(elem_id="password-status")

    def show_me(request: gr.Request):
        who = svc.who(request)
        a = svc.account(who)
        scope = ("you see every organisation's jobs and results, and the Admin tab" if who.is_admin
                 else f"you see only organisation **{md_escape(a['org'])}**'s datasets, adapters, jobs and results")
        return (f"Signed in as **{md_escape(a['username'])}** — organisation **{md_escape(a['org'])}**, role "
                f"**{a['role']}**; {scope}.")

    @guarded(msg)
    def change_pw(c, n, r, request: gr.Request):
        svc.change_password(svc.who(request), c, n, r)
        return status(True, "Password changed. Every session of this account has ended: "
                            "[sign in again](login) with the new password.")

    demo.load(show_me, outputs=me, api_name=False)
    change.click(change_pw, [cur, new, rep], msg, api_name=False)
    return me
