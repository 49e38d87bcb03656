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
import importlib.util
import re
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
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
        # find_spec, not import: checking a kind must not import gtapp (and so torch) in the
        # dashboard's request path.
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return False, (f"job kind '{self.kind}' is not available in this version of gtapp "
                               f"(module {module} is missing)")
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
# helpers shared by the provider-side kinds (shadow, train_mapper, generate, bench)

MAPPER_KINDS = ("gt", "ridge", "mean")
MAPPER_METHOD = {"gt": "gt", "ridge": "ridge", "mean": "mean_shadow"}  # Evaluation.method, as the benchmark names them
ORGANISATIONS = ("average_then_map", "map_then_average")
COMBINE_METHODS = ("mean", "median", "clip")
WEIGHTINGS = ("data_size", "equal")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_device(p: dict) -> None:
    if p["device"] not in ("auto", "cpu", "cuda") and not str(p["device"]).startswith("cuda:"):
        raise ValueError("device must be auto, cpu, cuda or cuda:N")


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _int_list(p: dict, name: str, lo: int, hi: int, allow_empty: bool = False) -> list[int]:
    v = p[name]
    if (not isinstance(v, list) or (not v and not allow_empty)
            or not all(_is_int(x) and lo <= x <= hi for x in v)):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of integers in {lo}..{hi}, "
                         f"got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"{name} has duplicates: {v}")
    return v


def _check_task_names(names, what: str = "task") -> None:
    from gtapp.tasks.universe import task_names  # no torch

    known = set(task_names())
    unknown = [t for t in names if t not in known]
    if unknown:
        raise ValueError(f"unknown {what} name(s) {unknown}: generated task names look like "
                         f"{sorted(known)[:2]} (`gtapp tasks list` shows all {len(known)})")


