"""Generate: an organisation's TinyLM adapter(s) -> the mapper -> a stock peft LLM adapter"""

from __future__ import annotations

import json

from gtapp.choices import REFINE_MODES
from storage.catalog import pair_model_name
from workers.jobs.common import (
    COMBINE_METHODS,
    MAPPER_METHOD,
    ORGANISATIONS,
    WEIGHTINGS,
    _check_device,
    _check_task_names,
    _dataset_examples,
    _eval_task,
    _is_int,
    _is_num,
    _jsonable,
    _load_pair,
    _merge_config,
    _pair_folder,
    _resolve_device,
    _scaled_progress,
    stage_spans,
)
from workers.jobs.evaluate import EVAL_METRICS
from workers.jobs.registry import job
from storage.artifacts import atomic_write_json
from workers.redact import redact_json_files


def _refine_mode(value) -> str:
    """``refine``: never / auto / always (gtapp.refine.refine_wanted); false and true mean never and always."""
    if value is None or value is False:
        return "never"
    if value is True:
        return "always"
    if value in REFINE_MODES:
        return value
    raise ValueError(f"refine must be one of {', '.join(REFINE_MODES)} (or true / false), got {value!r}")


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
    p["refine"] = _refine_mode(p["refine"])
    if p["refine"] != "never" and len(ids) != 1:
        raise ValueError("refine works on one TinyLM adapter (the proxy-tuned teacher is built from it)")
    if p["refine"] != "never" and p["merged"]:
        raise ValueError("refine and merged: choose one (merge the refined adapter after downloading it)")
    if p["refine_prompts_dataset_id"] is not None:
        if not _is_int(p["refine_prompts_dataset_id"]):
            raise ValueError("refine_prompts_dataset_id must be a dataset id (an integer)")
        if p["refine"] == "never":
            raise ValueError("refine_prompts_dataset_id gives the refinement its prompts: set refine to "
                             "always or auto, or leave it out")
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


def resolve_mapper(s, params: dict, adapters: list[dict]):
    """The mapper version a generate job uses (``mapper_id``, else the pair's promoted one),
    checked against the adapters' model pair; ValueError saying what to do otherwise."""
    from storage.catalog import promoted_mapper
    from storage.models import MapperVersion

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
            raise ValueError(f"model pair {pid} has no promoted mapper yet: an admin trains and promotes one "
                             f"(Admin tab), or choose a mapper version; nothing was queued")
    if params["pair_id"] is not None and mv.model_pair_id != params["pair_id"]:
        raise ValueError(f"mapper {mv.id} maps model pair {mv.model_pair_id}, not {params['pair_id']}")
    wrong = [a["id"] for a in adapters if a["pair_id"] != mv.model_pair_id]
    if wrong:
        raise ValueError(f"adapter(s) {wrong} are not TinyLM adapters of model pair {mv.model_pair_id}, which "
                         f"mapper version {mv.version} (id {mv.id}) maps")
    return mv


def _precheck_generate(params: dict, s, who=None) -> None:
    """At submission: the adapters are TinyLM adapters of one pair that has a mapper to use, and
    the refinement's prompts (if given) come from a dataset that may be read as public."""
    from storage.models import Adapter, Dataset

    adapters = []
    for aid in params["adapter_ids"]:
        a = s.get(Adapter, aid)
        if a is None:
            raise ValueError(f"adapter {aid} not found")
        if a.model != "tiny":
            raise ValueError(f"adapter {aid} ('{a.name}') is an LLM adapter: generate maps TinyLM adapters")
        adapters.append({"id": a.id, "pair_id": a.model_pair_id, "dataset_id": a.dataset_id})
    resolve_mapper(s, params, adapters)
    if params["refine_prompts_dataset_id"] is not None:
        check_public_prompts(s.get(Dataset, params["refine_prompts_dataset_id"]), adapters)


