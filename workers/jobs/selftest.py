"""Selftest: an honest diagnostic, no ML"""

from __future__ import annotations

import random
import time

from workers.jobs.registry import job


def _check_selftest(p: dict) -> None:
    if not 1 <= p["steps"] <= 100_000:
        raise ValueError("steps must be in 1..100000")
    if not 0 <= p["step_s"] <= 60:
        raise ValueError("step_s must be in 0..60 seconds")
    if not 0 <= p["payload_kb"] <= 1_048_576:
        raise ValueError("payload_kb must be in 0..1048576")


@job("selftest", queue="cpu", defaults={"steps": 10, "step_s": 0.1, "payload_kb": 64, "fail_at": None},
     validate=_check_selftest)
def selftest(params: dict, ctx) -> dict:
    """Diagnostic: runs `steps` steps of `step_s` seconds, streaming `payload_kb` KiB of seeded
    random bytes into one artifact, reporting progress and honouring cancel at every step;
    `fail_at=k` raises at step k (to exercise the failure path)."""
    from gtapp.progress import Tracker

    steps, step_s = params["steps"], params["step_s"]
    rng = random.Random(params["seed"])
    total = params["payload_kb"] * 1024
    per_step, extra = divmod(total, steps)
    with open(ctx.run_dir / "executions.log", "a") as fh:  # one line per execution: lets tests count runs
        fh.write(f"attempt={ctx.attempt} worker={ctx.worker}\n")
    ctx.log(f"selftest: {steps} steps of {step_s}s, {total} bytes, seed {params['seed']}")
    tracker = Tracker(ctx.progress_fn, "selftest", steps)
    tracker.update(0)
    with ctx.store.writer() as w:
        for i in range(steps):
            if step_s:
                time.sleep(step_s)
            if params["fail_at"] is not None and i == params["fail_at"]:
                raise RuntimeError(f"selftest was asked to fail at step {i}")
            w.write(rng.randbytes(per_step + (extra if i == steps - 1 else 0)))
            tracker.update(i + 1)
        sha = w.commit()
    ctx.log(f"selftest: wrote artifact {sha[:12]} ({w.size} bytes)")
    return {"artifact": sha, "bytes": w.size, "steps": steps}
