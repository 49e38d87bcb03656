"""Job kinds: kind -> a Python function ``fn(params, ctx) -> outputs``, one module per kind
(registered by the ``@job`` decorator of ``registry`` when this package is imported).

``ctx`` (a :class:`workers.runner.JobContext`) gives ``progress(fraction, stage, eta)``
(written to the job row; raises ``gtapp.progress.Cancelled`` once a cancel was asked),
``progress_fn`` (the same as a ``gtapp.progress.ProgressFn`` to hand to gtapp functions),
``log(msg)``, ``work_dir`` (this attempt's empty scratch folder), ``store`` (the artifact
store), ``seed``, ``session()`` (a DB session) and ``on_success(fn)`` (register rows in the
transaction that marks the job succeeded, so a job's outputs appear only if it finished).

gtapp (and so torch / CUDA) is imported inside the job functions only, never at import of
this module, so a worker's parent process never touches CUDA before it forks.
"""

from workers.jobs import (  # noqa: F401,E402
    bench,
    collaborate,
    evaluate,
    finetune,
    generate,
    selftest,
    shadow,
    train_mapper,
    try_it,
    zoo,
)
from workers.jobs.common import (  # noqa: F401
    COMBINE_METHODS,
    MAPPER_KINDS,
    MAPPER_METHOD,
    ORGANISATIONS,
    WEIGHTINGS,
)
from workers.jobs.evaluate import EVAL_METRICS  # noqa: F401
from workers.jobs.registry import REGISTRY, JobNotAvailable, JobSpec, get_spec, job  # noqa: F401
from workers.jobs.zoo import ZOO_PRESETS  # noqa: F401