def check_public_prompts(ds, adapters: list[dict]) -> None:
    """The refinement reads the prompts of ``ds`` and charges no privacy budget for them, so it
    must be public data: a dataset with a DP budget, or one a chosen adapter was trained on, is
    the organisation's private data and is refused (ValueError saying what to give instead)."""
    if ds is None:
        raise ValueError("the refinement's prompt dataset was not found")
    if ds.epsilon_budget is not None:
        raise ValueError(f"dataset {ds.id} ('{ds.name}') has a privacy budget, so it is private: refinement "
                         "charges nothing for its prompts and reads only public ones; upload public prompts of "
                         "your domain as a dataset without a budget")
    trained_on = [a["id"] for a in adapters if a.get("dataset_id") == ds.id]
    if trained_on:
        raise ValueError(f"dataset {ds.id} ('{ds.name}') trained adapter(s) {trained_on}: it is the private data "
                         "the adapter protects; give a dataset of public prompts instead")
    if not ds.n_examples:
        raise ValueError(f"dataset {ds.id} ('{ds.name}') has no examples to take prompts from")


@job("generate", queue="gpu", requires=("gtapp.generate",), validate=_check_generate, precheck=_precheck_generate,
     defaults={"adapter_ids": [], "mapper_id": None, "pair_id": None, "weights": None,
               "organisation": "average_then_map", "method": "mean", "weighting": "data_size", "merged": False,
               "evaluate_task": None, "dataset_id": None, "metric": "exact_match", "n_test": 128, "limit": None,
               "name": None, "device": "auto", "config": None, "refine": None, "refine_prompts_dataset_id": None})
