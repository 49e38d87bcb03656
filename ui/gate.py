"""The dashboard's front door: one ASGI middleware in front of every route, FastAPI's and
Gradio's, so every rule below holds for what an attacker sends, not only for what the page
sends.

* **Signed in.** Only sign-in and sign-out (``/login``, ``/logout``) and ``/healthz`` answer without a valid
  session; the page itself redirects to the sign-in page, everything else answers 401.
* **Known routes only.** Of Gradio's routes, only those the page uses are served
  (:data:`GRADIO_ROUTES`); the rest (monitoring, profiling, run history, streams, ...) 404.
* **Same origin.** A state-changing request (any method but GET/HEAD/OPTIONS) whose
  ``Origin`` is not this server's (or one of ``settings.allowed_origins``), or that the
  browser marks ``Sec-Fetch-Site: cross-site``, is refused; CORS headers are sent only to the
  configured origins (Gradio would reflect any localhost origin with credentials).
* **Session hashes belong to one sign-in.** A Gradio session hash (the page's id for its
  event stream and server-side state) is bound to the sign-in that first used it; another
  sign-in using it gets 403, so no one reads another's results or state by its hash.
* **Uploads.** ``POST /gradio_api/upload`` is answered here (``ui.uploads``): into a fresh
  folder of this sign-in's own. Every JSON body is read before it is passed on; any file
  object in it (a dict with a ``path``, ``url`` or Gradio's ``FileData`` marker) must name an
  upload of this sign-in (:meth:`ui.uploads.Uploads.owned`), or the request is refused before
  Gradio or a handler opens anything. The file routes (``/gradio_api/file=...``) serve this
  sign-in's own uploads, from here, and nothing else.

Why here and not in Gradio: the app is mounted (``gr.mount_gradio_app``), which never sets
``blocks.has_launched``, so Gradio's own allowed-path check returns early; and even where it
runs, it accepts any file in its cache folder, whoever uploaded it.
"""

from __future__ import annotations

import json
import logging
import os
from http.cookies import SimpleCookie
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

import anyio

log = logging.getLogger("gtapp.dashboard.gate")

MAX_JSON_BODY = 4 * 2**20  # an event's inputs: text, numbers, file references (files come by upload)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PUBLIC = {"/login", "/logout", "/healthz"}
# Gradio's routes the page uses (exact paths, and prefixes ending in "/" or "="). Anything else of
# Gradio's answers 404: a route that is not served cannot leak.
GRADIO_EXACT = {"/", "/config", "/config/", "/theme.css", "/favicon.ico", "/manifest.json", "/robots.txt",
                "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/queue/status",
                "/gradio_api/cancel", "/gradio_api/upload", "/gradio_api/upload_progress",
                "/gradio_api/startup-events", "/gradio_api/theme.css", "/gradio_api/info", "/gradio_api/info/",
                "/gradio_api/reset", "/gradio_api/reset/", "/gradio_api/app_id", "/gradio_api/login_check"}
GRADIO_PREFIXES = ("/assets/", "/static/", "/svelte/", "/gradio_api/heartbeat/", "/gradio_api/file=",
                   "/gradio_api/call/", "/gradio_api/run/")
