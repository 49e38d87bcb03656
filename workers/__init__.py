"""The job system: every long step (fine-tune, evaluation, shadow pairs, mapper training,
benchmark) runs as a job in a worker, with progress, cancel, retries and stored outcomes.

* ``client``      the job API (submit / get / list / cancel / retry / wait), with tenancy
* ``jobs``        the job-kind registry: kind -> function(params, ctx)
* ``runner``      claims and runs one job (shared by both kinds of worker)
* ``celery_app``  the Celery app (Redis broker); ``tasks`` one thin task per job kind
* ``embedded``    the in-process worker used when no broker is configured
* ``reaper``      requeues or fails jobs whose worker died
* ``health``      container health checks; ``testing`` real-service helpers for tests

The core library ``gtapp`` never imports this package.
"""