def _merge_config(p: dict, kind: str) -> bool:
    """``config``: the kind's parameters as one object (the dashboard's JSON box), merged
    into the flat parameters (its values win) and checked as if given flat; the stored
    parameters are then the flat ones. Returns True when it merged (and so validated)."""
    cfg = p.get("config")
    if cfg is None:
        return False
    if not isinstance(cfg, dict):
        raise ValueError(f"config of '{kind}' must be an object holding some of its parameters")
    spec = REGISTRY[kind]
    unknown = sorted(set(cfg) - set(spec.defaults) - {"config"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config of '{kind}'; accepted: "
                         f"{sorted(set(spec.defaults) - {'config'})}")
    merged = spec.check_params({**p, **cfg, "config": None})
    p.clear()
    p.update(merged)
    return True


def _jsonable(obj):
    """JSON data: NaN/inf as null (PostgreSQL's JSON has no NaN), tensors and numpy values as
    lists/numbers, anything else as its string."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return str(obj)


def _load_pair(ctx, pair_id: int) -> dict:
    from storage.models import ModelPair

    with ctx.session() as s:
        pair = s.get(ModelPair, pair_id)
        if pair is None:
            raise ValueError(f"model pair {pair_id} not found")
        return {"id": pair.id, "name": pair.name, "tiny_path": pair.tiny_path, "llm_path": pair.llm_path,
                "recipe": dict(pair.recipe), "fingerprint": pair.recipe_fingerprint}


def _pair_folder(pair: dict, dest) -> Path:
    """A folder gtapp takes as ``zoo_dir`` (tiny/, llm/, recipe.json) for a registered model
    pair: the folder it was registered from while that still holds these two models and this
    recipe; else ``dest``, with links to the two model folders and the registered recipe (the
    recipe in the database is the contract)."""
    tiny, llm = Path(pair["tiny_path"]), Path(pair["llm_path"])
    root = tiny.parent
    if tiny.name == "tiny" and llm == root / "llm" and (root / "recipe.json").is_file():
        try:
            if json.loads((root / "recipe.json").read_text()) == pair["recipe"]:
                return root
        except (OSError, ValueError):
            pass
    for which, path in (("tiny", tiny), ("llm", llm)):
        if not path.is_dir():
            raise ValueError(f"model pair '{pair['name']}': its {which} model {str(path)!r} is not a folder on "
                             f"this worker (hub ids are not supported by this job; register a local folder)")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for which, path in (("tiny", tiny), ("llm", llm)):
        link = dest / which
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve(), target_is_directory=True)
    (dest / "recipe.json").write_text(json.dumps(pair["recipe"], indent=2))
    return dest


def _scaled_progress(ctx, lo: float, hi: float):
    """A ProgressFn mapping a step's 0..1 onto lo..hi of the job."""
    def fn(p) -> None:
        ctx.progress(lo + (hi - lo) * p.fraction, p.stage, None, getattr(p, "message", ""))
    return fn


# --------------------------------------------------------------------------------------------
# shadow: paired TinyLM/LLM fine-tunes on the provider's shadow tasks -> a pair set


def _check_shadow(p: dict) -> None:
    if _merge_config(p, "shadow"):
        return
    if not _is_int(p["pair_id"]):
        raise ValueError("shadow needs pair_id (a registered model pair)")
    tasks = p["tasks"]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise ValueError("shadow needs tasks: a non-empty list of generated task names (`gtapp tasks list`)")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks has duplicates: {tasks}")
    _check_task_names(tasks)
    for name, lo, hi in (("subsets", 1, 10_000), ("subset_size", 1, 1_000_000), ("steps", 1, 1_000_000),
                         ("batch_size", 1, 4096), ("max_length", 8, 32_768), ("n_train", 1, 10_000_000)):
        if not lo <= p[name] <= hi:
            raise ValueError(f"{name} must be in {lo}..{hi}, got {p[name]}")
    _int_list(p, "seeds", 0, 2**31 - 1)
    _int_list(p, "snapshot_steps", 1, p["steps"], allow_empty=True)
    if p["lr"] <= 0 or (p["llm_lr"] is not None and (not _is_num(p["llm_lr"]) or p["llm_lr"] <= 0)):
        raise ValueError("lr (and llm_lr, when given) must be positive numbers")
    if p["name"] is not None and (not isinstance(p["name"], str) or not 0 < len(p["name"]) <= 200):
        raise ValueError("name must be a string of 1..200 characters")
    _check_device(p)


def _shadow_folder(ctx, pair: dict, config) -> tuple:
    """(folder, lock): the pair-set work folder of this pair and config, kept under the data
    dir so a requeued or retried job with the same parameters resumes it (finished runs are
    not redone); locked while a job writes it. If another job holds it, this job's own run
    folder (lock None)."""
    import fcntl
    import hashlib

    key = hashlib.sha256(json.dumps({"recipe": pair["fingerprint"], "tasks": list(config.tasks),
                                     "subsets": config.subsets, "seeds": list(config.seeds),
                                     "settings": config.settings()}, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(ctx.settings.data_dir).resolve() / "shadow"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"pair{pair['id']}-{key}"
    fh = open(root / f"{folder.name}.lock", "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        ctx.log(f"pair-set folder {folder} is being written by another job; this job works in its own run folder")
        return ctx.run_dir / "pairset", None
    return folder, fh


def _finished_runs(folder) -> int:
    from gtapp.shadow import MANIFEST

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return sum(1 for r in manifest.get("runs", {}).values() if (folder / r["shard"]).is_file())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


@job("shadow", queue="gpu", admin_only=True, requires=("gtapp.shadow",), validate=_check_shadow,
     defaults={"pair_id": None, "tasks": [], "subsets": 4, "subset_size": 64, "steps": 40, "snapshot_steps": [],
               "seeds": [0], "lr": 2e-3, "llm_lr": None, "batch_size": 8, "max_length": 128, "n_train": 512,
               "name": None, "device": "auto", "config": None})
def shadow(params: dict, ctx) -> dict:
    """Shadow pairs: for each task x bootstrap subset x seed, fine-tune the pair's TinyLM and LLM
    on the same examples; every snapshot step and the final step give a (ΔTiny, ΔLLM) pair.
    `seed` picks the tasks' examples and subsets, `seeds` the fine-tunes. Resumable: a
    requeued or retried job with the same parameters keeps the runs already finished.
    Produces a pair set."""
    from gtapp.shadow import ShadowConfig, generate_pairs, plan
    from storage.models import PairSet

    ctx.progress(0.0, "preparing")
    pair = _load_pair(ctx, params["pair_id"])
    zoo_dir = _pair_folder(pair, ctx.work_dir / "zoo")
    config = ShadowConfig(tasks=tuple(params["tasks"]), subsets=params["subsets"], subset_size=params["subset_size"],
                          steps=params["steps"], snapshot_steps=tuple(params["snapshot_steps"]),
                          seeds=tuple(params["seeds"]), lr=params["lr"], llm_lr=params["llm_lr"],
                          batch_size=params["batch_size"], max_length=params["max_length"],
                          task_seed=params["seed"], n_train=params["n_train"], subset_seed=params["seed"],
                          device=_resolve_device(params["device"]))
    folder, lock = _shadow_folder(ctx, pair, config)
    try:
        reused = _finished_runs(folder)
        total = len(plan(config))
        ctx.log(f"shadow: pair '{pair['name']}', {len(config.tasks)} task(s) x {config.subsets} subset(s) x "
                f"{len(config.seeds)} seed(s) = {total} runs of {config.steps} steps, in {folder}"
                + (f"; {reused} run(s) finished earlier are kept" if reused else ""))
        ps = generate_pairs(zoo_dir, config, folder, progress=_scaled_progress(ctx, 0.0, 0.97))
        ctx.check_cancel()
        ctx.progress(0.97, "storing pair set")
        sha = ctx.store.put_tree(folder)
    finally:
        if lock is not None:
            lock.close()
    summary = _jsonable(ps.summary())
    n_pairs = len(ps)
    ctx.log(f"shadow: pair set {ps.version}: {n_pairs} pairs from {summary['runs']} runs "
            f"({reused} reused, {summary['runs'] - reused} made now)")
    settings = {"tasks": list(config.tasks), "subsets": config.subsets, "seeds": list(config.seeds),
                **_jsonable(config.settings())}
    name = params["name"] or f"shadow-{pair['name']}-job{ctx.job_id}"

    def register(s, job_row) -> dict:
        row = PairSet(model_pair_id=pair["id"], name=name, n_pairs=n_pairs, artifact=sha, job_id=job_row.id,
                      meta={"version": ps.version, "tasks": summary["tasks"], "runs": summary["runs"],
                            "config": settings, "summary": summary, "runs_reused": reused, "folder": str(folder)})
        s.add(row)
        s.flush()
        return {"pair_set_id": row.id}

    ctx.on_success(register)
    return {"pair_set_artifact": sha, "version": ps.version, "n_pairs": n_pairs, "runs": summary["runs"],
            "runs_reused": reused, "tasks": summary["tasks"]}


# --------------------------------------------------------------------------------------------
# train_mapper: fit a Gradient Transformer (or a ridge / mean baseline) on a pair set


def _check_train_mapper(p: dict) -> None:
    for key in ("pair_set_id", "pair_id"):
        if p[key] is not None and not _is_int(p[key]):
            raise ValueError(f"{key} must be an integer")
    if p["pair_set_id"] is None and p["pair_id"] is None:
        raise ValueError("train_mapper needs pair_set_id (a pair set made by a shadow job), or pair_id "
                         "(that model pair's newest pair set is used)")
    if p["kind"] not in MAPPER_KINDS:
        raise ValueError(f"unknown mapper kind {p['kind']!r}; choose one of {', '.join(MAPPER_KINDS)}")
    cfg = p["config"] if p["config"] is not None else {}
    if not isinstance(cfg, dict):
        raise ValueError("config must be an object of mapper settings")
    # torch: imported already by the kind's availability check
    from gtapp.mapper.base import mapper_classes

    known = mapper_classes()[p["kind"]].default_config()
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for a {p['kind']} mapper; known: {sorted(known)}")
    if p["name"] is not None and (not isinstance(p["name"], str) or not 0 < len(p["name"]) <= 200):
        raise ValueError("name must be a string of 1..200 characters")
    _check_device(p)


def _card_metrics(card: dict) -> dict:
    """The card's headline numbers (flat, for tables), with the whole card beside them."""
    out = {}
    for prefix, part in (("train", card.get("train") or {}), ("val", card.get("validation") or {}),
                         ("val_mean_baseline", card.get("validation_mean_baseline") or {})):
        for key, name in (("rel_err_mean", "rel_err"), ("cosine_mean", "cosine")):
            if _is_num(part.get(key)):
                out[f"{prefix}_{name}"] = float(part[key])
    return out


@job("train_mapper", queue="gpu", admin_only=True, requires=("gtapp.mapper",), validate=_check_train_mapper,
     defaults={"pair_set_id": None, "pair_id": None, "kind": "gt", "config": {}, "name": None, "promote": False,
               "device": "auto"})
def train_mapper(params: dict, ctx) -> dict:
    """Fit a mapper (`kind` gt | ridge | mean, `config` its settings) on a pair set, split by
    shadow run; validation numbers (with the mean-of-shadow baseline beside them) go to its
    card. Produces a mapper version (`promote`: also make it the pair's promoted one)."""
    from sqlalchemy import select

    from gtapp.mapper import make_mapper, recipe_fingerprint
    from gtapp.recipe import LoraRecipe
    from gtapp.shadow import PairSet as ShadowPairSet
    from storage.models import MapperVersion, PairSet

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        if params["pair_set_id"] is not None:
            row = s.get(PairSet, params["pair_set_id"])
            if row is None:
                raise ValueError(f"pair set {params['pair_set_id']} not found")
            if params["pair_id"] is not None and row.model_pair_id != params["pair_id"]:
                raise ValueError(f"pair set {row.id} belongs to model pair {row.model_pair_id}, "
                                 f"not {params['pair_id']}")
        else:
            row = s.scalars(select(PairSet).where(PairSet.model_pair_id == params["pair_id"])
                            .order_by(PairSet.id.desc()).limit(1)).first()
            if row is None:
                raise ValueError(f"model pair {params['pair_id']} has no pair set yet: run a shadow job first")
        ps_id, ps_artifact, ps_name, pair_id = row.id, row.artifact, row.name, row.model_pair_id
    pair = _load_pair(ctx, pair_id)
    folder = ctx.store.materialize(ps_artifact, ctx.work_dir / "pairset")
    pair_set = ShadowPairSet.load(folder)
    for which in ("tiny", "llm"):
        registered = recipe_fingerprint(LoraRecipe.from_dict(pair["recipe"][which], f"pair {pair_id} {which}"))
        made = recipe_fingerprint(getattr(pair_set.recipes, which))
        if registered != made:
            raise ValueError(f"pair set {ps_id} was made with another {which} recipe ({made[:12]}) than model "
                             f"pair '{pair['name']}' has ({registered[:12]})")
    kind = params["kind"]
    config = dict(params["config"] or {})
    config.setdefault("split_seed", params["seed"])
    if kind == "gt":
        config.setdefault("seed", params["seed"])
        config.setdefault("device", _resolve_device(params["device"]))
    mapper = make_mapper(kind, pair_set.recipes, config)
    ctx.log(f"train_mapper: {kind} on pair set {ps_id} '{ps_name}' ({len(pair_set)} pairs, "
            f"{len(pair_set.runs)} runs, version {pair_set.version})")
    ctx.progress(0.02, f"fitting {kind} mapper")
    mapper.fit(pair_set, progress=_scaled_progress(ctx, 0.02, 0.95))
    ctx.check_cancel()
    ctx.progress(0.95, "saving mapper version")
    out = mapper.save(ctx.work_dir / "mapper")
    sha = ctx.store.put_tree(out)
    card = _jsonable(mapper.card)
    headline = _card_metrics(card)
    ctx.log(f"train_mapper: {kind} mapper {card.get('version')}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    metrics = {**headline, "name": params["name"] or f"{kind}-job{ctx.job_id}", "version_hash": card.get("version"),
               "pair_set_version": pair_set.version, "card": card}

    def register(s, job_row) -> dict:
        from sqlalchemy import func

        from storage.catalog import promote_mapper

        last = s.scalar(select(func.max(MapperVersion.version)).where(MapperVersion.model_pair_id == pair_id))
        mv = MapperVersion(model_pair_id=pair_id, version=(last or 0) + 1, kind=kind, artifact=sha, pair_set_id=ps_id,
                           metrics=metrics, promoted=False, job_id=job_row.id)
        s.add(mv)
        s.flush()
        if params["promote"]:
            promote_mapper(s, mv.id)
        return {"mapper_id": mv.id, "version": mv.version, "promoted": bool(params["promote"])}

    ctx.on_success(register)
    return {"mapper_artifact": sha, "kind": kind, "pair_set_id": ps_id, "metrics": headline,
            "version_hash": card.get("version")}


# --------------------------------------------------------------------------------------------
# generate: an organisation's TinyLM adapter(s) -> the mapper -> a stock peft LLM adapter


def _check_generate(p: dict) -> None:
    cfg = p.get("config")
    if isinstance(cfg, dict) and "evaluate" in cfg:  # the dashboard's form: {"weights", "evaluate": {...}}
        cfg, ev = dict(cfg), cfg["evaluate"]
        del cfg["evaluate"]
        if ev is not None:
            if not isinstance(ev, dict) or set(ev) - {"task", "dataset_id", "metric", "n_test", "limit"}:
                raise ValueError("config.evaluate must be {\"task\": name} or {\"dataset_id\": id} "
                                 "(optionally with metric, n_test, limit)")
            cfg.update({("evaluate_task" if k == "task" else k): v for k, v in ev.items()})
        p["config"] = cfg
    if _merge_config(p, "generate"):
        return
    ids = p["adapter_ids"]
    if not isinstance(ids, list) or not ids:
        raise ValueError("choose at least one TinyLM adapter: adapter_ids is empty")
    if not all(_is_int(a) for a in ids):
        raise ValueError(f"adapter_ids must be adapter ids (integers), got {ids!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"adapter_ids has duplicates: {ids}")
    if len(ids) > 64:
        raise ValueError("at most 64 adapters can be combined in one job")
    w = p["weights"]
    if w is not None:
        if not isinstance(w, list) or not all(_is_num(x) and x >= 0 for x in w):
            raise ValueError("weights must be a list of non-negative numbers, one per adapter")
        if len(w) != len(ids):
            raise ValueError(f"{len(w)} weights for {len(ids)} adapters: give one weight per adapter, in order")
        if sum(w) <= 0:
            raise ValueError("at least one weight must be positive")
    for key, allowed in (("organisation", ORGANISATIONS), ("method", COMBINE_METHODS), ("weighting", WEIGHTINGS),
                         ("metric", EVAL_METRICS)):
        if p[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {p[key]!r}")
    for key in ("mapper_id", "pair_id", "dataset_id"):
        if p[key] is not None and not _is_int(p[key]):
            raise ValueError(f"{key} must be an integer")
    if p["evaluate_task"] is not None:
        if p["dataset_id"] is not None:
            raise ValueError("evaluate on a task (evaluate_task) or on your dataset (dataset_id), not both")
        if not isinstance(p["evaluate_task"], str):
            raise ValueError("evaluate_task must be a generated task name")
        _check_task_names([p["evaluate_task"]], "evaluation task")
    if not 1 <= p["n_test"] <= 100_000:
        raise ValueError("n_test must be in 1..100000")
    if p["limit"] is not None and (not _is_int(p["limit"]) or p["limit"] < 1):
        raise ValueError("limit must be a positive integer")
    if p["name"] is not None and (not isinstance(p["name"], str) or not 0 < len(p["name"]) <= 200):
        raise ValueError("name must be a string of 1..200 characters")
    _check_device(p)


@job("generate", queue="gpu", requires=("gtapp.generate",), validate=_check_generate,
     defaults={"adapter_ids": [], "mapper_id": None, "pair_id": None, "weights": None,
               "organisation": "average_then_map", "method": "mean", "weighting": "data_size", "merged": False,
               "evaluate_task": None, "dataset_id": None, "metric": "exact_match", "n_test": 128, "limit": None,
               "name": None, "device": "auto", "config": None})
def generate(params: dict, ctx) -> dict:
    """Map your TinyLM adapter(s) to an LLM adapter (stock peft) with a mapper version
    (`mapper_id`; default: the model pair's promoted one). Several adapters are combined
    (`organisation`, `method`, `weights` or by data size). Each input's out-of-distribution
    score and every contributor's privacy spend are recorded; `merged` also stores the merged
    LLM; `evaluate_task` (or your `dataset_id`) also scores the new adapter. Produces an
    adapter (and an evaluation)."""
    import shutil

    from gtapp.generate import generate as run_generate
    from gtapp.mapper import load_mapper
    from storage.catalog import promoted_mapper, read_examples
    from storage.models import Adapter, Dataset, Evaluation, MapperVersion

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        adapters = []
        for aid in params["adapter_ids"]:
            a = s.get(Adapter, aid)
            if a is None or a.org_id != ctx.org_id:
                raise ValueError(f"adapter {aid} not found")
            if a.model != "tiny":
                raise ValueError(f"adapter {aid} ('{a.name}') is an LLM adapter: generate maps TinyLM adapters")
            record = (a.meta or {}).get("record") or {}
            adapters.append({"id": a.id, "name": a.name, "artifact": a.artifact, "pair_id": a.model_pair_id,
                             "origin": a.origin, "dataset_id": a.dataset_id,
                             "epsilon": record.get("epsilon"),
                             "delta": record.get("delta")})
        if params["mapper_id"] is not None:
            mv = s.get(MapperVersion, params["mapper_id"])
            if mv is None:
                raise ValueError(f"mapper {params['mapper_id']} not found")
        else:
            pair_ids = sorted({a["pair_id"] for a in adapters})
            pid = params["pair_id"] if params["pair_id"] is not None else pair_ids[0]
            if params["pair_id"] is None and len(pair_ids) > 1:
                raise ValueError(f"the adapters belong to different model pairs {pair_ids}: one mapper maps one pair")
            mv = promoted_mapper(s, pid)
            if mv is None:
                raise ValueError(f"model pair {pid} has no promoted mapper version yet: an admin trains and promotes "
                                 f"one (or give mapper_id)")
        if params["pair_id"] is not None and mv.model_pair_id != params["pair_id"]:
            raise ValueError(f"mapper {mv.id} maps model pair {mv.model_pair_id}, not {params['pair_id']}")
        wrong = [a["id"] for a in adapters if a["pair_id"] != mv.model_pair_id]
        if wrong:
            raise ValueError(f"adapter(s) {wrong} are not TinyLM adapters of model pair {mv.model_pair_id}, which "
                             f"mapper version {mv.version} (id {mv.id}) maps")
        mapper_info = {"mapper_id": mv.id, "version": mv.version, "kind": mv.kind, "promoted": mv.promoted,
                       "version_hash": (mv.metrics or {}).get("version_hash")}
        mapper_artifact, pair_id = mv.artifact, mv.model_pair_id
        ds_examples = ds_name = None
        if params["dataset_id"] is not None:
            ds = s.get(Dataset, params["dataset_id"])
            if ds is None or ds.org_id != ctx.org_id:
                raise ValueError(f"dataset {params['dataset_id']} not found")
            ds_examples, ds_name = ds.artifact, ds.name
    pair = _load_pair(ctx, pair_id)
    zoo_dir = _pair_folder(pair, ctx.work_dir / "zoo")
    device = _resolve_device(params["device"])
    mapper = load_mapper(ctx.store.materialize(mapper_artifact, ctx.work_dir / "mapper"), device=device)
    tiny_dirs = [str(ctx.store.materialize(a["artifact"], ctx.work_dir / "tiny" / str(a["id"]))) for a in adapters]
    evaluating = params["evaluate_task"] is not None or params["dataset_id"] is not None
    ctx.log(f"generate: {len(adapters)} TinyLM adapter(s) {[a['id'] for a in adapters]} with mapper v"
            f"{mapper_info['version']} ({mapper_info['kind']}, id {mapper_info['mapper_id']}) of pair '{pair['name']}'")
    out = ctx.work_dir / "llm_adapter"
    result = run_generate(mapper, tiny_dirs, out, weights=params["weights"], zoo=zoo_dir, merged=params["merged"],
                          organisation=params["organisation"], method=params["method"],
                          weighting=params["weighting"], names=[f"{a['name']} (adapter {a['id']})" for a in adapters],
                          progress=_scaled_progress(ctx, 0.02, 0.6 if evaluating else 0.9))
    ctx.check_cancel()
    for w in result.warnings:
        ctx.log("warning: " + w)
    merged_sha = None
    if result.merged_dir is not None:  # stored on its own: the adapter artifact stays a small peft folder
        merged = ctx.work_dir / "merged"
        shutil.move(str(result.merged_dir), merged)
        ctx.progress(0.6 if evaluating else 0.9, "storing the merged LLM")
        merged_sha = ctx.store.put_tree(merged)
    record = _jsonable(result.record)
    rows = record.get("contributors") or []
    contributors = []
    for i, a in enumerate(adapters):
        r = rows[i] if i < len(rows) else {}
        eps = a["epsilon"] if a["epsilon"] is not None else (r.get("epsilon") if r.get("dp") else None)
        delta = a["delta"] if a["delta"] is not None else r.get("delta")
        contributors.append({"adapter_id": a["id"], "name": a["name"], "origin": a["origin"],
                             "dataset_id": a["dataset_id"], "weight": r.get("weight"), "examples": r.get("examples"),
                             "dp": eps is not None, "epsilon": eps, "delta": delta if eps is not None else None,
                             "ood": r.get("ood")})
    all_dp = all(c["dp"] for c in contributors)
    privacy = {"all_dp": all_dp,
               "epsilon": max(c["epsilon"] for c in contributors) if all_dp else None,
               "delta": max((c["delta"] or 0.0) for c in contributors) if all_dp else None,
               "per_contributor": [{k: c[k] for k in ("adapter_id", "name", "dp", "epsilon", "delta")}
                                   for c in contributors],
               "note": "each contributor's (epsilon, delta) covers its own dataset; mapping and combining are "
                       "post-processing and keep it; a contributor without DP has no guarantee"}
    ood = [o.get("score") if isinstance(o, dict) else None for o in (record.get("ood") or [])]
    ctx.progress(0.6 if evaluating else 0.9, "storing the LLM adapter")
    sha = ctx.store.put_tree(out)

    evaluation = None
    if evaluating:
        from gtapp import evaluate as ev
        from gtapp.tasks.base import Example, Task

        if params["evaluate_task"] is not None:
            from gtapp.tasks import make_task

            task = make_task(params["evaluate_task"], seed=params["seed"], n_train=1, n_test=params["n_test"])
        else:
            examples = [Example(d["prompt"], d["answer"], tuple(d.get("references", ())))
                        for d in read_examples(ctx.store, ds_examples)]
            task = Task(name=f"dataset:{ds_name}", family="user", metric=params["metric"], train=[], test=examples)
        ctx.progress(0.65, f"evaluating on {task.name}")
        evaluation = _jsonable(ev.evaluate_paths(pair["llm_path"], task, adapter_dir=out, split="test",
                                                 limit=params["limit"], batch_size=32, device=device))
        ctx.check_cancel()
        evaluation.pop("adapter", None)  # this attempt's scratch folder: gone once the job ends
        evaluation["task"] = task.name
        ctx.log(f"generated adapter on {task.name}: {evaluation['metric']} = {evaluation['value']:.4f} "
                f"(n={evaluation['n']})")
    name = params["name"] or f"llm-gen-job{ctx.job_id}"
    method = MAPPER_METHOD.get(mapper_info["kind"], mapper_info["kind"])
    meta = {"record": {"epsilon": privacy["epsilon"], "delta": privacy["delta"], "dp": all_dp,
                       "rank": mapper.recipes.llm.rank},  # what adapter lists read (as for fine-tuned ones)
            "mapper": mapper_info, "contributors": contributors, "privacy": privacy, "ood": ood,
            "warnings": list(result.warnings), "combine": record.get("combine"), "timing": record.get("timing"),
            "merged_artifact": merged_sha, "evaluation": evaluation}

    def register(s, job_row) -> dict:
        a = Adapter(org_id=job_row.org_id, user_id=job_row.user_id, model_pair_id=pair_id, model="llm",
                    origin="generated", name=name, artifact=sha, job_id=job_row.id, meta=meta)
        s.add(a)
        s.flush()
        out_ids = {"adapter_id": a.id}
        if evaluation is not None:
            e = Evaluation(org_id=job_row.org_id, job_id=job_row.id, model_pair_id=pair_id, adapter_id=a.id,
                           method=method, task=evaluation["task"], metric=evaluation["metric"],
                           value=float(evaluation["value"]), seed=params["seed"], epsilon=privacy["epsilon"],
                           n_clients=len(adapters),
                           meta={**evaluation, "protocol": "dashboard",
                                 "mapper": f"v{mapper_info['version']} {mapper_info['kind']}",
                                 "mapper_id": mapper_info["mapper_id"], "ood": ood,
                                 "contributors": [c["adapter_id"] for c in contributors]})
            s.add(e)
            s.flush()
            out_ids["evaluation_id"] = e.id
        return out_ids

    ctx.on_success(register)
    outputs = {"adapter_artifact": sha, "mapper_id": mapper_info["mapper_id"], "ood": ood,
               "warnings": list(result.warnings), "epsilon": privacy["epsilon"],
               "weights": [c["weight"] for c in contributors]}
    if merged_sha:
        outputs["merged_artifact"] = merged_sha
    if evaluation is not None:
        outputs.update({"task": evaluation["task"], "metric": evaluation["metric"], "value": evaluation["value"],
                        "n": evaluation["n"]})
    return outputs


# --------------------------------------------------------------------------------------------
# bench: the whole benchmark (gtapp.bench) as a job; its results JSON feeds the Compare tab


def _bench_preset(p: dict):
    """The preset named by ``preset`` with ``overrides`` (BenchPreset fields) applied."""
    import dataclasses

    from gtapp.bench.presets import PRESETS, BenchPreset

    if p["preset"] not in PRESETS:
        raise ValueError(f"unknown bench preset {p['preset']!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[p["preset"]]
    overrides = p["overrides"] or {}
    if not isinstance(overrides, dict):
        raise ValueError("overrides must be an object of benchmark preset fields")
    fields = {f.name for f in dataclasses.fields(BenchPreset)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; known: {sorted(fields)}")
    values = {}
    for key, v in overrides.items():
        current = getattr(base, key)
        if isinstance(current, tuple):
            if not isinstance(v, list):
                raise ValueError(f"override {key} must be a list")
            v = tuple(v)
        elif isinstance(current, dict):
            if not isinstance(v, dict):
                raise ValueError(f"override {key} must be an object")
        elif isinstance(current, float):
            if not _is_num(v):
                raise ValueError(f"override {key} should be a number, got {v!r}")
            v = float(v)
        elif isinstance(current, int) and not _is_int(v):
            raise ValueError(f"override {key} should be an integer, got {v!r}")
        elif isinstance(current, str) and not isinstance(v, str):
            raise ValueError(f"override {key} should be a string, got {v!r}")
        values[key] = v
    return dataclasses.replace(base, **values) if values else base


def _check_bench(p: dict) -> None:
    from gtapp.bench.presets import ALL_METHODS

    preset = _bench_preset(p)
    _int_list(p, "seeds", 0, 2**31 - 1, allow_empty=True)
    if p["pair_id"] is not None and not _is_int(p["pair_id"]):
        raise ValueError("pair_id must be an integer (a registered model pair to benchmark; default: build the "
                         "preset's zoo)")
    _check_task_names(list(preset.in_dist_tasks) + list(preset.cross_shadow_tasks) + list(preset.cross_private_tasks))
    overlap = set(preset.cross_shadow_tasks) & set(preset.cross_private_tasks)
    if overlap:
        raise ValueError(f"cross-task private tasks are also shadow tasks: {sorted(overlap)}")
    bad = sorted(set(preset.methods) - set(ALL_METHODS))
    if bad:
        raise ValueError(f"unknown method(s) {bad}; known: {list(ALL_METHODS)}")
    if not preset.seeds and not p["seeds"]:
        raise ValueError("no seeds to run")


@job("bench", queue="gpu", admin_only=True, requires=("gtapp.bench.benchmark",), validate=_check_bench,
     defaults={"preset": "ci", "seeds": [], "pair_id": None, "overrides": None, "record_evaluations": False})
def bench(params: dict, ctx) -> dict:
    """The benchmark (`preset` ci | demo | gpu, `overrides` of its fields, `seeds`; default the
    preset's) on a registered model pair (`pair_id`) or on the preset's own zoo, built for the
    run. Stores the results JSON (rows, summary, targets, cost table) as an artifact, which the
    Compare tab lists; `record_evaluations` also records each row as an evaluation."""
    import shutil

    from gtapp.bench.benchmark import run_benchmark
    from storage.models import Evaluation

    ctx.progress(0.0, "preparing")
    preset = _bench_preset(params)
    zoo_dir = None
    if params["pair_id"] is not None:
        zoo_dir = _pair_folder(_load_pair(ctx, params["pair_id"]), ctx.work_dir / "zoo")
    work = ctx.run_dir / "bench"  # kept across attempts of this job: a requeued run resumes its shadow pair sets
    out = ctx.work_dir / "results.json"
    seeds = tuple(params["seeds"]) or None
    ctx.log(f"bench: preset '{preset.name}', seeds {list(seeds or preset.seeds)}, "
            f"zoo {'of pair ' + str(params['pair_id']) if zoo_dir else preset.zoo_preset + ' (built for this run)'}")
    try:
        result = run_benchmark(preset, out, zoo_dir=zoo_dir, work=work, seeds=seeds, progress=ctx.progress_fn,
                               log=ctx.log)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    ctx.check_cancel()
    sha = ctx.store.put_file(out)
    shutil.rmtree(work, ignore_errors=True)
    rows = _jsonable(result["rows"])
    targets = _jsonable(result["targets"])
    for t in targets:
        ctx.log(f"target: {t['target']}: measured {t['measured']}, {'met' if t['met'] else 'not met'}")

    def register(s, job_row) -> dict:
        n = 0
        if params["record_evaluations"]:
            for r in rows:
                if not _is_num(r.get("value")):
                    continue
                meta = {k: r.get(k) for k in ("protocol", "family", "gap_recovery", "gap_recovery_nll", "answer_nll",
                                              "wall_s", "peak_mem_mb", "n_eval") if r.get(k) is not None}
                s.add(Evaluation(org_id=job_row.org_id, job_id=job_row.id, model_pair_id=params["pair_id"],
                                 method=r["method"], task=r["task"], metric=r["metric"], value=float(r["value"]),
                                 seed=int(r["seed"]), epsilon=r.get("dp_epsilon"), n_clients=r.get("clients"),
                                 meta={**meta, "bench_job": job_row.id, "preset": preset.name}))
                n += 1
            s.flush()
        return {"evaluations": n}

    ctx.on_success(register)
    return {"results_artifact": sha, "preset": preset.name, "seeds": list(result["seeds"]), "rows": len(rows),
            "targets": targets, "total_s": _jsonable(result["timings"].get("total_s"))}


# --------------------------------------------------------------------------------------------
# a placeholder for a kind registered before its gtapp side exists (wired=False)


def _not_wired(kind: str, module: str) -> Callable[[dict, Any], dict]:
    def fn(params: dict, ctx) -> dict:
        raise JobNotAvailable(f"job kind '{kind}' is not available in this version of gtapp "
                              f"(its job function is not wired to {module} yet)")
    fn.__doc__ = f"Runs {module} (not available in this version)."
    return fn



# --------------------------------------------------------------------------------------------
# zoo: build a TinyLM/LLM pair from scratch and register it as a model pair (admin)

ZOO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ZOO_PRESETS = ("micro", "ci", "demo", "gpu")  # == gtapp.zoo.PRESETS (checked by a test)


def _check_zoo(p: dict) -> None:
    if p["preset"] not in ZOO_PRESETS:  # gtapp.zoo imports torch: its preset names are repeated here
        raise ValueError(f"preset must be one of {list(ZOO_PRESETS)}, got {p['preset']!r}")
    if p["name"] is not None and not ZOO_NAME.match(p["name"]):
        raise ValueError("name: letters, digits, '_', '.', '-' (max 64), starting with a letter or digit")


@job("zoo", queue="gpu", admin_only=True, requires=("gtapp.zoo",), validate=_check_zoo,
     defaults={"preset": "ci", "name": None})
def zoo(params: dict, ctx) -> dict:
    """Build a TinyLM/LLM pair (`preset` micro | ci | demo | gpu, `seed`) into the zoo folder
    (setting `zoo_dir`) under `name` (default `<preset>-s<seed>`) and register it as a model pair."""
    import shutil

    from gtapp import zoo as gzoo
    from storage.catalog import register_pair

    name = params["name"] or f"{params['preset']}-s{params['seed']}"
    dest = ctx.settings.zoo_root / name
    if dest.exists():
        raise ValueError(f"zoo folder '{name}' already exists; choose another name")
    staging = ctx.work_dir / "zoo"
    gzoo.build(params["preset"], staging, seed=params["seed"], progress=ctx.progress_fn)
    ctx.check_cancel()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(dest))  # appears whole, only once built
    ctx.log(f"built zoo '{name}' ({params['preset']}, seed {params['seed']}) at {dest}")

    def register(s, job_row) -> dict:
        return {"pair_id": register_pair(s, name, dest).id}

    ctx.on_success(register)
    return {"zoo": name}
