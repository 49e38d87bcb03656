"""The dashboard's own HTTP routes besides Gradio's: downloads.

* ``GET /download/adapter/{id}``: an adapter folder as a zip, streamed from the artifact
  store, for the signed-in user if the adapter is their organisation's (admins: any).
* ``GET /download/export/{token}``: a file a handler prepared for this user (e.g. the
  Compare tab's CSV), kept in memory for a few minutes and only for the user it was made for.

Both resolve the user from the session cookie on every request; a foreign or unknown id
answers 404 exactly like a missing one; no session answers 401. Nothing is served from
Gradio's temporary folder.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Optional

from fastapi import Request  # module level: route annotations must resolve here
from fastapi.responses import JSONResponse, Response

from storage.accounts import Principal

EXPORT_TTL_S = 600
_MAX_EXPORTS = 1000


class Exports:
    def __init__(self):
        self._items: dict[str, tuple[int, str, bytes, float]] = {}
        self._lock = threading.Lock()

    def put(self, who: Principal, filename: str, data: bytes) -> str:
        token = secrets.token_urlsafe(18)
        now = time.time()
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if v[3] > now}
            while len(self._items) >= _MAX_EXPORTS:
                self._items.pop(next(iter(self._items)))
            self._items[token] = (who.user_id, filename, data, now + EXPORT_TTL_S)
        return token

    def get(self, who: Principal, token: str) -> Optional[tuple[str, bytes]]:
        item = self._items.get(token)
        if item is None or item[0] != who.user_id or item[3] < time.time():
            return None
        return item[1], item[2]


_exports: dict[int, Exports] = {}


def exports(svc) -> Exports:
    return _exports.setdefault(id(svc), Exports())


def install_routes(app, svc, sessions) -> None:
    from ui.auth import COOKIE
    from ui.service import NotFound

    def who_or_none(request: Request) -> Optional[Principal]:
        return sessions.principal(request.cookies.get(COOKIE))

    def attachment(filename: str, data: bytes, media_type: str) -> Response:
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/download/adapter/{adapter_id}")
    def download_adapter(adapter_id: str, request: Request):
        who = who_or_none(request)
        if who is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        try:
            filename, data = svc.adapter_zip(who, adapter_id)
        except NotFound as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        return attachment(filename, data, "application/zip")

    @app.get("/download/export/{token}")
    def download_export(token: str, request: Request):
        who = who_or_none(request)
        if who is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        item = exports(svc).get(who, token)
        if item is None:
            return JSONResponse({"error": "export not found or expired; make it again"}, status_code=404)
        filename, data = item
        return attachment(filename, data, "text/csv" if filename.endswith(".csv") else "application/octet-stream")
