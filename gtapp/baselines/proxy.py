"""Proxy-tuning (Liu et al., 2024): decode-time logit arithmetic, no LLM training.

At every position the next-token logits are

    logits = LLM(x) + alpha * (TinyLM_ft(x) - TinyLM(x))

(raw logits, before softmax; ``alpha = 1`` is the method as published). The three models
share one tokenizer, so their vocabularies align. :class:`ProxyTunedLM` is a duck-typed
causal LM (``forward`` returns ``.logits``; ``generate`` does greedy decoding with one KV
cache per model), so :func:`gtapp.evaluate.evaluate` scores it with the very code that
scores every other method: the task metric on greedy generations, and the answer NLL under
the combined distribution.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.modeling_outputs import CausalLMOutput

from gtapp.baselines.common import BaselineResult, CostMeter, cached_forward, decode
from gtapp.evaluate import evaluate, load_with_adapter
from gtapp.models import ModelPair, load_model
from gtapp.tasks.base import Task


class ProxyTunedLM(torch.nn.Module):
    """``llm + alpha * (tiny_ft - tiny_base)`` as one causal LM (inference only)."""

    def __init__(self, llm: torch.nn.Module, tiny_base: torch.nn.Module, tiny_ft: torch.nn.Module,
                 alpha: float = 1.0):
        super().__init__()
        if tiny_base is tiny_ft:
            raise ValueError("tiny_base and tiny_ft must be distinct models (load the base twice)")
        self.llm, self.tiny_base, self.tiny_ft = llm, tiny_base, tiny_ft
        self.alpha = float(alpha)
        self.tokens = 0  # token positions through each of the three models, summed
        self.eval()

    def combine(self, llm_logits: torch.Tensor, ft_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        llm_logits, ft_logits, base_logits = llm_logits.float(), ft_logits.float(), base_logits.float()
        if self.alpha == 1.0:
            return llm_logits + (ft_logits - base_logits)
        return llm_logits + self.alpha * (ft_logits - base_logits)

    def _logits(self, model, **kw) -> torch.Tensor:
        return model(**kw).logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kw = {"input_ids": input_ids, "attention_mask": attention_mask, **kw}
        logits = self.combine(self._logits(self.llm, **kw), self._logits(self.tiny_ft, **kw),
                              self._logits(self.tiny_base, **kw))
        self.tokens += 3 * int(attention_mask.sum())
        return CausalLMOutput(logits=logits)

    def decode_step(self, ids, mask, pos, past):
        """One cached decoding step under the combined logits (gtapp.baselines.common.StepFn)."""
        past = past or (None, None, None)
        outs = [cached_forward(model, ids, mask, pos, p)
                for model, p in zip((self.llm, self.tiny_ft, self.tiny_base), past)]
        self.tokens += 3 * (int(mask[:, -ids.shape[1]:].sum()))
        logits = self.combine(*(logits[:, -1, :] for logits, _ in outs))
        return logits, tuple(cache for _, cache in outs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 16, do_sample: bool = False, num_beams: int = 1,
                 pad_token_id: int | None = None, eos_token_id: int | None = None, **_) -> torch.Tensor:
        """Greedy decoding under the combined logits (prompt + new tokens, like ``generate``)."""
        if do_sample or num_beams != 1:
            raise ValueError("proxy-tuning decodes greedily (do_sample=False, num_beams=1)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if pad_token_id is None:
            pad_token_id = eos_token_id if eos_token_id is not None else 0
        return decode(self.decode_step, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)


def load_proxy(pair: ModelPair, tiny_adapter_dir: str | Path, alpha: float = 1.0,
               device: str | torch.device = "cpu", llm_adapter_dir: str | Path | None = None):
    """(ProxyTunedLM, tokenizer) from a model pair and the fine-tuned TinyLM's adapter."""
    llm, tokenizer = load_with_adapter(pair.llm_path, llm_adapter_dir, device=device)
    tiny_ft, _ = load_with_adapter(pair.tiny_path, tiny_adapter_dir, device=device)
    tiny_base = load_model(pair.tiny_path, device=device)
    return ProxyTunedLM(llm, tiny_base, tiny_ft, alpha=alpha), tokenizer


def evaluate_proxy_tuning(pair: ModelPair, tiny_adapter_dir: str | Path, task: Task, split: str = "test",
                          limit: int | None = None, batch_size: int = 32, alpha: float = 1.0,
                          max_length: int = 256, device: str | torch.device = "cpu",
                          seed: int = 0) -> BaselineResult:
    """Score proxy-tuning on ``task``: :func:`gtapp.evaluate.evaluate` run on the combined model.

    The method's whole cost is at decode time, so wall time, peak memory and tokens are
    measured over loading the three models and evaluating. ``extra["eval"]`` holds the
    evaluation dict (metric, value, answer_nll under the combined distribution, n, ...).
    """
    with CostMeter(device) as meter:
        proxy, tokenizer = load_proxy(pair, tiny_adapter_dir, alpha=alpha, device=device)
        result = evaluate(proxy, tokenizer, task, split=split, limit=limit, batch_size=batch_size,
                          max_length=max_length)
        meter.add_tokens(proxy.tokens, "decode")
    return BaselineResult(method="proxy_tuning", adapter_dir=None, model="llm+tiny", seed=seed,
                          **meter.fields(),
                          extra={"eval": result, "alpha": alpha, "tiny_adapter_dir": str(tiny_adapter_dir),
                                 "combination": "llm_logits + alpha * (tiny_ft_logits - tiny_logits)",
                                 **meter.details()})
