"""Try: one prompt through the base LLM, the LLM with a generated adapter and the fine-tuned
TinyLM, side by side (greedy), and optionally each one's per-token NLL of a given answer. A
short job on a worker, so no model ever runs in a dashboard request."""

from __future__ import annotations

from workers.jobs.common import _check_device, _is_int, _load_pair
from workers.jobs.registry import job

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 64


def _check_try(p: dict) -> None:
    if not _is_int(p["pair_id"]):
        raise ValueError("try needs pair_id (a registered model pair)")
    if not isinstance(p["prompt"], str) or not p["prompt"].strip():
        raise ValueError("type a prompt")
    if len(p["prompt"]) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(p['prompt'])} characters; at most {MAX_PROMPT_CHARS}")
    if p["answer"] is not None and (not isinstance(p["answer"], str) or len(p["answer"]) > MAX_PROMPT_CHARS):
        raise ValueError(f"the answer must be text of at most {MAX_PROMPT_CHARS} characters")
    for key in ("llm_adapter_id", "tiny_adapter_id"):
        if p[key] is not None and not _is_int(p[key]):
            raise ValueError(f"{key} must be an adapter id")
    if not _is_int(p["max_new_tokens"]) or not 1 <= p["max_new_tokens"] <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be in 1..{MAX_NEW_TOKENS}")
    _check_device(p)


def _precheck_try(p: dict, s, who) -> None:
    """The adapters are the caller's organisation's (another's reads as missing, nothing queued)."""
    from storage.models import Adapter
    from storage.tenancy import visible
    from workers.client import JobNotFound

    for key in ("llm_adapter_id", "tiny_adapter_id"):
        if p[key] is not None:
            visible(s, Adapter, p[key], who, "adapter", admins_see_all=False, error=JobNotFound)


@job("try", queue="gpu", requires=("gtapp.evaluate",), validate=_check_try, precheck=_precheck_try,
     defaults={"pair_id": None, "prompt": "", "answer": None, "llm_adapter_id": None, "tiny_adapter_id": None,
               "max_new_tokens": 32, "device": "cpu"})
def try_it(params: dict, ctx) -> dict:
    """Greedy continuations of `prompt` by the base LLM, the LLM with `llm_adapter_id` (one of
    your generated adapters) and the TinyLM with `tiny_adapter_id` (one of yours); with `answer`,
    each model's NLL of it per answer token."""
    from gtapp.evaluate import greedy_decode, load_with_adapter, sequence_nll
    from gtapp.data import EncodedDataset, iter_batches
    from gtapp.tasks.base import Example
    from storage.models import Adapter
    from storage.tenancy import of_org

    pair = _load_pair(ctx, params["pair_id"])
    models = [("base LLM", pair["llm_path"], None, None)]
    with ctx.session() as s:
        for key, which in (("llm_adapter_id", "llm"), ("tiny_adapter_id", "tiny")):
            if params[key] is None:
                continue
            a = of_org(s, Adapter, params[key], ctx.org_id, "adapter")
            if a.model != which or a.model_pair_id != params["pair_id"]:
                raise ValueError(f"adapter {a.id} is not a {'TinyLM' if which == 'tiny' else 'LLM'} adapter of this "
                                 "model pair")
            label = f"LLM + adapter {a.id}" if which == "llm" else f"TinyLM + adapter {a.id}"
            models.append((label, pair[f"{which}_path"], a.artifact, a.id))
    rows = []
    for i, (label, path, artifact, aid) in enumerate(models):
        ctx.progress(i / len(models), f"running {label}")
        folder = ctx.store.materialize(artifact, ctx.work_dir / f"adapter{aid}") if artifact else None
        model, tok = load_with_adapter(path, folder)
        text = greedy_decode(model, tok, [params["prompt"]], params["max_new_tokens"], max_prompt_tokens=1024)[0]
        row = {"model": label, "output": text}
        if params["answer"]:
            import torch

            ds = EncodedDataset(tok, [Example(params["prompt"], params["answer"])], max_length=1024)
            ids, mask, labels = next(iter_batches(ds, 1))
            with torch.no_grad():
                nll, n = sequence_nll(model.eval(), ids, mask, labels)
            row["answer_nll_per_token"] = float(nll[0]) / max(int(n[0]), 1)
        rows.append(row)
        ctx.check_cancel()
    ctx.progress(1.0, "done")
    return {"rows": rows, "prompt_chars": len(params["prompt"])}

