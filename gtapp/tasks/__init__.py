"""Task universe: generated task families mirroring the paper's datasets (see ``universe``)."""

from gtapp.tasks.base import Example, Task  # noqa: F401
from gtapp.tasks.universe import FAMILIES, VARIANTS, make_task, pretraining_corpus, task_names  # noqa: F401
