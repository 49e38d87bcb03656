"""Benchmark presets: which tasks, how much data, how many shadow runs, which methods."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from gtapp.choices import BENCH_METHODS as ALL_METHODS
from gtapp.tasks.library import task_library


@dataclass(frozen=True)
class BenchPreset:
    name: str
    zoo_preset: str
    seeds: tuple[int, ...]
    # in-distribution: each task's train split halved into the provider's public half and the
    # organisation's private half
    in_dist_tasks: tuple[str, ...]
    # cross-task: mapper trained on shadow tasks only; private tasks never touched by it
    cross_shadow_tasks: tuple[str, ...]
    cross_private_tasks: tuple[str, ...]
    n_public: int  # examples in the provider's public half (in-distribution)
    n_private: int  # examples in the organisation's private data
    n_test: int
    eval_limit: Optional[int]  # test examples scored per method (None: all)
    shadow_subsets: int
    shadow_subset_size: int
    shadow_steps: int
    shadow_snapshots: tuple[int, ...]
    tiny_steps: int  # TinyLM fine-tune (organisation side, and the teacher for distillation)
    tiny_lr: float
    llm_steps: int  # oracle, public_ft and every distillation baseline (same budget)
    llm_lr: float
    batch_size: int
    dp_epsilons: tuple[Optional[float], ...] = (None, 8.0, 3.0, 1.0)
    dp_delta: float = 1e-5
    clients: tuple[int, ...] = (1, 3)
    methods: tuple[str, ...] = ALL_METHODS
    gt_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


DEMO_PRIVATE = ("math/add-coins-hard", "commonsense/animal_sound-4opt", "reading/weather-sum",
                "dialogue/travel-short", "lm/diary-0")

PRESETS: dict[str, BenchPreset] = {
    # Plumbing check: finishes in a few minutes on 2 CPU cores; its numbers mean little.
    "ci": BenchPreset(
        name="ci", zoo_preset="ci", seeds=(0,),
        in_dist_tasks=("dialogue/meeting-short",),
        cross_shadow_tasks=("dialogue/shopping-short", "dialogue/borrow-short"),
        cross_private_tasks=("dialogue/travel-short",),
        n_public=128, n_private=96, n_test=64, eval_limit=64,
        shadow_subsets=3, shadow_subset_size=32, shadow_steps=12, shadow_snapshots=(8,),
        tiny_steps=12, tiny_lr=3e-3, llm_steps=12, llm_lr=3e-3, batch_size=8,
        dp_epsilons=(None, 8.0), clients=(1, 3),
        gt_config={"d_model": 32, "n_enc_layers": 1, "n_dec_layers": 1, "steps": 150, "eval_every": 25,
                   "patience": 3, "base_folds": 2, "max_time_s": 30},
    ),
    # The reference setting: minutes to an hour on 2 CPU cores.
    "demo": BenchPreset(
        name="demo", zoo_preset="ci", seeds=(0, 1, 2),
        in_dist_tasks=("math/add-fruit-easy", "commonsense/animal_home-4opt", "reading/sports-sum",
                       "dialogue/meeting-short", "lm/weather-0"),
        # every task but the private ones and their other variants (51 tasks of all five
        # families): with 9 subsets and 4 checkpoints per run, 1,836 cross-task shadow pairs
        cross_shadow_tasks=task_library(exclude_topics_of=DEMO_PRIVATE),
        cross_private_tasks=DEMO_PRIVATE,
        n_public=256, n_private=256, n_test=256, eval_limit=256,
        shadow_subsets=9, shadow_subset_size=64, shadow_steps=60, shadow_snapshots=(15, 30, 45),
        tiny_steps=60, tiny_lr=3e-3, llm_steps=60, llm_lr=3e-3, batch_size=16,
        gt_config={"d_model": 64, "n_enc_layers": 1, "n_dec_layers": 1, "steps": 600, "max_time_s": 90},
    ),
    # The demo's five cross-task private tasks (one per family) at the ci scale, cross-task only:
    # a quick check on every family, about 20 minutes for 3 seeds on 2 CPU cores.
    "quick5": BenchPreset(
        name="quick5", zoo_preset="ci", seeds=(0, 1, 2),
        in_dist_tasks=(),
        cross_shadow_tasks=task_library(exclude_topics_of=DEMO_PRIVATE),
        cross_private_tasks=DEMO_PRIVATE,
        n_public=128, n_private=96, n_test=64, eval_limit=64,
        shadow_subsets=3, shadow_subset_size=32, shadow_steps=12, shadow_snapshots=(8,),
        tiny_steps=12, tiny_lr=3e-3, llm_steps=12, llm_lr=3e-3, batch_size=8,
        dp_epsilons=(None, 8.0), clients=(1,),
        gt_config={"d_model": 32, "n_enc_layers": 1, "n_dec_layers": 1, "steps": 150, "eval_every": 25,
                   "patience": 3, "base_folds": 2, "max_time_s": 30},
    ),
    # For a GPU machine.
    "gpu": BenchPreset(
        name="gpu", zoo_preset="gpu", seeds=(0, 1, 2),
        in_dist_tasks=("math/add-fruit-easy", "math/twostep-cookies-easy", "commonsense/animal_home-4opt",
                       "reading/sports-sum", "dialogue/meeting-short", "lm/weather-0"),
        cross_shadow_tasks=tuple(f"{f}" for f in (
            "math/sub-fruit-easy", "math/mul-books-easy", "math/add-books-easy", "commonsense/tool_use-4opt",
            "commonsense/food_color-4opt", "commonsense/place_activity-3opt", "reading/sales-sum",
            "reading/history-diff", "reading/sports-more", "dialogue/shopping-short", "dialogue/borrow-short",
            "dialogue/cooking-chatty", "lm/sports-0", "lm/recipe-0", "lm/review-1")),
        cross_private_tasks=("math/add-coins-hard", "commonsense/animal_sound-4opt", "reading/weather-sum",
                             "dialogue/travel-short", "lm/diary-0"),
        n_public=1024, n_private=1024, n_test=256, eval_limit=None,
        shadow_subsets=32, shadow_subset_size=256, shadow_steps=200, shadow_snapshots=(100, 150),
        tiny_steps=200, tiny_lr=2e-3, llm_steps=200, llm_lr=2e-3, batch_size=32,
        gt_config={},
    ),
}