FILE_ROUTES = ("/gradio_api/file=", "/file=", "/gradio_api/file/")
OWN_ROUTES = ("/download/",)  # the dashboard's own routes (ui.web), which check the session themselves
GRADIO_ROUTES = (GRADIO_EXACT, GRADIO_PREFIXES)
FILE_MARKER = "gradio.FileData"


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _file_objects(obj: Any, out: list, depth: int = 0) -> list:
    """Every dict in a JSON value that Gradio would treat as a file (it has a ``path`` or a
    ``url``, or Gradio's FileData marker), however deeply nested."""
    if depth > 64:
        raise Refused(400, "the request is nested too deeply")
    if isinstance(obj, dict):
        meta = obj.get("meta")
        if "path" in obj or "url" in obj or (isinstance(meta, dict) and meta.get("_type") == FILE_MARKER):
            out.append(obj)
        for v in obj.values():
            _file_objects(v, out, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _file_objects(v, out, depth + 1)
    return out


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


class Gate:
    """ASGI middleware; see the module docstring. ``sessions``: :class:`ui.auth.Sessions`;
    ``uploads``: :class:`ui.uploads.Uploads`; ``allowed_origins``: extra origins (scheme://host[:port])
    allowed to make state-changing and CORS requests."""

    def __init__(self, app, sessions, uploads, allowed_origins: tuple[str, ...] = (), max_bound_hashes: int = 100_000):
        self.app = app
        self.sessions = sessions
        self.uploads = uploads
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins if o}
        self._hash_owner: dict[str, str] = {}  # Gradio session hash -> owner (one sign-in)
        self._max_hashes = max_bound_hashes

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        try:
            await self._handle(scope, receive, send)
        except Refused as r:
            await self._reply(scope, send, r.status, r.message)

    async def _handle(self, scope, receive, send):
        from ui.auth import COOKIE

        path = scope.get("path") or "/"
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        headers = _headers(scope)
        origin = headers.get("origin")
        cross = origin is not None and not self._same_origin(origin, headers, scope)
        if scope["type"] == "websocket":
            raise Refused(404, "not found")
        if method == "OPTIONS" and cross and not origin_allowed(origin, self.allowed_origins):
            raise Refused(403, "cross-origin requests are not allowed from this origin")
        foreign = (cross or headers.get("sec-fetch-site") == "cross-site") and \
            not origin_allowed(origin, self.allowed_origins)
        if method not in SAFE_METHODS and foreign:
            raise Refused(403, "a request from another site was refused (its Origin is not this dashboard's)")
        send = self._cors_filter(send, origin)

        if path in PUBLIC:
            return await self.app(scope, receive, send)
        token = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        token = token.value if token is not None else None
        who = await anyio.to_thread.run_sync(self.sessions.principal, token) if token else None
        if who is None:
            if method == "GET" and path in ("/", ""):
                return await self._redirect(send, "login")
            raise Refused(401, "not signed in")
        owner = self.sessions.owner(token)

        if path.startswith(OWN_ROUTES):
            return await self.app(scope, receive, send)
        if not (path in GRADIO_EXACT or path.startswith(GRADIO_PREFIXES)):
            raise Refused(404, "not found")
        if path.startswith(FILE_ROUTES):
            target = path.split("=", 1)[1] if "=" in path else ""
            from urllib.parse import unquote

            target = unquote(target)
            if not self.uploads.owned(owner, target):
                raise Refused(404, "not found")
            from starlette.responses import FileResponse

            # served here, not by Gradio's route (which serves whatever is in its cache folder)
            return await FileResponse(target, filename=os.path.basename(target), content_disposition_type="attachment",
                                      headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})(
                scope, receive, send)

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        hashes = list(query.get("session_hash", []))
        if path.startswith("/gradio_api/heartbeat/"):
            hashes.append(path.rsplit("/", 1)[-1])
        if path in ("/gradio_api/upload", "/gradio_api/upload_progress"):
            hashes += ["upload:" + u for u in query.get("upload_id", [])]  # progress names file names
        if path == "/gradio_api/upload":
            self._bind(hashes, owner)
            return await self._upload(scope, receive, send, owner)
        if method not in SAFE_METHODS:
            body = await self._read_body(receive)
            self._check_body(body, headers, owner, hashes)
            self._bind(hashes, owner)
            return await self.app(scope, _replay(body, receive), send)
        self._bind(hashes, owner)
        return await self.app(scope, receive, send)

    # ------------------------------------------------------------------ rules
    def _same_origin(self, origin: str, headers: dict, scope) -> bool:
        try:
            o = urlsplit(origin)
        except ValueError:
            return False
        host = headers.get("host", "")
        scheme = scope.get("scheme", "http")
        forwarded = headers.get("x-forwarded-host")  # behind a reverse proxy that sets it
        return bool(o.netloc) and (o.netloc.lower() in {host.lower(), (forwarded or "").lower()}) \
            and o.scheme in (scheme, headers.get("x-forwarded-proto", scheme))

    def _bind(self, hashes: list[str], owner: str) -> None:
        for h in hashes:
            if not h:
                continue
            bound = self._hash_owner.get(h)
            if bound is None:
                if len(self._hash_owner) >= self._max_hashes:  # oldest bindings go first
                    for k in list(self._hash_owner)[: self._max_hashes // 10]:
                        del self._hash_owner[k]
                self._hash_owner[h] = owner
            elif bound != owner:
                raise Refused(403, "this page session belongs to another sign-in; reload the page")

    def _check_body(self, body: bytes, headers: dict, owner: str, hashes: list[str]) -> None:
        if not body:
            return
        ctype = headers.get("content-type", "")
        if "json" not in ctype and not body.lstrip()[:1] in (b"{", b"["):
            return  # not JSON: nothing in it names a file (form posts go to our own routes)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "the request body is not valid JSON") from None
        if isinstance(data, dict) and isinstance(data.get("session_hash"), str):
            hashes.append(data["session_hash"])
        # Gradio reads only a file object's path when it prepares inputs (its url is for display),
        # so the path is what must be this sign-in's upload; an object with only a url is refused too.
        for f in _file_objects(data, []):
            if not self.uploads.owned(owner, f.get("path")):
                raise Refused(403, "a file in this request was not uploaded in this session; upload it again")

    async def _read_body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise Refused(400, "the client went away")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_JSON_BODY:
                raise Refused(413, f"the request is over {MAX_JSON_BODY // 2**20} MiB; files go by upload")
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _upload(self, scope, receive, send, owner: str):
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        from ui.uploads import UploadRefused

        if scope.get("method") != "POST":
            raise Refused(405, "upload with POST")
        try:
            upload_id = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("upload_id", [None])[0]
            paths = await self.uploads.receive(Request(scope, receive), owner, upload_id)
        except UploadRefused as e:
            raise Refused(e.status_code, str(e)) from None
        await JSONResponse(paths)(scope, receive, send)

    # ------------------------------------------------------------------ plumbing
    def _cors_filter(self, send, origin: Optional[str]) -> Callable:
        allowed = origin is not None and origin.lower().rstrip("/") in self.allowed_origins

        async def wrapped(message):
            if message["type"] == "http.response.start" and not allowed:
                message = dict(message)
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if not k.lower().startswith(b"access-control-")]
            await send(message)
        return wrapped

    @staticmethod
    async def _reply(scope, send, status: int, message: str) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _redirect(send, location: str) -> None:
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def origin_allowed(origin: Optional[str], allowed: set) -> bool:
    return origin is not None and origin.lower().rstrip("/") in allowed


def _replay(body: bytes, receive) -> Callable:
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
