"""Runs the benchmark protocol and returns one row per
(protocol, private task, method, dp_epsilon, clients, seed).

For each seed:
  in-distribution  task T's train split = provider's public half + organisation's private half;
                   shadow pairs come from bootstrap subsets of the public half only.
  cross-task       shadow pairs come from the shadow tasks; the private tasks are never
                   touched by shadow generation, mapper fitting or mapper selection.
Then, per private task: base LLM/TinyLM; TinyLM fine-tuned on the private data (no DP and
each ε); the mappers (gt, ridge, mean_shadow) map its update to an LLM adapter; gt_refine
refines the GT's adapter towards proxy-tuning over it (the TinyLM's offset stacked on the LLM
with the GT's adapter) on provider text (gtapp.refine), and gt_auto keeps the GT's adapter where
the update's task score says the mapper knows it, else refines it towards the base LLM's
proxy-tuning (what ``refine="auto"`` does in the product);
cross_lora moves the TinyLM update with no data; the oracle (LLM fine-tuned on the private
data), public_ft (LLM fine-tuned on the public data) and the distillation baselines run with
the oracle's budget, each choosing its learning rate and stopping step on a held-out part of
its own training data (gtapp.baselines.selection); every method is scored on the same test
examples, and each row keeps its per-example scores (for the paired bootstrap, gtapp.bench.stats). Multi-client: the private data split three ways (in-distribution) or three
different private tasks (cross-task), TinyLM updates averaged then mapped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from gtapp import choices
from gtapp.bench.presets import BenchPreset
from gtapp.tasks.library import DATASET_PREFIX
from gtapp.progress import Cancelled, Progress, ProgressFn
from gtapp.tasks.base import Task

Row = dict


@dataclass
class Context:
    preset: BenchPreset
    zoo_dir: Path
    work: Path
    progress: Optional[ProgressFn] = None
    rows: list[Row] = field(default_factory=list)
    log: Callable[[str], None] = print
    steps_done: int = 0
    steps_total: int = 1
    t0: float = field(default_factory=time.monotonic)
    shadow_datasets: dict = field(default_factory=dict)  # {loader: folder}: real datasets as cross-task shadow tasks

    def tick(self, stage: str, message: str = "") -> None:
        self.steps_done += 1
        if self.progress is not None:
            frac = min(self.steps_done / self.steps_total, 1.0)
            elapsed = time.monotonic() - self.t0
            eta = elapsed * (1 - frac) / frac if frac > 0 else None
            self.progress(Progress(frac, stage, eta, message))


def _eval(ctx: Context, which: str, adapter_dir, task: Task) -> dict:
    from gtapp.evaluate import evaluate_paths

    pair = _pair(ctx)
    return evaluate_paths(pair.path(which), task, adapter_dir=adapter_dir, limit=ctx.preset.eval_limit,
                          per_example=True)


_PAIRS: dict = {}


def _pair(ctx: Context):
    from gtapp.models import ModelPair

    key = str(ctx.zoo_dir)
    if key not in _PAIRS:
        _PAIRS[key] = ModelPair.from_dir(ctx.zoo_dir)
    return _PAIRS[key]


def _row(ctx: Context, *, protocol: str, task: Task, method: str, seed: int, dp_epsilon, clients: int,
         ev: dict, wall_s: float, peak_mem_mb: float, **extra) -> Row:
    row = {"protocol": protocol, "task": task.name, "family": task.family, "method": method,
           "dp_epsilon": dp_epsilon, "clients": clients, "seed": seed, "metric": ev["metric"],
           "value": ev["value"], "answer_nll": ev.get("answer_nll"), "n_eval": ev.get("n"),
           "n_truncated": ev.get("n_truncated", 0), "examples": ev.get("examples"),
           "wall_s": wall_s, "peak_mem_mb": peak_mem_mb, "gap_recovery": None, **extra}
    ctx.rows.append(row)
    return row


def _finetune(ctx: Context, which: str, examples, out: Path, seed: int, dp_epsilon=None, steps=None, lr=None):
    """LoRA fine-tune through gtapp.finetune, measured; returns (adapter_dir, wall_s, peak_mb, record)."""
    from gtapp.baselines.common import CostMeter
    from gtapp.finetune import DPConfig, FinetuneConfig, finetune

    p = ctx.preset
    dp = DPConfig(target_epsilon=dp_epsilon, delta=p.dp_delta) if dp_epsilon is not None else None
    cfg = FinetuneConfig(steps=steps or (p.tiny_steps if which == "tiny" else p.llm_steps),
                         lr=lr or (p.tiny_lr if which == "tiny" else p.llm_lr),
                         batch_size=p.batch_size, seed=seed, dp=dp)
    pair = _pair(ctx)
    with CostMeter() as meter:
        res = finetune(pair.path(which), pair.recipe(which), list(examples), cfg, out, overwrite=True)
    f = meter.fields()
    return res.adapter_dir, f["wall_s"], f["peak_mem_mb"], res.record


def _fit_mappers(ctx: Context, pair_set, which: tuple[str, ...]) -> dict:
    from gtapp.mapper.registry import make_mapper

    pair = _pair(ctx)
    mappers = {}
    for kind in which:
        config = dict(ctx.preset.gt_config) if kind == "gt" else None
        m = make_mapper(kind, pair.recipes, config)
        t = time.monotonic()
        card = m.fit(pair_set)
        v = card["validation"]
        ctx.log(f"    mapper {kind}: fit {time.monotonic() - t:.1f}s, held-out runs rel-err "
                f"{v.get('rel_err_mean', float('nan')):.3f} cosine {v.get('cosine_mean', float('nan')):.3f}")
        mappers[kind] = m
    return mappers


def _generate(ctx: Context, mapper, tiny_adapters: list, out: Path) -> tuple[Path, float, float, dict]:
    """Map TinyLM adapter(s) to an LLM adapter; returns (adapter_dir, wall_s, peak_mb, the first
    input's OOD record: "score", "task_score", ...; empty for a mapper without an OOD reference)."""
    from gtapp.baselines.common import CostMeter
    from gtapp.generate import generate

    with CostMeter() as meter:
        res = generate(mapper, [str(a) for a in tiny_adapters], out, zoo=ctx.zoo_dir)
    f = meter.fields()
    ood = res.ood[0] if res.ood and isinstance(res.ood[0], dict) else {}
    return Path(res.adapter_dir), f["wall_s"], f["peak_mem_mb"], ood


MAPPER_METHOD = choices.MAPPER_METHOD


def _baseline_row(ctx: Context, common: dict, method: str, res, ev: dict, **extra) -> Row:
    """A baseline's row; ``selection_s`` is the learning-rate selection's share of its wall time
    and ``final_fit_s`` the final training run's (what the cost table compares against)."""
    sel = res.extra.get("selection") or {}
    return _row(ctx, **common, method=method, dp_epsilon=None, clients=1, ev=ev, wall_s=res.wall_s,
                peak_mem_mb=res.peak_mem_mb, tokens=res.tokens, selection_s=sel.get("selection_s"),
                chosen_lr=sel.get("lr"), chosen_steps=sel.get("steps"),
                final_fit_s=res.extra.get("finetune_wall_s"), **extra)


def run_private_task(ctx: Context, protocol: str, task: Task, private, public, mappers: dict, seed: int,
                     group_tasks: Optional[list[Task]] = None, provider: Optional[list] = None,
                     org_prompts: Optional[list[str]] = None) -> None:
    """Every method on one private task. ``group_tasks``: the three tasks of a cross-task
    3-client setting (this task first). ``provider``: the provider's public text the
    refinement distils on (the public half in-distribution, the shadow tasks' examples
    cross-task); never private data. ``org_prompts``: the organisation's public prompts of its
    task (gt_refine_prompts; :func:`public_prompts_for`)."""
    from gtapp.baselines import Budget, evaluate_result, run_baseline
    from gtapp.baselines.selection import Selection
    from gtapp.refine import RefineConfig, mode_config, refine

    p = ctx.preset
    pair = _pair(ctx)
    methods = set(p.methods)
    d = ctx.work / protocol / task.name.replace("/", "_") / f"seed{seed}"
    common = dict(protocol=protocol, task=task, seed=seed)

    if "base_llm" in methods:
        _row(ctx, **common, method="base_llm", dp_epsilon=None, clients=1, ev=_eval(ctx, "llm", None, task),
             wall_s=0.0, peak_mem_mb=0.0)
    if "base_tiny" in methods:
        _row(ctx, **common, method="base_tiny", dp_epsilon=None, clients=1, ev=_eval(ctx, "tiny", None, task),
             wall_s=0.0, peak_mem_mb=0.0)
    ctx.tick("base models", task.name)
    budget = Budget(steps=p.llm_steps, batch_size=p.batch_size, lr=p.llm_lr)
    selection = Selection()
    trained = [("oracle", private)] + ([("public_ft", public)] if "public_ft" in methods and public else [])
    for method, data in trained:
        res = run_baseline(method, pair, None, list(data), list(data), budget, d / method, seed=seed, task=task,
                           overwrite=True, selection=selection)
        _baseline_row(ctx, common, method, res, evaluate_result(res, pair, task, limit=p.eval_limit, per_example=True))
        ctx.tick(method, task.name)
    if "public_ft" not in methods or not public:
        ctx.tick("public_ft", task.name)

    tiny_by_eps, gt_by_eps = {}, {}
    for eps in p.dp_epsilons:
        tag = "nodp" if eps is None else f"eps{eps:g}"
        tiny_dir, tw, tm, trec = _finetune(ctx, "tiny", private, d / f"tiny_{tag}", seed, dp_epsilon=eps)
        tiny_by_eps[eps] = (tiny_dir, tw)
        extra = {"epsilon_spent": trec.get("epsilon")} if eps is not None else {}
        _row(ctx, **common, method="tiny_ft", dp_epsilon=eps, clients=1, ev=_eval(ctx, "tiny", tiny_dir, task),
             wall_s=tw, peak_mem_mb=tm, **extra)
        for kind, mapper in mappers.items():
            if kind == "mean" and eps is not None:
                continue  # ignores its input: one row is enough
            out, gw, gm, ood = _generate(ctx, mapper, [tiny_dir], d / f"{kind}_{tag}")
            row = _row(ctx, **common, method=MAPPER_METHOD[kind], dp_epsilon=eps if kind != "mean" else None,
                       clients=1, ev=_eval(ctx, "llm", out, task), wall_s=(tw + gw) if kind != "mean" else gw,
                       peak_mem_mb=max(tm, gm), generate_s=gw, tiny_finetune_s=tw, ood_score=ood.get("score"),
                       ood_task_score=ood.get("task_score"), **extra)
            if kind == "gt":
                gt_by_eps[eps] = (out, gw, row)
        ctx.tick(f"dp {tag}", task.name)

    tiny_nodp = tiny_by_eps[None][0]
    refinements = [("gt_refine", None)]
    if "gt_refine_prompts" in methods and org_prompts:
        refinements.append(("gt_refine_prompts", org_prompts))
    if "gt_refine" in methods and provider:
        for eps in (None, 8.0):
            if eps not in gt_by_eps:
                continue
            tag = "nodp" if eps is None else f"eps{eps:g}"
            (gt_dir, gw, gt_row), (tiny_dir, tw) = gt_by_eps[eps], tiny_by_eps[eps]
            cfg = RefineConfig(steps=p.llm_steps, batch_size=p.batch_size, lr=p.llm_lr, seed=seed)

            def refined_row(method, out, config, prompts=None):
                rec = refine(pair, tiny_dir, provider, out, config, start_adapter=gt_dir, organisation_prompts=prompts)
                return _row(ctx, **common, method=method, dp_epsilon=eps, clients=1,
                            ev=_eval(ctx, "llm", out, task), wall_s=tw + gw + rec["wall_s"],
                            peak_mem_mb=rec["peak_mem_mb"], generate_s=gw, tiny_finetune_s=tw,
                            refine_s=rec["wall_s"], selection_s=rec.get("selection", {}).get("selection_s"),
                            tokens=rec["tokens"],
                            refine={k: rec[k] for k in ("lr", "steps", "text", "privacy", "teacher")})

            for method, prompts in refinements:
                refined_row(method, d / f"{method}_{tag}", cfg, prompts)
            if "gt_auto" in methods:
                _auto_row(ctx, gt_row, lambda: refined_row("gt_auto", d / f"gt_auto_{tag}", mode_config("auto", cfg)))
        ctx.tick("gt_refine", task.name)

    for method in ("kd_logit", "weak_to_strong", "datafree_kd", "proxy_tuning", "cross_lora"):
        if method not in methods:
            continue
        res = run_baseline(method, pair, tiny_nodp, list(private), list(public or []), budget,
                           d / method, seed=seed, task=task, overwrite=True, selection=selection)
        ev = evaluate_result(res, pair, task, limit=p.eval_limit, per_example=True)
        _baseline_row(ctx, common, method, res, ev,
                      **({"tiny_finetune_s": tiny_by_eps[None][1]} if method == "cross_lora" else {}))
        ctx.tick(method, task.name)

    if 3 in p.clients:
        _three_clients(ctx, protocol, task, private, mappers, seed, d, group_tasks)


def _auto_row(ctx: Context, gt_row: Row, refined: Callable[[], Row]) -> Row:
    """gt_auto: the GT's row where the update's task score says the mapper knows it, else the row
    ``refined()`` adds: the refinement "auto" runs (gtapp.refine.mode_config), only then. Decided
    from the update alone (gtapp.refine.refine_wanted); its wall time is what it spent."""
    from gtapp.refine import refine_wanted

    wanted, why = refine_wanted("auto", {"score": gt_row.get("ood_score"), "task_score": gt_row.get("ood_task_score")})
    if wanted:
        row = refined()
    else:
        row = {**gt_row, "method": "gt_auto"}
        ctx.rows.append(row)
    row.update(auto_choice="gt_refine" if wanted else "gt", auto_reason=why)
    return row


def _three_clients(ctx, protocol, task, private, mappers, seed, d, group_tasks) -> None:
    """Three organisations: the private data split three ways (in-distribution) or three
    different private tasks (cross-task); updates averaged (weighted by data size), then mapped."""
    from gtapp.tasks.universe import make_task  # noqa: F401  (tasks come in via group_tasks)

    p = ctx.preset
    if group_tasks is None:
        parts = [private[i::3] for i in range(3)]
        setting = "same task split three ways"
    else:
        parts = [t.train[: p.n_private] for t in group_tasks]
        setting = "three different tasks: " + ", ".join(t.name for t in group_tasks)
    adapters, walls, mems = [], [], []
    for i, part in enumerate(parts):
        a, w, m, _ = _finetune(ctx, "tiny", part, d / f"client{i}", seed + 101 * (i + 1))
        adapters.append(a)
        walls.append(w)
        mems.append(m)
    for kind, mapper in mappers.items():
        if kind == "mean":
            continue
        out, gw, gm, _ = _generate(ctx, mapper, adapters, d / f"{kind}_3clients")
        _row(ctx, protocol=protocol, task=task, seed=seed, method=MAPPER_METHOD[kind], dp_epsilon=None, clients=3,
             ev=_eval(ctx, "llm", out, task), wall_s=max(walls) + gw, peak_mem_mb=max(max(mems), gm),
             client_setting=setting)
    ctx.tick("3 clients", task.name)


def _shadow(ctx: Context, tasks: tuple[str, ...], n_train: int, seed: int, out: Path):
    from gtapp.shadow import ShadowConfig, make_pairs

    p = ctx.preset
    cfg = ShadowConfig(tasks=tasks, subsets=p.shadow_subsets, subset_size=p.shadow_subset_size,
                       steps=p.shadow_steps, snapshot_steps=p.shadow_snapshots, seeds=(seed,),
                       lr=p.tiny_lr, llm_lr=p.llm_lr, batch_size=p.batch_size, task_seed=seed,
                       n_train=n_train, subset_seed=seed, dataset_paths=ctx.shadow_datasets)
    t = time.monotonic()
    pairs = make_pairs(ctx.zoo_dir, cfg, out)
    ctx.log(f"    shadow pairs: {len(pairs)} from {len(tasks)} task(s) in {time.monotonic() - t:.1f}s")
    return pairs, time.monotonic() - t


def cross_provider_text(ctx: Context, pairs, seed: int) -> list:
    """The provider's text for cross-task refinement: the shadow tasks' public examples."""
    from gtapp.refine import provider_text

    return provider_text(pairs.manifest, limit=4 * ctx.preset.n_public, seed=seed, dataset_paths=ctx.shadow_datasets)


def public_prompts_for(task: Task, public: list, limit: int) -> list[str]:
    """The organisation's public prompts for gt_refine_prompts: those of ``public`` (examples of
    the private task's distribution that are not its private or test examples) with no answers
    (gtapp.refine.public_prompts: a document's opening where it has no prompt), none that is a
    private or test prompt, at most ``limit``."""
    from gtapp.refine import public_prompts

    seen = {e.prompt for e in list(task.train) + list(task.test) if e.prompt.strip()}
    return public_prompts([e for e in public if e.prompt not in seen])[:limit]


def mapper_kinds(preset: BenchPreset) -> tuple[str, ...]:
    kinds = []
    for method, kind in (("gt", "gt"), ("ridge", "ridge"), ("mean_shadow", "mean")):
        if method in preset.methods:
            kinds.append(kind)
    return tuple(kinds)


def count_steps(p: BenchPreset) -> int:
    per_task = 3 + len(p.dp_epsilons) + 6 + (1 if 3 in p.clients else 0)
    n_tasks = len(p.in_dist_tasks) + len(p.cross_private_tasks)
    return len(p.seeds) * (n_tasks * per_task + len(p.in_dist_tasks) + 1)


def run(preset: BenchPreset, zoo_dir: Path, work: Path, progress: Optional[ProgressFn] = None,
        log: Callable[[str], None] = print, shadow_datasets: Optional[dict] = None) -> tuple[list[Row], dict]:
    """Run every protocol for every seed; returns (rows, timings). ``shadow_datasets``: {loader
    name: folder} of real public datasets whose train splits join the cross-task shadow tasks."""
    from gtapp.tasks.universe import make_task

    ctx = Context(preset, Path(zoo_dir), Path(work), progress, log=log, shadow_datasets=dict(shadow_datasets or {}))
    ctx.steps_total = count_steps(preset)
    timings: dict = {"shadow_s": 0.0}
    kinds = mapper_kinds(preset)
    for seed in preset.seeds:
        # ---------------------------------------------------------- in-distribution
        for name in preset.in_dist_tasks:
            log(f"[seed {seed}] in-distribution: {name}")
            task = make_task(name, seed=seed, n_train=preset.n_public + preset.n_private, n_test=preset.n_test)
            public, private = task.train[: preset.n_public], task.train[preset.n_public:]
            pairs, s = _shadow(ctx, (name,), preset.n_public, seed, ctx.work / "shadow" / f"in_{name.replace('/', '_')}_s{seed}")
            timings["shadow_s"] += s
            ctx.tick("shadow pairs", name)
            mappers = _fit_mappers(ctx, pairs, kinds)
            run_private_task(ctx, "in_distribution", task, private, public, mappers, seed, provider=list(public))
        # ---------------------------------------------------------- cross-task
        if preset.cross_private_tasks:
            log(f"[seed {seed}] cross-task: shadow {len(preset.cross_shadow_tasks)} tasks, "
                f"private {len(preset.cross_private_tasks)} tasks")
            overlap = set(preset.cross_shadow_tasks) & set(preset.cross_private_tasks)
            if overlap:
                raise ValueError(f"cross-task private tasks also in shadow tasks: {sorted(overlap)}")
            shadow_tasks = tuple(preset.cross_shadow_tasks) + tuple(f"{DATASET_PREFIX}{d}" for d in ctx.shadow_datasets)
            pairs, s = _shadow(ctx, shadow_tasks, preset.n_public, seed, ctx.work / "shadow" / f"cross_s{seed}")
            timings["shadow_s"] += s
            timings.setdefault("cross_shadow", []).append({"seed": seed, "pairs": len(pairs), "tasks": len(shadow_tasks),
                                                           "families": sorted({t.split("/")[0].split(":")[0]
                                                                               for t in shadow_tasks}),
                                                           "wall_s": round(s, 1)})
            ctx.tick("shadow pairs", "cross-task")
            mappers = _fit_mappers(ctx, pairs, kinds)
            private_tasks = [make_task(n, seed=seed, n_train=preset.n_private, n_test=preset.n_test)
                             for n in preset.cross_private_tasks]
            provider = cross_provider_text(ctx, pairs, seed)
            for i, task in enumerate(private_tasks):
                # the same stream continued past the private examples (made apart, so the private and test
                # splits stay exactly as they were)
                big = make_task(task.name, seed=seed, n_train=preset.n_private + preset.n_public, n_test=1)
                org_prompts = public_prompts_for(task, big.train[preset.n_private:], preset.n_public)
                group = None
                if len(private_tasks) >= 3:
                    group = [task] + [t for t in private_tasks if t is not task][:2]
                elif 3 in preset.clients:
                    group = None  # fewer than three private tasks: split this one three ways
                run_private_task(ctx, "cross_task", task, task.train, None, mappers, seed, group_tasks=group,
                                 provider=provider, org_prompts=org_prompts)
    return ctx.rows, timings


def add_gap_recovery(rows: list[Row]) -> None:
    """gap_recovery = (method − base LLM) / (oracle − base LLM) on the task metric, per
    (protocol, task, seed); also on answer NLL (``gap_recovery_nll``), which moves even when the
    zoo models get no exact matches. None where the oracle does not differ from the base LLM."""
    index = {}
    for r in rows:
        if r["method"] in ("base_llm", "oracle"):
            index[(r["protocol"], r["task"], r["seed"], r["method"])] = r
    for r in rows:
        base = index.get((r["protocol"], r["task"], r["seed"], "base_llm"))
        oracle = index.get((r["protocol"], r["task"], r["seed"], "oracle"))
        r["gap_recovery"] = r["gap_recovery_nll"] = None
        if base is None or oracle is None:
            continue
        gap = oracle["value"] - base["value"]
        if gap == gap and abs(gap) > 1e-9 and r["value"] == r["value"]:
            r["gap_recovery"] = (r["value"] - base["value"]) / gap
        if r.get("answer_nll") is not None and base.get("answer_nll") is not None:
            g = oracle["answer_nll"] - base["answer_nll"]
            if abs(g) > 1e-9 and not math.isnan(r["answer_nll"]):
                r["gap_recovery_nll"] = (r["answer_nll"] - base["answer_nll"]) / g


__all__ = ["run", "add_gap_recovery", "Cancelled"]
