"""Finetune: TinyLM (or LLM) LoRA fine-tune, optional DP-SGD, via gtapp.finetune"""

from __future__ import annotations

import json

from workers.jobs.common import _check_device, _dataset_examples
from workers.jobs.registry import job
from workers.redact import redact_json_files


def _check_finetune(p: dict) -> None:
    if p["pair_id"] is None or not isinstance(p["pair_id"], int):
        raise ValueError("finetune needs pair_id (a registered model pair)")
    if p["dataset_id"] is None or not isinstance(p["dataset_id"], int):
        raise ValueError("finetune needs dataset_id (one of your organisation's datasets)")
    if p["model"] not in ("tiny", "llm"):
        raise ValueError("model must be 'tiny' or 'llm'")
    if not 1 <= p["steps"] <= 1_000_000 or not 1 <= p["batch_size"] <= 4096 or p["lr"] <= 0:
        raise ValueError("steps must be >= 1, batch_size in 1..4096, lr > 0")
    _check_device(p)
    dp = p["dp"]
    if dp is not None:
        if not isinstance(dp, dict):
            raise ValueError("dp must be an object {target_epsilon, delta, noise_multiplier, max_grad_norm}")
        unknown = set(dp) - {"target_epsilon", "delta", "noise_multiplier", "max_grad_norm"}
        if unknown:
            raise ValueError(f"unknown dp keys {sorted(unknown)}")
        for key in ("target_epsilon", "delta", "noise_multiplier", "max_grad_norm"):
            v = dp.get(key)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"dp.{key} must be a positive number")
        if dp.get("target_epsilon") is None and dp.get("noise_multiplier") is None:
            raise ValueError("dp needs target_epsilon (the ε this job may spend) or noise_multiplier")


def _finetune_privacy(p: dict, session):
    """The ledger request of a fine-tune: for DP, ε, δ and the DP-SGD mechanism (noise
    multiplier calibrated as gtapp.finetune will, so the RDP accountant can compose it up
    front); without DP, a NonDPRequest (refused on a budgeted dataset not marked "no DP required")."""
    from storage.ledger import DPRequest, NonDPRequest
    from storage.models import Dataset

    ds = session.get(Dataset, p["dataset_id"])
    if ds is None:
        raise ValueError(f"dataset {p['dataset_id']} not found")
    if not p.get("dp"):
        return NonDPRequest(dataset_id=p["dataset_id"])
    if not ds.n_examples:
        raise ValueError(f"dataset '{ds.name}' has no examples")
    dp = p["dp"]
    delta = float(dp.get("delta") or ds.delta)
    q = p["batch_size"] / ds.n_examples
    if q > 1:
        raise ValueError(f"DP-SGD needs batch_size <= number of examples ({p['batch_size']} > {ds.n_examples})")
    mech = {"steps": p["steps"], "sample_rate": q, "max_grad_norm": float(dp.get("max_grad_norm") or 1.0)}
    eps = dp.get("target_epsilon")
    from gtapp import privacy as P  # torch-free (dp-accounting): submitting a DP job imports no torch

    if dp.get("noise_multiplier") is not None:
        mech["noise_multiplier"] = float(dp["noise_multiplier"])
        eps = P.epsilon(mech["noise_multiplier"], q, p["steps"], delta)
    else:
        mech["noise_multiplier"] = P.noise_multiplier_for(float(eps), delta, q, p["steps"])
    return DPRequest(dataset_id=p["dataset_id"], epsilon=float(eps), delta=delta, mechanism=mech)


@job("finetune", queue="gpu", requires=("gtapp.finetune",), validate=_check_finetune, privacy=_finetune_privacy,
     defaults={"pair_id": None, "dataset_id": None, "model": "tiny", "steps": 100, "lr": 1e-3, "batch_size": 8,
               "max_length": 128, "dp": None, "name": None, "device": "auto"})
def finetune(params: dict, ctx) -> dict:
    """LoRA fine-tune of the pair's TinyLM (or LLM) on a dataset, per the pair's recipe;
    with `dp` ({target_epsilon, delta, noise_multiplier, max_grad_norm}) by DP-SGD, charged to
    the dataset's privacy ledger. Produces an adapter."""
    from gtapp import finetune as ft
    from gtapp.lora.recipe import LoraRecipe
    from storage.models import Adapter, Dataset, ModelPairRecord
    from storage.tenancy import of_org

    ctx.training_steps(0)  # nothing trained yet: a failure from here to the first step refunds the reservation
    with ctx.session() as s:
        pair = s.get(ModelPairRecord, params["pair_id"])
        if pair is None:
            raise ValueError(f"model pair {params['pair_id']} not found")
        ds = of_org(s, Dataset, params["dataset_id"], ctx.org_id, "dataset")
        model_path = pair.tiny_path if params["model"] == "tiny" else pair.llm_path
        recipe_d, ds_artifact, ds_name, ds_delta = pair.recipe[params["model"]], ds.artifact, ds.name, ds.delta
    recipe = LoraRecipe.from_dict(recipe_d, where=f"pair {params['pair_id']} recipe")
    examples = _dataset_examples(ctx, ds_artifact)
    ctx.log(f"finetune {params['model']} of pair {params['pair_id']} on dataset '{ds_name}' "
            f"({len(examples)} examples), seed {params['seed']}")
    dp = None
    if params["dp"]:
        d = params["dp"]
        dp = ft.DPConfig(target_epsilon=d.get("target_epsilon"), delta=float(d.get("delta") or ds_delta),
                         noise_multiplier=d.get("noise_multiplier"), max_grad_norm=float(d.get("max_grad_norm") or 1.0))
    config = ft.FinetuneConfig(steps=params["steps"], lr=params["lr"], batch_size=params["batch_size"],
                               max_length=params["max_length"], seed=params["seed"], dp=dp, device=params["device"])
    def progress(p) -> None:
        if p.stage == "finetune":  # steps taken so far: what a stopped job is charged for
            ctx.training_steps(round(p.fraction * params["steps"]))
        ctx.progress_fn(p)

    result = ft.finetune(model_path, recipe, examples, config, ctx.work_dir / "adapter", progress=progress)
    ctx.progress(0.99, "storing adapter")
    redact_json_files(result.adapter_dir)  # the organisation downloads it: no server paths inside
    sha = ctx.store.put_tree(result.adapter_dir)
    record = json.loads(json.dumps(getattr(result, "record", {}) or {}, default=str))
    if dp is not None:
        mech = {k: record[k] for k in ("noise_multiplier", "sample_rate") if record.get(k) is not None}
        mech["steps"] = params["steps"]
        ctx.privacy_spent(record.get("epsilon"), mech)
    name = params["name"] or f"{params['model']}-ft-job{ctx.job_id}"

    def register(s, job_row) -> dict:
        a = Adapter(org_id=job_row.org_id, user_id=job_row.user_id, model_pair_id=params["pair_id"],
                    model=params["model"], origin="produced", name=name, artifact=sha,
                    dataset_id=params["dataset_id"], job_id=job_row.id, meta={"record": record})
        s.add(a)
        s.flush()
        return {"adapter_id": a.id}

    ctx.on_success(register)
    return {"adapter_artifact": sha, "record": record}
