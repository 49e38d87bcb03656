"""Evaluate: a base model or an adapter on a generated task or an organisation's dataset"""

from __future__ import annotations

import json

from gtapp.choices import EVAL_METRICS
from workers.jobs.common import _eval_task, _resolve_device
from workers.jobs.registry import job


def _check_evaluate(p: dict) -> None:
    if not isinstance(p["pair_id"], int):
        raise ValueError("evaluate needs pair_id (a registered model pair)")
    if p["model"] not in ("tiny", "llm"):
        raise ValueError("model must be 'tiny' or 'llm'")
    if (p["task"] is None) == (p["dataset_id"] is None):
        raise ValueError("give exactly one of task (a generated task name) or dataset_id (your dataset)")
    if p["adapter_id"] is not None and not isinstance(p["adapter_id"], int):
        raise ValueError("adapter_id must be an integer")
    if p["metric"] not in EVAL_METRICS:
        raise ValueError(f"metric must be one of {EVAL_METRICS}")
    if p["limit"] is not None and (not isinstance(p["limit"], int) or p["limit"] < 1):
        raise ValueError("limit must be a positive integer")
    if not 1 <= p["n_test"] <= 100_000 or not 1 <= p["batch_size"] <= 1024:
        raise ValueError("n_test must be in 1..100000 and batch_size in 1..1024")


@job("evaluate", queue="gpu", requires=("gtapp.evaluate",), validate=_check_evaluate,
     defaults={"pair_id": None, "model": "llm", "adapter_id": None, "task": None, "dataset_id": None,
               "metric": "exact_match", "n_test": 128, "limit": None, "batch_size": 32, "method": None,
               "device": "auto"})
def evaluate(params: dict, ctx) -> dict:
    """Score the pair's TinyLM or LLM, with one of your adapters or without (the base model),
    on a generated task (`task`, test split from `seed`) or on your dataset (`dataset_id`,
    scored with `metric`). Records an evaluation."""
    from gtapp import evaluate as ev
    from storage.models import Adapter, Dataset, Evaluation, ModelPairRecord
    from storage.tenancy import of_org

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        pair = s.get(ModelPairRecord, params["pair_id"])
        if pair is None:
            raise ValueError(f"model pair {params['pair_id']} not found")
        model_path = pair.tiny_path if params["model"] == "tiny" else pair.llm_path
        adapter_artifact, epsilon = None, None
        if params["adapter_id"] is not None:
            a = of_org(s, Adapter, params["adapter_id"], ctx.org_id, "adapter")
            if a.model_pair_id != pair.id or a.model != params["model"]:
                raise ValueError(f"adapter {a.id} is a {a.model} adapter of pair {a.model_pair_id}, not a "
                                 f"{params['model']} adapter of pair {pair.id}")
            adapter_artifact = a.artifact
            epsilon = ((a.meta or {}).get("record") or {}).get("epsilon")
        ds_artifact = ds_name = None
        if params["dataset_id"] is not None:
            ds = of_org(s, Dataset, params["dataset_id"], ctx.org_id, "dataset")
            ds_artifact, ds_name = ds.artifact, ds.name
    task = _eval_task(ctx, params["task"], params["seed"], params["n_test"], ds_artifact, ds_name, params["metric"])
    adapter_dir = None
    if adapter_artifact is not None:
        adapter_dir = ctx.store.materialize(adapter_artifact, ctx.work_dir / "adapter")
    device = _resolve_device(params["device"])
    ctx.progress(0.05, f"evaluating on {task.name}")
    result = ev.evaluate_paths(model_path, task, adapter_dir=adapter_dir, split="test", limit=params["limit"],
                               batch_size=params["batch_size"], device=device)
    ctx.check_cancel()
    method = params["method"] or (f"adapter_{params['model']}" if adapter_dir else f"base_{params['model']}")
    ctx.log(f"{method} on {task.name}: {result['metric']} = {result['value']:.4f} (n={result['n']})")
    result = json.loads(json.dumps(result, default=str))

    def register(s, job_row) -> dict:
        e = Evaluation(org_id=job_row.org_id, job_id=job_row.id, model_pair_id=params["pair_id"],
                       adapter_id=params["adapter_id"], method=method, task=task.name, metric=result["metric"],
                       value=float(result["value"]), seed=params["seed"], epsilon=epsilon, meta=result)
        s.add(e)
        s.flush()
        return {"evaluation_id": e.id}

    ctx.on_success(register)
    return {"method": method, "task": task.name, "metric": result["metric"], "value": result["value"],
            "n": result["n"], "answer_nll": result.get("answer_nll")}