def generate(params: dict, ctx) -> dict:
    """Map your TinyLM adapter(s) to an LLM adapter (stock peft) with a mapper version
    (`mapper_id`; default: the model pair's promoted one). Several adapters are combined
    (`organisation`, `method`, `weights` or by data size). Each input's out-of-distribution
    score and every contributor's privacy spend are recorded; `merged` also stores the merged
    LLM; `evaluate_task` (or your `dataset_id`) also scores the new adapter; `refine` (never,
    auto, always) distils one adapter towards the proxy-tuned distribution on the provider's
    text, "auto" only where its task score is above gtapp.refine.AUTO_REFINE_TASK_OOD;
    `refine_prompts_dataset_id` names a dataset of your *public* prompts (no DP budget, not what
    the adapter was trained on; answers are not read) that the refinement's samples are written
    after instead of the provider's prompts. Produces an adapter (and an evaluation)."""
    import shutil

    from gtapp.generate import generate as run_generate
    from gtapp.mapper import load_mapper
    from gtapp.privacy import contributors_privacy
    from storage.models import Adapter, Dataset, Evaluation, PairSetRecord
    from storage.tenancy import of_org

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        adapters = []
        for aid in params["adapter_ids"]:
            a = of_org(s, Adapter, aid, ctx.org_id, "adapter")
            if a.model != "tiny":
                raise ValueError(f"adapter {aid} ('{a.name}') is an LLM adapter: generate maps TinyLM adapters")
            record = (a.meta or {}).get("record") or {}
            adapters.append({"id": a.id, "name": a.name, "artifact": a.artifact, "pair_id": a.model_pair_id,
                             "origin": a.origin, "dataset_id": a.dataset_id,
                             "epsilon": record.get("epsilon"),
                             "delta": record.get("delta")})
        mv = resolve_mapper(s, params, adapters)
        mapper_info = {"mapper_id": mv.id, "version": mv.version, "kind": mv.kind, "promoted": mv.promoted,
                       "version_hash": (mv.metrics or {}).get("version_hash")}
        mapper_artifact, pair_id = mv.artifact, mv.model_pair_id
        pair_set_artifact = None
        if params["refine"] != "never":
            ps = s.get(PairSetRecord, mv.pair_set_id) if mv.pair_set_id is not None else None
            if ps is None:
                raise ValueError(f"mapper version {mv.version} names no pair set: refinement needs the provider's "
                                 "shadow-task text")
            pair_set_artifact = ps.artifact
        prompts_ds = None
        if params["refine_prompts_dataset_id"] is not None:
            ds = of_org(s, Dataset, params["refine_prompts_dataset_id"], ctx.org_id, "dataset")
            check_public_prompts(ds, adapters)
            prompts_ds = {"id": ds.id, "name": ds.name, "artifact": ds.artifact}
        ds_examples = ds_name = None
        if params["dataset_id"] is not None:
            ds = of_org(s, Dataset, params["dataset_id"], ctx.org_id, "dataset")
            ds_examples, ds_name = ds.artifact, ds.name
    pair = _load_pair(ctx, pair_id)
    zoo_dir = _pair_folder(pair, ctx.work_dir / "zoo")
    device = _resolve_device(params["device"])
    mapper = load_mapper(ctx.store.materialize(mapper_artifact, ctx.work_dir / "mapper"), device=device)
    tiny_dirs = [str(ctx.store.materialize(a["artifact"], ctx.work_dir / "tiny" / str(a["id"]))) for a in adapters]
    evaluating = params["evaluate_task"] is not None or params["dataset_id"] is not None
    task = (_eval_task(ctx, params["evaluate_task"], params["seed"], params["n_test"], ds_examples, ds_name,
                       params["metric"]) if evaluating else None)
    uncached = [n for n in BASELINES if not _baseline_cache(ctx, pair, mapper, task, params, n).exists()] \
        if evaluating else []
    # the job's progress split by the work of each stage: mapping a quarter of one evaluation, a
    # refinement one, each evaluation (ours, and each baseline not yet cached) one
    spans = stage_spans({"map": 0.25, "refine": 1.0 if params["refine"] != "never" else 0.0,
                         "evaluate": 1.0 if evaluating else 0.0, "baselines": float(len(uncached))})
    ctx.log(f"generate: {len(adapters)} TinyLM adapter(s) {[a['id'] for a in adapters]} with mapper v"
            f"{mapper_info['version']} ({mapper_info['kind']}, id {mapper_info['mapper_id']}) of pair '{pair['name']}'")
    out = ctx.work_dir / "llm_adapter"
    result = run_generate(mapper, tiny_dirs, out, weights=params["weights"], zoo=zoo_dir, merged=params["merged"],
                          organisation=params["organisation"], method=params["method"],
                          weighting=params["weighting"], names=[f"{a['name']} (adapter {a['id']})" for a in adapters],
                          model_name=pair_model_name(pair["name"], "llm"),
                          init_known=[a["origin"] == "produced" for a in adapters],
                          progress=_scaled_progress(ctx, *spans["map"]))
    ctx.check_cancel()
    if params["refine"] == "auto":  # how far this mapper's "auto" can be trusted (its pair set)
        from gtapp.ood import card_warnings

        result.warnings.extend(f"refine: auto: {w}" for w in card_warnings(mapper.card or {}))
    for w in result.warnings:
        ctx.log("warning: " + w)
    merged_sha = None
    if result.merged_dir is not None:  # stored on its own: the adapter artifact stays a small peft folder
        merged = ctx.work_dir / "merged"
        shutil.move(str(result.merged_dir), merged)
        ctx.progress(spans["map"][1], "storing the merged LLM")
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
    privacy = contributors_privacy(contributors)
    all_dp = privacy["all_dp"]
    ood = [o.get("score") if isinstance(o, dict) else None for o in (record.get("ood") or [])]
    refine_rec = None
    if params["refine"] != "never":
        from gtapp.refine import auto_signal, refine_wanted

        first = (record.get("ood") or [None])[0]
        wanted, why = refine_wanted(params["refine"], first)
        signal = auto_signal(first) if params["refine"] == "auto" else None
        refine_rec = {"mode": params["refine"], "refined": wanted, "reason": why, "ood_score": ood[0] if ood else None,
                      "task_score": signal[1] if signal and signal[0] == "task score" else None,
                      "threshold": signal[2] if signal else None}
        ctx.log(f"refine={params['refine']}: {why}")
        if wanted:
            out, rec = _refine(ctx, zoo_dir, tiny_dirs[0], out, pair_set_artifact, params, device, spans["refine"],
                               prompts_ds)
            refine_rec.update(rec)
    ctx.progress(spans["refine"][1], "storing the LLM adapter")
    redact_json_files(out)  # generate.json names the work folders: the organisation downloads this
    sha = ctx.store.put_tree(out)

    evaluation = None
    if evaluating:
        from gtapp import evaluate as ev

        ctx.progress(spans["evaluate"][0], f"evaluating on {task.name}")
        evaluation = _jsonable(ev.evaluate_paths(pair["llm_path"], task, adapter_dir=out, split="test",
                                                 limit=params["limit"], batch_size=32, device=device,
                                                 per_example=True,
                                                 progress=_scaled_progress(ctx, *spans["evaluate"])))
        ctx.check_cancel()
        evaluation.pop("adapter", None)  # this attempt's scratch folder: gone once the job ends
        evaluation["task"] = task.name
        ctx.progress(spans["baselines"][0], "scoring the base LLM and the provider's mean baseline on the same "
                                            "examples")
        evaluation.update(_against_baselines(ctx, pair, mapper, task, params, device, evaluation,
                                             spans["baselines"], uncached))
        evaluation.pop("examples", None)  # the per-example numbers served the intervals; rows stay small
        ctx.log(f"generated adapter on {task.name}: {evaluation['metric']} = {evaluation['value']:.4f} "
                f"(n={evaluation['n']}); " + "; ".join(_gain_text(evaluation["gains"])))
    name = params["name"] or f"llm-gen-job{ctx.job_id}"
    method = MAPPER_METHOD.get(mapper_info["kind"], mapper_info["kind"])
    meta = {"record": {"epsilon": privacy["epsilon"], "delta": privacy["delta"], "dp": all_dp,
                       "rank": mapper.recipes.llm.rank},  # what adapter lists read (as for fine-tuned ones)
            "mapper": mapper_info, "contributors": contributors, "privacy": privacy, "ood": ood,
            "warnings": list(result.warnings), "combine": record.get("combine"), "timing": record.get("timing"),
            "merged_artifact": merged_sha, "evaluation": evaluation, "refine": refine_rec}

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
                        "n": evaluation["n"], "baselines": evaluation["baselines"], "gains": evaluation["gains"]})
    return outputs


