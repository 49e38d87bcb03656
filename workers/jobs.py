"""The job-kind registry: kind -> a Python function ``fn(params, ctx) -> outputs``.

``ctx`` (a :class:`workers.runner.JobContext`) gives ``progress(fraction, stage, eta)``
(written to the job row; raises ``gtapp.progress.Cancelled`` once a cancel was asked),
``progress_fn`` (the same as a ``gtapp.progress.ProgressFn`` to hand to gtapp functions),
``log(msg)``, ``work_dir`` (this attempt's empty scratch folder), ``store`` (the artifact
store), ``seed``, ``session()`` (a DB session) and ``on_success(fn)`` (register rows in the
transaction that marks the job succeeded, so a job's outputs appear only if it finished).

gtapp (and so torch / CUDA) is imported inside the job functions only, never at import of
this module, so a worker's parent process never touches CUDA before it forks.
"""

from __future__ import annotations

import importlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

PARAM_TYPES = (bool, int, float, str, list, dict)


class JobNotAvailable(RuntimeError):
    """The job kind exists but this version of gtapp cannot run it."""


@dataclass
class JobSpec:
    kind: str
    fn: Callable[[dict, Any], dict]
    queue: str = "cpu"  # cpu | gpu
    admin_only: bool = False
    description: str = ""
    defaults: dict = field(default_factory=dict)  # every accepted parameter with its default
    requires: tuple[str, ...] = ()  # gtapp modules that must be importable
    validate: Optional[Callable[[dict], None]] = None  # extra checks; raise ValueError
    privacy: Optional[Callable[[dict, Any], Any]] = None  # (params, session) -> ledger.DPRequest | None
    soft_time_limit_s: Optional[int] = None  # default: settings.job_soft_time_limit_s
    wired: bool = True  # False: registered, but this version has no job function for it yet

    def available(self) -> tuple[bool, str]:
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name and (module == e.name or module.startswith(e.name + ".")):
                    return False, (f"job kind '{self.kind}' is not available in this version of gtapp "
                                   f"(module {module} is missing)")
                raise
        if not self.wired:
            return False, (f"job kind '{self.kind}' is not available in this version of gtapp "
                           f"(no job function is wired to {', '.join(self.requires)} yet)")
        return True, ""

    def check_params(self, params: Optional[dict]) -> dict:
        """Defaults filled in, unknown names and wrong types refused (ValueError)."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for job kind '{self.kind}'; "
                             f"accepted: {sorted(self.defaults)}")
        out = {}
        for name, default in self.defaults.items():
            value = params.get(name, default)
            if value is not None and default is not None:
                want = type(default)
                ok = (isinstance(value, bool) if want is bool else
                      isinstance(value, (int, float)) and not isinstance(value, bool) if want is float else
                      isinstance(value, int) and not isinstance(value, bool) if want is int else
                      isinstance(value, want))
                if not ok:
                    raise ValueError(f"parameter '{name}' of '{self.kind}' should be {want.__name__}, got {value!r}")
                if want is float:
                    value = float(value)
            elif value is not None and not isinstance(value, PARAM_TYPES):
                raise ValueError(f"parameter '{name}' of '{self.kind}' must be JSON data, got {type(value).__name__}")
            out[name] = value
        json.dumps(out)  # must be storable
        if not isinstance(out.get("seed", 0), int):
            raise ValueError("seed must be an integer")
        if self.validate:
            self.validate(out)
        return out


REGISTRY: dict[str, JobSpec] = {}


def job(kind: str, **kw) -> Callable:
    def deco(fn: Callable) -> Callable:
        defaults = kw.pop("defaults", {})
        defaults.setdefault("seed", 0)  # every experiment takes a seed
        REGISTRY[kind] = JobSpec(kind=kind, fn=fn, defaults=defaults, description=(fn.__doc__ or "").strip(), **kw)
        return fn
    return deco


def get_spec(kind: str) -> JobSpec:
    spec = REGISTRY.get(kind)
    if spec is None:
        raise ValueError(f"unknown job kind '{kind}'; known kinds: {sorted(REGISTRY)}")
    return spec


# --------------------------------------------------------------------------------------------
# selftest: an honest diagnostic, no ML


def _check_selftest(p: dict) -> None:
    if not 1 <= p["steps"] <= 100_000:
        raise ValueError("steps must be in 1..100000")
    if not 0 <= p["step_s"] <= 60:
        raise ValueError("step_s must be in 0..60 seconds")
    if not 0 <= p["payload_kb"] <= 1_048_576:
        raise ValueError("payload_kb must be in 0..1048576")


@job("selftest", queue="cpu", defaults={"steps": 10, "step_s": 0.1, "payload_kb": 64, "fail_at": None},
     validate=_check_selftest)
def selftest(params: dict, ctx) -> dict:
    """Diagnostic: runs `steps` steps of `step_s` seconds, streaming `payload_kb` KiB of seeded
    random bytes into one artifact, reporting progress and honouring cancel at every step;
    `fail_at=k` raises at step k (to exercise the failure path)."""
    from gtapp.progress import Tracker

    steps, step_s = params["steps"], params["step_s"]
    rng = random.Random(params["seed"])
    total = params["payload_kb"] * 1024
    per_step, extra = divmod(total, steps)
    with open(ctx.run_dir / "executions.log", "a") as fh:  # one line per execution: lets tests count runs
        fh.write(f"attempt={ctx.attempt} worker={ctx.worker}\n")
    ctx.log(f"selftest: {steps} steps of {step_s}s, {total} bytes, seed {params['seed']}")
    tracker = Tracker(ctx.progress_fn, "selftest", steps)
    tracker.update(0)
    with ctx.store.writer() as w:
        for i in range(steps):
            if step_s:
                time.sleep(step_s)
            if params["fail_at"] is not None and i == params["fail_at"]:
                raise RuntimeError(f"selftest was asked to fail at step {i}")
            w.write(rng.randbytes(per_step + (extra if i == steps - 1 else 0)))
            tracker.update(i + 1)
        sha = w.commit()
    ctx.log(f"selftest: wrote artifact {sha[:12]} ({w.size} bytes)")
    return {"artifact": sha, "bytes": w.size, "steps": steps}


# --------------------------------------------------------------------------------------------
# finetune: TinyLM (or LLM) LoRA fine-tune, optional DP-SGD, via gtapp.finetune


def _check_finetune(p: dict) -> None:
    if p["pair_id"] is None or not isinstance(p["pair_id"], int):
        raise ValueError("finetune needs pair_id (a registered model pair)")
    if p["dataset_id"] is None or not isinstance(p["dataset_id"], int):
        raise ValueError("finetune needs dataset_id (one of your organisation's datasets)")
    if p["model"] not in ("tiny", "llm"):
        raise ValueError("model must be 'tiny' or 'llm'")
    if not 1 <= p["steps"] <= 1_000_000 or not 1 <= p["batch_size"] <= 4096 or p["lr"] <= 0:
        raise ValueError("steps must be >= 1, batch_size in 1..4096, lr > 0")
    if p["device"] not in ("auto", "cpu", "cuda") and not str(p["device"]).startswith("cuda:"):
        raise ValueError("device must be auto, cpu, cuda or cuda:N")
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
    """The ledger request of a DP fine-tune: ε, δ and the DP-SGD mechanism (noise multiplier
    calibrated as gtapp.finetune will, so the RDP accountant can compose it up front)."""
    if not p.get("dp"):
        return None
    from storage.ledger import DPRequest
    from storage.models import Dataset

    ds = session.get(Dataset, p["dataset_id"])
    if ds is None:
        raise ValueError(f"dataset {p['dataset_id']} not found")
    if not ds.n_examples:
        raise ValueError(f"dataset '{ds.name}' has no examples")
    dp = p["dp"]
    delta = float(dp.get("delta") or ds.delta)
    q = p["batch_size"] / ds.n_examples
    if q > 1:
        raise ValueError(f"DP-SGD needs batch_size <= number of examples ({p['batch_size']} > {ds.n_examples})")
    mech = {"steps": p["steps"], "sample_rate": q, "max_grad_norm": float(dp.get("max_grad_norm") or 1.0)}
    eps = dp.get("target_epsilon")
    try:
        from gtapp import privacy as P
    except ImportError:
        P = None
    if dp.get("noise_multiplier") is not None:
        mech["noise_multiplier"] = float(dp["noise_multiplier"])
        if P is not None:
            eps = P.epsilon(mech["noise_multiplier"], q, p["steps"], delta)
        elif eps is None:
            raise ValueError("dp.target_epsilon is needed to charge the ledger when no accountant is available")
    elif P is not None:
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
    from gtapp.recipe import LoraRecipe
    from gtapp.tasks.base import Example
    from storage.catalog import read_examples
    from storage.models import Adapter, Dataset, ModelPair

    with ctx.session() as s:
        pair = s.get(ModelPair, params["pair_id"])
        ds = s.get(Dataset, params["dataset_id"])
        if pair is None:
            raise ValueError(f"model pair {params['pair_id']} not found")
        if ds is None or ds.org_id != ctx.org_id:
            raise ValueError(f"dataset {params['dataset_id']} not found")
        model_path = pair.tiny_path if params["model"] == "tiny" else pair.llm_path
        recipe_d, ds_artifact, ds_name, ds_delta = pair.recipe[params["model"]], ds.artifact, ds.name, ds.delta
    recipe = LoraRecipe.from_dict(recipe_d, where=f"pair {params['pair_id']} recipe")
    examples = [Example(d["prompt"], d["answer"], tuple(d.get("references", ())))
                for d in read_examples(ctx.store, ds_artifact)]
    ctx.log(f"finetune {params['model']} of pair {params['pair_id']} on dataset '{ds_name}' "
            f"({len(examples)} examples), seed {params['seed']}")
    dp = None
    if params["dp"]:
        d = params["dp"]
        dp = ft.DPConfig(target_epsilon=d.get("target_epsilon"), delta=float(d.get("delta") or ds_delta),
                         noise_multiplier=d.get("noise_multiplier"), max_grad_norm=float(d.get("max_grad_norm") or 1.0))
    config = ft.FinetuneConfig(steps=params["steps"], lr=params["lr"], batch_size=params["batch_size"],
                               max_length=params["max_length"], seed=params["seed"], dp=dp, device=params["device"])
    result = ft.finetune(model_path, recipe, examples, config, ctx.work_dir / "adapter", progress=ctx.progress_fn)
    ctx.progress(0.99, "storing adapter")
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


# --------------------------------------------------------------------------------------------
# evaluate: a base model or an adapter on a generated task or an organisation's dataset

EVAL_METRICS = ("exact_match", "numeric_exact_match", "letter_exact_match", "rouge_l", "perplexity")


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
    from gtapp.tasks.base import Example, Task
    from storage.catalog import read_examples
    from storage.models import Adapter, Dataset, Evaluation, ModelPair

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        pair = s.get(ModelPair, params["pair_id"])
        if pair is None:
            raise ValueError(f"model pair {params['pair_id']} not found")
        model_path = pair.tiny_path if params["model"] == "tiny" else pair.llm_path
        adapter_artifact, epsilon = None, None
        if params["adapter_id"] is not None:
            a = s.get(Adapter, params["adapter_id"])
            if a is None or a.org_id != ctx.org_id:
                raise ValueError(f"adapter {params['adapter_id']} not found")
            if a.model_pair_id != pair.id or a.model != params["model"]:
                raise ValueError(f"adapter {a.id} is a {a.model} adapter of pair {a.model_pair_id}, not a "
                                 f"{params['model']} adapter of pair {pair.id}")
            adapter_artifact = a.artifact
            epsilon = ((a.meta or {}).get("record") or {}).get("epsilon")
        ds_artifact = ds_name = None
        if params["dataset_id"] is not None:
            ds = s.get(Dataset, params["dataset_id"])
            if ds is None or ds.org_id != ctx.org_id:
                raise ValueError(f"dataset {params['dataset_id']} not found")
            ds_artifact, ds_name = ds.artifact, ds.name
    if params["task"] is not None:
        from gtapp.tasks import make_task

        task = make_task(params["task"], seed=params["seed"], n_train=1, n_test=params["n_test"])
    else:
        examples = [Example(d["prompt"], d["answer"], tuple(d.get("references", ())))
                    for d in read_examples(ctx.store, ds_artifact)]
        task = Task(name=f"dataset:{ds_name}", family="user", metric=params["metric"], train=[], test=examples)
    adapter_dir = None
    if adapter_artifact is not None:
        adapter_dir = ctx.store.materialize(adapter_artifact, ctx.work_dir / "adapter")
    device = params["device"]
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
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


# --------------------------------------------------------------------------------------------
# kinds whose gtapp side is not wired in this version


def _not_wired(kind: str, module: str) -> Callable[[dict, Any], dict]:
    def fn(params: dict, ctx) -> dict:
        raise JobNotAvailable(f"job kind '{kind}' is not available in this version of gtapp "
                              f"(its job function is not wired to {module} yet)")
    fn.__doc__ = f"Runs {module} (not available in this version)."
    return fn


for _kind, _module, _admin in (("generate", "gtapp.generate", False), ("shadow", "gtapp.shadow", True),
                               ("train_mapper", "gtapp.mapper", True),
                               ("bench", "gtapp.bench", True)):
    REGISTRY[_kind] = JobSpec(kind=_kind, fn=_not_wired(_kind, _module), queue="gpu", admin_only=_admin,
                              description=f"Runs {_module} (not available in this version).",
                              defaults={"seed": 0, "pair_id": None, "adapter_ids": None, "dataset_id": None,
                                        "mapper_id": None, "config": None},
                              requires=(_module,), wired=False)
