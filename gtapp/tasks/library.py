"""Task libraries for shadow pairs: which tasks a provider fine-tunes on for a protocol
(torch-free, so presets and job checks can name them)."""

from __future__ import annotations

from typing import Iterable

from gtapp.tasks.universe import task_names

DATASET_PREFIX = "dataset:"  # a shadow task read from a real public dataset's train split


def task_topic(name: str) -> str:
    """A generated task's topic: its name without the last variant part ("dialogue/travel" for
    dialogue/travel-short and dialogue/travel-chatty: the same topic in another style)."""
    return name.rsplit("-", 1)[0]


def task_library(exclude: Iterable[str] = (), datasets: Iterable[str] = (),
                 exclude_topics_of: Iterable[str] = ()) -> tuple[str, ...]:
    """Every generated task variant (all five families) but the ``exclude``d ones and every
    variant of a topic in ``exclude_topics_of`` (the protocol's private tasks: a shadow task on
    the private task's topic in another style would make "cross-task" nearly in-distribution),
    then ``dataset:<name>`` for each real public dataset given (its train split;
    ``gtapp.shadow.ShadowConfig.dataset_paths`` says where)."""
    skip, topics = set(exclude), {task_topic(t) for t in exclude_topics_of}
    return tuple(t for t in task_names() if t not in skip and task_topic(t) not in topics) + \
        tuple(f"{DATASET_PREFIX}{d}" for d in datasets)
