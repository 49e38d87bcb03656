"""Baselines the Gradient Transformer is compared with (the product brief's benchmark).

=================  ======================================================  ===============
method             what                                                    module
=================  ======================================================  ===============
oracle             LLM LoRA fine-tuned on the private train data           sft
public_ft          LLM LoRA fine-tuned on the provider's public data       sft
tiny_ft            the fine-tuned TinyLM itself                            sft
kd_logit           logit KD from the fine-tuned TinyLM on private inputs   distill
weak_to_strong     LLM LoRA SFT on the TinyLM's answers to private prompts sft
proxy_tuning       decode time: LLM + (TinyLM_ft - TinyLM) logits          proxy
datafree_kd        logit KD on text sampled from the fine-tuned TinyLM     distill
=================  ======================================================  ===============

:func:`run_baseline` runs one; :func:`evaluate_result` scores its result on a task split.
"""

from gtapp.baselines.common import (
           EVAL_MODEL,
           METHODS,
           BaselineResult,
           Budget,
           CostMeter,
)
from gtapp.baselines.proxy import ProxyTunedLM, evaluate_proxy_tuning, load_proxy
from gtapp.baselines.run import evaluate_result, run_baseline

__all__ = [
           "EVAL_MODEL",
           "METHODS",
           "BaselineResult",
           "Budget",
           "CostMeter",
           "ProxyTunedLM",
           "evaluate_proxy_tuning",
           "evaluate_result",
           "load_proxy",
           "run_baseline",
]
