"""Load benchmark of the job system through the real queue.

Submits N ``selftest`` jobs through the job API to a real Redis broker and real Celery
worker processes, and measures:

* throughput: jobs finished per second (first submit to last finish),
* latency of the API calls: ``submit`` and ``get`` (status), p50 / p95 / max,
* end-to-end job latency (created -> finished), p50 / p95,
* that every job finished exactly once (attempts == 1, one execution each).

By default it starts its own workers (``--workers``, each ``-c 1``) against a fresh SQLite
database (or ``--database-url``) and the Redis at ``--broker-url``, under a private key
prefix, and stops them afterwards. Prints a table; ``--out FILE`` also writes JSON.

    python bench/jobs_load.py --n 200 --workers 2 --out bench-jobs.json
    python bench/jobs_load.py --n 100 --database-url postgresql://postgres@127.0.0.1/gtapp_bench
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": pct(values, 0.5) * 1e3, "p95_ms": pct(values, 0.95) * 1e3,
            "max_ms": (max(values) if values else float("nan")) * 1e3,
            "mean_ms": (statistics.fmean(values) if values else float("nan")) * 1e3}


def run(n: int, workers: int, broker_url: str, database_url: str | None, steps: int, step_s: float,
        timeout: float, root: Path) -> dict:
    from sqlalchemy import select

    from storage.accounts import create_user
    from storage.artifacts import ArtifactStore
    from storage.db import session_scope
    from storage.models import Job
    from storage.settings import Settings
    from workers.client import JobClient
    from testkit.services import CeleryWorker, redis_reachable

    if not redis_reachable(broker_url):
        raise SystemExit(f"no Redis answers at {broker_url}; start it or pass --broker-url")
    settings = Settings(data_dir=root, database_url=database_url or f"sqlite:///{root / 'bench.db'}",
                        broker_url=broker_url, broker_key_prefix=f"gtapp-bench-{uuid.uuid4().hex[:8]}:",
                        heartbeat_interval_s=2.0, heartbeat_stale_s=30.0, _env_file=None,
                        # a throughput benchmark: one user submits every job, past the per-user cap
                        max_active_jobs_per_org=n + 1, max_active_jobs_per_user=n + 1)
    client = JobClient(settings)
    user = f"bench{uuid.uuid4().hex[:6]}"
    with session_scope(settings=settings) as s:
        create_user(s, user, user, "bench-password")
    pool = [CeleryWorker(settings, root / f"worker{i}.log", name=f"bench{i}") for i in range(workers)]
    try:
        for w in pool:
            w.start()
        submit_lat, status_lat, ids = [], [], []
        t0 = time.monotonic()
        for i in range(n):
            t = time.perf_counter()
            ids.append(client.submit("selftest", {"steps": steps, "step_s": step_s, "payload_kb": 1, "seed": i}, user))
            submit_lat.append(time.perf_counter() - t)
        t_submitted = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending)[:20]:  # status calls, as a dashboard would make them
                t = time.perf_counter()
                view = client.get(job_id, user)
                status_lat.append(time.perf_counter() - t)
                if view.finished:
                    pending.discard(job_id)
            with session_scope(settings=settings) as s:
                done = set(s.scalars(select(Job.id).where(Job.id.in_(list(pending)),
                                                          Job.status.in_(("succeeded", "failed", "cancelled")))))
            pending -= done
            time.sleep(0.05)
        wall = time.monotonic() - t0
        with session_scope(settings=settings) as s:
            rows = s.execute(select(Job.id, Job.status, Job.attempts, Job.created_at, Job.finished_at)
                             .where(Job.id.in_(ids))).all()
        store = ArtifactStore(settings.artifacts_dir)
        executions = sum((store.run_dir(r[0]) / "executions.log").read_text().count("attempt=")
                         for r in rows if (store.run_dir(r[0]) / "executions.log").exists())
        e2e = [(r[4] - r[3]).total_seconds() for r in rows if r[4] is not None]
        statuses = [r[1] for r in rows]
        return {
            "n_jobs": n, "workers": workers, "worker_concurrency": 1, "steps": steps, "step_s": step_s,
            "database": settings.db_url.split(":", 1)[0], "broker": "redis",
            "succeeded": statuses.count("succeeded"), "failed": statuses.count("failed"),
            "unfinished": len(pending), "exactly_once": executions == n and all(r[2] == 1 for r in rows),
            "submit_wall_s": t_submitted, "wall_s": wall, "jobs_per_s": statuses.count("succeeded") / wall,
            "submit": summary(submit_lat), "status": summary(status_lat), "end_to_end": summary(e2e),
            "python": platform.python_version(), "machine": platform.machine(),
        }
    finally:
        for w in pool:
            w.stop()
        import redis

        r = redis.Redis.from_url(broker_url)  # leave nothing behind in the shared Redis
        keys = list(r.scan_iter(match=f"{settings.broker_key_prefix}*", count=1000))
        if keys:
            r.delete(*keys)


def table(r: dict) -> str:
    lines = [f"jobs: {r['n_jobs']} selftest ({r['steps']} step(s) of {r['step_s']}s) on {r['workers']} worker(s), "
             f"{r['database']} + {r['broker']}",
             f"succeeded {r['succeeded']}, failed {r['failed']}, unfinished {r['unfinished']}, "
             f"exactly once: {r['exactly_once']}",
             f"throughput: {r['jobs_per_s']:.1f} jobs/s  (wall {r['wall_s']:.1f}s, "
             f"submitting took {r['submit_wall_s']:.1f}s)",
             "",
             f"{'call':<12} {'n':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}"]
    for key in ("submit", "status", "end_to_end"):
        s = r[key]
        lines.append(f"{key:<12} {s['n']:>6} {s['p50_ms']:>9.1f} {s['p95_ms']:>9.1f} {s['max_ms']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="jobs to submit")
    p.add_argument("--workers", type=int, default=1, help="Celery worker processes to start (-c 1 each)")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--step-s", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gtapp-bench-") as tmp:
        result = run(args.n, args.workers, args.broker_url, args.database_url, args.steps, args.step_s,
                     args.timeout, Path(tmp))
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0 if result["succeeded"] == args.n and result["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
