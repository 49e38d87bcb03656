"""Container health checks (exit 0 healthy, 1 not), used by the Dockerfile and compose:

    python -m workers.health              # the database answers, and the broker if one is set
    python -m workers.health dashboard    # ... and the dashboard answers HTTP on --url
    python -m workers.health worker       # ... and this host's Celery worker answers a ping
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.request


def check_deps(settings) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    if settings.broker_url:
        import redis

        redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=3).ping()


def check_worker(settings, node: str | None = None) -> None:
    from workers.celery_config import make_celery

    node = node or f"worker@{socket.gethostname()}"
    replies = make_celery(settings, with_backend=False).control.ping(destination=[node], timeout=5.0)
    if not replies:
        raise RuntimeError(f"no ping reply from {node}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", choices=["deps", "dashboard", "worker"], default="deps")
    parser.add_argument("--url", default="http://127.0.0.1:7860/", help="dashboard URL to probe")
    parser.add_argument("--node", default=None, help="Celery node name (default worker@<hostname>)")
    args = parser.parse_args(argv)
    from storage.settings import get_settings

    settings = get_settings()
    try:
        check_deps(settings)
        if args.role == "dashboard":
            with urllib.request.urlopen(args.url, timeout=5) as r:  # noqa: S310 - fixed local URL
                if r.status >= 400:
                    raise RuntimeError(f"dashboard answered HTTP {r.status}")
        elif args.role == "worker" and settings.broker_url:
            check_worker(settings, args.node)
    except Exception as e:
        print(f"unhealthy: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
