"""The job system: every long step (fine-tune, evaluation, shadow pairs, mapper training,
benchmark) runs as a job in a worker, with progress, cancel, retries and stored outcomes.

Imports go one way (no cycles), from the job API down to running one job:

* ``client``        the job API (submit / get / list / cancel / retry / wait), with tenancy
                    and the fair share's caps
* ``embedded``      the in-process worker used when no broker is configured
* ``reaper``        requeues or fails jobs whose worker died, re-sends lost messages
* ``dispatch``      sends a queued job to the broker
* ``celery_app``    the Celery worker's entry point (``celery -A workers.celery_app``), with
                    its process hooks; ``celery_config`` the app itself; ``celery_tasks`` one
                    thin task per job kind
* ``broker``        task names, broker epochs, redacted URLs
* ``fairness``      which queued job a free worker runs next (round-robin across organisations)
* ``runner``        claims and runs one job (shared by both kinds of worker)
* ``jobs``          the job-kind registry: kind -> function(params, ctx)
* ``health``        container health checks

The core library ``gtapp`` never imports this package.
"""
