"""When an update is out of distribution for a mapper: the thresholds and what they tell people.

gtapp.mapper.base.OodReference measures how far a TinyLM update lies from the mapper's shadow
updates (pure Python here, so the dashboard can explain a model card without loading torch):

* ``score``: nearest-shadow distance over the typical distance between two shadow *runs*;
* ``task_score``: the same over the typical distance between two shadow *tasks'* updates, which
  keeps its meaning as the pair set grows denser. Where a mapper has it, it decides.
"""

from __future__ import annotations

from typing import Optional

#: Run-relative score above which an update is out of distribution, where the mapper has no task
#: reference (a pair set of one task, or a mapper fitted before the task reference).
OOD_THRESHOLD = 2.0
#: Task score (nearest-shadow distance over the typical distance between two shadow tasks' updates)
#: above which an update is out of distribution, where the mapper has a task reference. On the
#: provider's 30 held-out shadow cases without DP (bench/results/refine_calibration_ci_task_*):
#: every held-out task scoring above it got a mapped adapter recovering at most 0.03 of the NLL
#: gap (8 of 8: 0.03 to -0.89); held-out runs of known tasks all scored at most 0.85.
#: ``--refine auto`` refines above the same value (gtapp.refine.AUTO_REFINE_TASK_OOD).
OOD_TASK_THRESHOLD = 1.5


def deciding_score(record: dict) -> Optional[tuple[str, float]]:
    """Which score of an OOD record (gtapp.mapper.base.OodReference.score) decides, and its value:
    ("task_score", v) where the mapper has a task reference, else ("score", v); None with neither."""
    for measure in ("task_score", "score"):
        value = record.get(measure)
        if value is not None and value == value:
            return measure, float(value)
    return None


#: Fewer shadow tasks than this and the task score rests on too few between-task distances: with
#: two, the reference is the one distance between them (on ci's two-task pair set a private task
#: scored 1.1 and kept a mapped adapter worse than the base LLM).
MIN_TASKS_FOR_TASK_SCORE = 3


def card_warnings(card: dict) -> list[str]:
    """What a provider should know before offering a mapper version, from its model card: how far
    its out-of-distribution warning and ``refine: auto`` can be trusted."""
    ood = card.get("ood") or {}
    tasks, tref = ood.get("shadow_tasks"), ood.get("task_reference_nn_distance")
    if tref is None or tref != tref:
        return [f"no task reference (pair set of {tasks if tasks is not None else 'unknown'} shadow task(s), or a "
                "mapper fitted before it): the OOD warning and refine: auto use the run-relative score, whose "
                "threshold was calibrated on 15 shadow tasks and fires less as the pair set grows denser"]
    if tasks is not None and tasks < MIN_TASKS_FOR_TASK_SCORE:
        return [f"only {tasks} shadow tasks: the task score compares an update with the distance between just "
                f"{tasks} tasks, so the OOD warning and refine: auto can keep a mapped adapter that hurts; "
                f"add shadow tasks (at least {MIN_TASKS_FOR_TASK_SCORE}) or tell organisations to use refine: always"]
    return []


def ood_warning(ood: dict) -> str:
    """What an out-of-distribution record (gtapp.mapper.base.OodReference.score) tells the user."""
    if ood.get("measure") == "task_score":
        v = ood["task_score"]
        return (f"out of distribution for this mapper (task score {v:.2f} > {ood['threshold']:g}: its update is "
                f"{v:.1f}x as far from the nearest shadow update as one shadow task's updates typically are from "
                "another's; on the provider's held-out shadow tasks, mapped adapters above this score recovered "
                "at most 0.03 of the NLL gap without DP); refine it (refine: auto or always) or expect a poor "
                "LLM adapter")
    v = ood["score"]
    return (f"out of distribution for this mapper (score {v:.2f} > {ood['threshold']:g}: its update is {v:.1f}x "
            "farther from the nearest shadow update than shadow updates are from each other); expect a poor "
            "LLM adapter")
