"""Every named choice gtapp offers, in one torch-free module: what the core accepts, and what
the dashboard's dropdowns, the job parameter checks and the CLI offer. The core modules
define their registries from these names (and ``tests/test_choices.py`` checks that each
list is exactly what the core accepts), so ``ui/`` and ``workers/`` import this instead of
copying lists to avoid importing torch."""

from __future__ import annotations

# model pairs (gtapp.zoo.PRESETS) and benchmark presets (gtapp.bench.presets.PRESETS)
ZOO_PRESETS = ("micro", "ci", "demo", "gpu")
BENCH_PRESETS = ("ci", "quick5", "demo", "gpu")

# mappers (gtapp.mapper.MAPPERS) and the benchmark's method name of each
MAPPER_KINDS = ("gt", "ridge", "mean")
MAPPER_METHOD = {"gt": "gt", "ridge": "ridge", "mean": "mean_shadow"}

# several organisations' updates into one LLM update (gtapp.combine)
ORGANISATIONS = ("average_then_map", "map_then_average")
COMBINE_METHODS = ("mean", "median", "clip")
WEIGHTINGS = ("data_size", "equal")

# datasets: the six published formats (gtapp.datasets.formats.REGISTRY) and the metrics a
# user's prompt/answer file may be scored with (gtapp.datasets.user.USER_METRICS)
DATASET_FORMATS = ("gsm8k", "aqua_rat", "commonsenseqa", "drop", "samsum", "dialogsum")
USER_METRICS = ("exact_match", "numeric_exact_match", "letter_exact_match", "rouge_l")
EVAL_METRICS = USER_METRICS + ("perplexity",)  # what an evaluation can report

# the baselines (gtapp.baselines.common.METHODS) and every method of the benchmark's tables
BASELINE_METHODS = ("oracle", "public_ft", "tiny_ft", "kd_logit", "weak_to_strong", "proxy_tuning", "datafree_kd",
                    "cross_lora")
# gt_refine: the GT's adapter refined towards proxy-tuning over it on provider text (gtapp.refine);
# gt_auto: the GT's adapter as it is where the update looks like the shadow updates, refined towards
# the base LLM's proxy-tuning where it does not (gtapp.refine.refine_wanted, mode_config); gt_refine_prompts: gt_refine with its samples written
# after the organisation's *public* prompts of its task (no answers; cross-task only: in-distribution
# gt_refine already has the task's public half)
BENCH_METHODS = ("base_llm", "base_tiny", "tiny_ft", "oracle", "mean_shadow", "public_ft", "ridge", "gt",
                 "gt_refine", "gt_auto", "gt_refine_prompts", "kd_logit", "weak_to_strong", "proxy_tuning", "datafree_kd", "cross_lora")
# when a generate job refines the mapped adapter (gtapp.refine.refine_wanted)
REFINE_MODES = ("never", "auto", "always")

# where a job runs its models
DEVICES = ("auto", "cpu", "cuda")
