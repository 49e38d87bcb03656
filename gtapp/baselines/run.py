"""One entry point for every baseline, and their evaluation on a task's test split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import gtapp.baselines.distill as distill
from gtapp.devices import resolve_device
import gtapp.baselines.sft as sft
from gtapp.baselines.selection import Selection
from gtapp.baselines.common import (
    EVAL_MODEL,
    METHODS,
    USES,
    BaselineResult,
    Budget,
    CostMeter,
)
from gtapp.evaluate import evaluate, load_with_adapter
from gtapp.lora.peft_format import WEIGHTS_NAME
from gtapp.models import ModelPair
from gtapp.progress import ProgressFn
from gtapp.tasks.base import Example, Task

RESULT_FILE = "baseline.json"

OPTIONS = {
    "oracle": set(), "public_ft": set(), "proxy_tuning": {"alpha", "limit", "batch_size"},
    "tiny_ft": {"dp", "budget"},
    "kd_logit": {"temperature", "targets", "max_new_tokens"},
    "weak_to_strong": {"max_new_tokens"},
    "datafree_kd": {"temperature", "sample_temperature", "n_samples", "sample_tokens", "min_sample_tokens",
                    "prefixes"},
    "cross_lora": set(),
}
# the methods that train an LLM LoRA, hence pick lr and steps by the shared selection when given one
TRAINED = ("oracle", "public_ft", "weak_to_strong", "kd_logit", "datafree_kd")


def run_baseline(method: str, pair: ModelPair, tiny_adapter_dir: str | Path | None,
                 private_examples: Sequence[Example], public_examples: Sequence[Example], budget: Budget,
                 out_dir: str | Path, seed: int = 0, progress: ProgressFn | None = None, *,
                 task: Task | None = None, device: str = "cpu", options: dict | None = None,
                 overwrite: bool = False, selection: Selection | None = None) -> BaselineResult:
    """Run baseline ``method`` and return its :class:`BaselineResult` (also saved as
    ``out_dir/baseline.json``; trained adapters are written into ``out_dir``).

    ``tiny_adapter_dir`` is the fine-tuned TinyLM's adapter (the teacher; for ``tiny_ft``
    it may be ``None``, and the TinyLM is then fine-tuned here on the private examples).
    Trained methods get ``budget`` (optimizer steps x batch size at ``budget.lr``), the LLM
    recipe's seeded LoRA init, and ``seed``. ``task`` is needed by ``proxy_tuning`` (a
    decode-time method: its "run" is its evaluation) and gives ``weak_to_strong`` its answer
    length. ``device``: "cpu", "cuda[:k]" or "auto". Method options (``options``): see
    :data:`OPTIONS` — tiny_ft: ``budget`` (the TinyLM's own Budget), ``dp`` (a
    gtapp.finetune.DPConfig); kd_logit: ``temperature`` (1.0), ``targets`` ("gold": the
    private prompts + gold answers are the KD inputs; "teacher": + the TinyLM's greedy
    answers); weak_to_strong: ``max_new_tokens``; datafree_kd: ``n_samples``
    (min(budget sequences, 1024)), ``sample_tokens`` (min(max_length - 1, 128)),
    ``min_sample_tokens`` (sample_tokens // 4), ``sample_temperature`` (1.0),
    ``temperature`` (KD, 1.0), ``prefixes`` ([""]: start from a document break);
    proxy_tuning: ``alpha`` (1.0), ``limit``, ``batch_size``. ``selection``: the shared
    learning-rate and early-stopping procedure (gtapp.baselines.selection) for the methods in
    :data:`TRAINED`, on a held-out part of each one's own training sequences.
    """
    if method not in METHODS:
        raise ValueError(f"unknown baseline '{method}'; choose one of {list(METHODS)}")
    options = dict(options or {})
    unknown = set(options) - OPTIONS[method]
    if unknown:
        raise ValueError(f"{method}: unknown options {sorted(unknown)}; allowed {sorted(OPTIONS[method])}")
    if tiny_adapter_dir is None and method in ("kd_logit", "weak_to_strong", "proxy_tuning", "datafree_kd",
                                               "cross_lora"):
        raise ValueError(f"{method} needs the fine-tuned TinyLM's adapter (tiny_adapter_dir)")
    device = resolve_device(device)
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / WEIGHTS_NAME).exists():
        raise FileExistsError(f"{out_dir} already holds an adapter; choose another folder or pass overwrite=True")
    out_dir.mkdir(parents=True, exist_ok=True)
    if method == "proxy_tuning":
        result = _proxy(pair, tiny_adapter_dir, task, seed, device, options)
    elif method == "tiny_ft" and tiny_adapter_dir is not None:
        result = _tiny_from_record(pair, tiny_adapter_dir, private_examples, seed)
    else:
        with CostMeter(device) as meter:
            extra = _train(method, pair, tiny_adapter_dir, private_examples, public_examples, budget, out_dir,
                           seed, progress, task, device, options, overwrite, meter,
                           selection if method in TRAINED else None)
        result = BaselineResult(method=method, adapter_dir=str(out_dir), model=EVAL_MODEL[method], seed=seed,
                                **meter.fields(), extra=extra | meter.details())
    result.extra.setdefault("uses", USES[method])
    result.extra.setdefault("budget", budget.to_dict())
    result.save(out_dir / RESULT_FILE)
    return result


def _train(method, pair, tiny_adapter_dir, private_examples, public_examples, budget, out_dir, seed,
           progress, task, device, options, overwrite, meter, selection=None) -> dict:
    if method == "cross_lora":
        from gtapp.baselines.cross_lora import run_cross_lora

        return run_cross_lora(pair, tiny_adapter_dir, out_dir)
    if method == "oracle":
        return sft.run_sft(pair.llm_path, pair.recipes.llm, private_examples, budget, out_dir, seed, meter,
                           progress, device, overwrite=overwrite, selection=selection)
    if method == "public_ft":
        if not public_examples:
            raise ValueError("public_ft needs the provider's public examples")
        return sft.run_sft(pair.llm_path, pair.recipes.llm, public_examples, budget, out_dir, seed, meter,
                           progress, device, overwrite=overwrite, selection=selection)
    if method == "tiny_ft":
        tiny_budget = options.get("budget") or budget
        info = sft.run_sft(pair.tiny_path, pair.recipes.tiny, private_examples, tiny_budget, out_dir, seed, meter,
                           progress, device, dp=options.get("dp"), overwrite=overwrite)
        return info | {"budget": tiny_budget.to_dict()}
    max_new = options.get("max_new_tokens") or (task.max_new_tokens if task is not None else 32)
    if method == "weak_to_strong":
        labelled = sft.teacher_labels(pair, tiny_adapter_dir, private_examples, max_new, meter,
                                      max_length=budget.max_length, device=device)
        info = sft.run_sft(pair.llm_path, pair.recipes.llm, labelled, budget, out_dir, seed, meter, progress,
                           device, overwrite=overwrite, selection=selection)
        agree = sum(a.answer.strip() == b.answer.strip() for a, b in zip(labelled, private_examples))
        return info | {"labels": "TinyLM greedy answers", "max_new_tokens": max_new,
                       "label_gold_agreement": agree / len(labelled),
                       "label_examples": [[e.prompt[-60:], e.answer] for e in labelled[:3]]}
    teacher, tokenizer = load_with_adapter(pair.tiny_path, tiny_adapter_dir, device=device)
    temperature = float(options.get("temperature", 1.0))
    if method == "kd_logit":
        targets = options.get("targets", "gold")
        if targets == "gold":
            examples = list(private_examples)
        elif targets == "teacher":
            examples = sft.teacher_labels(pair, tiny_adapter_dir, private_examples, max_new, meter,
                                          max_length=budget.max_length, device=device)
        else:
            raise ValueError(f"kd_logit targets must be 'gold' or 'teacher', got {targets!r}")
        ids, mask, tgt = distill.encoded_examples(tokenizer, examples, budget.max_length)
        rec = distill.distill(pair.llm_path, pair.recipes.llm, teacher, ids, mask, tgt, budget, out_dir, seed,
                              meter, temperature, progress, "kd_logit", device, selection=selection)
        return rec | {"kd_inputs": f"private prompts + {targets} answers; KL on answer+EOS positions"}
    if method == "datafree_kd":  # never reads private_examples
        n_samples = int(options.get("n_samples", min(budget.sequences, 1024)))
        sample_tokens = int(options.get("sample_tokens", min(budget.max_length - 1, 128)))
        prefixes = tuple(options.get("prefixes", ("",)))
        min_tokens = int(options.get("min_sample_tokens", sample_tokens // 4))
        sample_t = float(options.get("sample_temperature", 1.0))
        samples = distill.sample_sequences(teacher, tokenizer, n_samples, sample_tokens, sample_t, seed,
                                           prefixes=prefixes, meter=meter, device=device,
                                           min_new_tokens=min_tokens)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids, mask, tgt = distill.pack_samples(samples, pad, budget.max_length)
        rec = distill.distill(pair.llm_path, pair.recipes.llm, teacher, ids, mask, tgt, budget, out_dir, seed,
                              meter, temperature, progress, "datafree_kd", device, selection=selection)
        shown = [tokenizer.decode(s + b) for s, b in samples[:3]]
        return rec | {"kd_inputs": "texts sampled from the fine-tuned TinyLM; KL on every sampled position",
                      "n_samples": n_samples, "sample_tokens": sample_tokens, "min_sample_tokens": min_tokens,
                      "sample_temperature": sample_t,
                      "prefixes": list(prefixes), "mean_sample_len": sum(len(b) for _, b in samples) / len(samples),
                      "sample_examples": shown}
    raise AssertionError(method)


def _proxy(pair, tiny_adapter_dir, task, seed, device, options) -> BaselineResult:
    from gtapp.baselines.proxy import evaluate_proxy_tuning

    if task is None:
        raise ValueError("proxy_tuning is decode-time only: pass the task to score it on")
    return evaluate_proxy_tuning(pair, tiny_adapter_dir, task, limit=options.get("limit"),
                                 batch_size=options.get("batch_size", 32), alpha=options.get("alpha", 1.0),
                                 device=device, seed=seed)


def _tiny_from_record(pair, tiny_adapter_dir, private_examples, seed) -> BaselineResult:
    """A TinyLM fine-tuned elsewhere: its cost is what its finetune.json says."""
    from gtapp.baselines.common import sft_tokens
    from gtapp.baselines.sft import encoded_lengths
    from gtapp.data import data_fingerprint
    from gtapp.finetune import load_record
    from gtapp.models import load_tokenizer

    try:
        record = load_record(tiny_adapter_dir)
    except FileNotFoundError:
        record = {}
    cfg = record.get("config", {})
    tokens = int(record.get("tokens", 0))
    examples = list(private_examples) if private_examples is not None else []
    if not tokens and cfg and examples and not record.get("dp") and \
            record.get("data_fingerprint") == data_fingerprint(examples):
        tokens = sft_tokens(encoded_lengths(load_tokenizer(pair.tiny_path), examples, cfg["max_length"]),
                            cfg["steps"], cfg["batch_size"], cfg["seed"])
    return BaselineResult(method="tiny_ft", adapter_dir=str(tiny_adapter_dir), model="tiny", seed=seed,
                          wall_s=float(record.get("wall_s", math.nan)),
                          peak_mem_mb=float(record.get("peak_mem_mb", math.nan)), tokens=tokens,
                          extra={"cost_source": "finetune.json of the given adapter" if record else "unknown",
                                 "epsilon": record.get("epsilon"), "loss": record.get("loss")})


def evaluate_result(result: BaselineResult, pair: ModelPair, task: Task, split: str = "test",
                    limit: int | None = None, batch_size: int = 32, device: str = "cpu",
                    per_example: bool = False) -> dict:
    """Score a baseline on ``task``'s ``split`` with :func:`gtapp.evaluate.evaluate`: the LLM or
    TinyLM with the result's adapter, or (proxy-tuning) the combined decode-time model."""
    if result.model == "llm+tiny":
        from gtapp.baselines.proxy import load_proxy

        model, tokenizer = load_proxy(pair, result.extra["tiny_adapter_dir"], alpha=result.extra.get("alpha", 1.0),
                                      device=device)
    else:
        model, tokenizer = load_with_adapter(pair.path(result.model), result.adapter_dir, device=device)
    out = evaluate(model, tokenizer, task, split=split, limit=limit, batch_size=batch_size, per_example=per_example)
    return out | {"method": result.method}
