"""One thin Celery task per job kind: pick the fairest queued job of that kind (workers.fairness),
load the row, run the job function, record the outcome (all in workers.runner.run_job, shared
with the embedded worker). Nothing here imports
torch; CUDA is first touched inside the job function, in the pool process."""

from __future__ import annotations

from celery import Celery

from storage.db import session_scope
from storage.settings import Settings
from workers.broker import task_name
from workers.fairness import next_job
from workers.jobs import REGISTRY
from workers.runner import run_job, worker_name


def _make_task(kind: str):
    def task(self, job_id: int) -> str:
        settings = self.app.gtapp_settings
        worker = worker_name(self.request.hostname or None)
        tried: set[int] = set()
        while len(tried) < 50:  # the fairest queued job of this kind (workers.fairness), until one is ours
            try:
                with session_scope(settings=settings) as s:
                    pick = next_job(s, kind, exclude=tried)
            except Exception:  # noqa: BLE001 - e.g. a database blip: run the message's own job (run_job retries)
                break
            if pick is None:
                break
            status = run_job(pick, worker=worker, settings=settings, expected_kind=kind)
            if status != "skipped":
                return status
            tried.add(pick)  # another worker claimed it first
        if job_id in tried:
            return "skipped"
        return run_job(int(job_id), worker=worker, settings=settings, expected_kind=kind)
    task.__name__ = f"run_{kind}"
    task.__doc__ = f"Run one '{kind}' job."
    return task


def register_tasks(app: Celery, settings: Settings) -> None:
    for kind, spec in REGISTRY.items():
        soft = spec.soft_time_limit_s or settings.job_soft_time_limit_s
        hard = soft + (settings.job_hard_time_limit_s - settings.job_soft_time_limit_s)
        app.task(name=task_name(kind), bind=True, shared=False, acks_late=True, reject_on_worker_lost=True,
                 soft_time_limit=soft, time_limit=hard)(_make_task(kind))
    app.conf.task_routes = {task_name(kind): {"queue": spec.queue} for kind, spec in REGISTRY.items()}