def _refine(ctx, zoo_dir, tiny_dir: str, mapped, pair_set_artifact: str, params: dict, device: str,
            span: tuple[float, float], prompts_ds: dict | None = None):
    """Refine the mapped adapter towards the proxy-tuned distribution on the provider's text
    (the mapper's pair set's shadow tasks; gtapp.refine), the samples written after the prompts
    of ``prompts_ds`` (the organisation's public prompt dataset) where given. Returns (adapter
    folder, record)."""
    from gtapp.models import ModelPair
    from gtapp.pairset import PairSet
    from gtapp.refine import RefineConfig, mode_config, provider_text, public_prompts, refine

    ctx.progress(span[0], "refining towards the proxy-tuned distribution (public text only)")
    pairs = PairSet.load(ctx.store.materialize(pair_set_artifact, ctx.work_dir / "pairset"), verify=False)
    text = provider_text(pairs.manifest, limit=1024, seed=params["seed"])
    prompts = public_prompts(_dataset_examples(ctx, prompts_ds["artifact"])) if prompts_ds else None
    out = ctx.work_dir / "refined"
    rec = refine(ModelPair.from_dir(zoo_dir), tiny_dir, text, out, mode_config(params["refine"], RefineConfig(seed=params["seed"])),
                 start_adapter=mapped, progress=_scaled_progress(ctx, *span), device=device,
                 organisation_prompts=prompts)
    record = {k: rec[k] for k in ("lr", "steps", "text", "privacy", "wall_s", "final_loss", "teacher")}
    if prompts_ds:  # which dataset, so the organisation can check it was a public one
        record["text"] = {**record["text"], "prompts_dataset": {"id": prompts_ds["id"], "name": prompts_ds["name"]}}
    (out / "refine.json").write_text(json.dumps(record, indent=2, default=str))
    n_text = rec["text"]["public_examples"] + rec["text"]["tiny_samples"]  # the unprompted are among the samples
    where = f" (samples after {len(prompts)} prompts of dataset {prompts_ds['id']})" if prompts_ds else ""
    ctx.log(f"refined: {rec['steps']} steps at lr {rec['lr']:g} on {n_text} public sequences{where} "
            f"in {rec['wall_s']:.1f}s; {rec['privacy']}")
    return out, record


