"""Start the gtapp dashboard: ``python app.py`` (embedded default: SQLite under ``data/`` and an
in-process job worker; with ``GTAPP_BROKER_URL`` set, jobs go to the Celery workers).

On an empty database the first admin is created from the settings
(``GTAPP_FIRST_ADMIN_ORG`` / ``_USERNAME`` / ``_PASSWORD``), and every zoo folder found under
``GTAPP_ZOO_DIR`` (default ``data/zoo``) is registered as a model pair. Host and port come
from ``GTAPP_DASHBOARD_HOST`` / ``GTAPP_DASHBOARD_PORT`` or ``--host`` / ``--port``.

Requests never train and never import torch: work is submitted as jobs and polled;
uploaded adapters are validated in a child process.
"""

from __future__ import annotations

import argparse
import logging


def main(argv=None) -> None:
    from storage.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description="gtapp dashboard")
    parser.add_argument("--host", default=settings.dashboard_host)
    parser.add_argument("--port", type=int, default=settings.dashboard_port)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from ui.app import create_app

    app = create_app(settings)
    password = None if settings.first_admin_password else _first_start_password(settings)
    print(f"gtapp dashboard on http://{args.host}:{args.port}/", flush=True)
    if password:
        print(f"first start: sign in as '{settings.first_admin_username}' with password {password} "
              f"(set GTAPP_FIRST_ADMIN_PASSWORD to choose it; change it on the Account tab)", flush=True)
    # open event streams (live job tables) must not hold a shutdown for long
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)


def _first_start_password(settings) -> str | None:
    """With no admin password configured and a first admin that has none yet (a fresh
    machine), give it a random one, shown once on the console, so one command gives a
    dashboard one can sign in to."""
    import secrets

    from storage.accounts import set_password
    from storage.db import session_scope
    from storage.models import User
    from sqlalchemy import select

    with session_scope(settings=settings) as s:
        admin = s.scalars(select(User).where(User.username == settings.first_admin_username)).one_or_none()
        if admin is None or admin.password_hash:
            return None
        password = secrets.token_urlsafe(12)
        set_password(s, admin.username, password)
    return password


if __name__ == "__main__":
    main()
