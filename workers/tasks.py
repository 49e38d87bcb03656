"""One thin Celery task per job kind: load the row, run the job function, record the outcome
(all in workers.runner.run_job, shared with the embedded worker). Nothing here imports
torch; CUDA is first touched inside the job function, in the pool process."""

from __future__ import annotations

from celery import Celery

from storage.settings import Settings


def _make_task(kind: str):
    def task(self, job_id: int) -> str:
        from workers.runner import run_job, worker_name

        return run_job(int(job_id), worker=worker_name(self.request.hostname or None),
                       settings=self.app.gtapp_settings, expected_kind=kind)
    task.__name__ = f"run_{kind}"
    task.__doc__ = f"Run one '{kind}' job."
    return task


def register_tasks(app: Celery, settings: Settings) -> None:
    from workers.dispatch import task_name
    from workers.jobs import REGISTRY

    for kind, spec in REGISTRY.items():
        soft = spec.soft_time_limit_s or settings.job_soft_time_limit_s
        hard = soft + (settings.job_hard_time_limit_s - settings.job_soft_time_limit_s)
        app.task(name=task_name(kind), bind=True, shared=False, acks_late=True, reject_on_worker_lost=True,
                 soft_time_limit=soft, time_limit=hard)(_make_task(kind))
    app.conf.task_routes = {task_name(kind): {"queue": spec.queue} for kind, spec in REGISTRY.items()}