BASELINES = ("base_llm", "mean_shadow")  # what each evaluation is compared with, on the same examples


def _baseline_cache(ctx, pair: dict, mapper, task, params: dict, name: str):
    """Where a baseline's evaluation on this test set is cached (per pair, mapper version for
    the mean baseline, examples and metric)."""
    import hashlib

    from gtapp.data import data_fingerprint

    examples = list(task.test)[: params["limit"]] if params["limit"] else list(task.test)
    key = {"base_llm": [pair["fingerprint"], "base"],
           "mean_shadow": [pair["fingerprint"], (mapper.card or {}).get("version"), "mean"]}[name]
    digest = hashlib.sha256(json.dumps(key + [data_fingerprint(examples), task.metric]).encode()).hexdigest()
    return ctx.settings.data_dir / "cache" / "baseline_evaluations" / f"{digest}.json"


def _against_baselines(ctx, pair: dict, mapper, task, params: dict, device: str, ours: dict,
                       span: tuple[float, float], uncached: list) -> dict:
    """The base LLM and the provider-only mean baseline (the mapper's mean shadow update) on the
    very examples ours was scored on (cached, ``_baseline_cache``), and our gain over each with
    a paired bootstrap 95 % interval (gtapp.bench.stats.paired_gain). ``span`` is the job's
    progress range for the ``uncached`` ones, split evenly."""
    from gtapp import evaluate as ev
    from gtapp.bench.stats import paired_gain

    out = {"baselines": {}, "gains": {}}
    width = (span[1] - span[0]) / max(len(uncached), 1)
    for name in BASELINES:
        path = _baseline_cache(ctx, pair, mapper, task, params, name)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            adapter = None
            if name == "mean_shadow":
                adapter = ctx.work_dir / "mean_baseline"
                mapper.mean_update().write_peft(mapper.recipes.llm, adapter)
            lo = span[0] + width * (uncached.index(name) if name in uncached else 0)
            result = _jsonable(ev.evaluate_paths(pair["llm_path"], task, adapter_dir=adapter, split="test",
                                                 limit=params["limit"], batch_size=32, device=device,
                                                 per_example=True, progress=_scaled_progress(ctx, lo, lo + width)))
            result.pop("adapter", None)
            result.pop("model", None)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, result)
        ctx.check_cancel()
        out["baselines"][name] = {k: result.get(k) for k in ("metric", "value", "answer_nll", "n")}
        out["gains"][f"over_{name}"] = {kind: paired_gain(ours["examples"], result["examples"], kind, seed=params["seed"])
                                        for kind in ("metric", "nll")}
    return out


def _gain_text(gains: dict) -> list[str]:
    lines = []
    for name, g in gains.items():
        m, n = g["metric"], g["nll"]
        lines.append(f"gain {name.replace('over_', 'over ')}: task metric {m['diff']:+.3f} "
                     f"[{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}], answer NLL {n['diff']:+.3f} nats "
                     f"[{n['ci95'][0]:+.3f}, {n['ci95'][1]:+.3f}] (positive: better)")
    return lines
