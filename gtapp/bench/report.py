"""From benchmark rows to summaries: means with 95 % intervals (the paired bootstrap of
gtapp.bench.stats for gap recovery), the pairwise comparisons "A beats B", the targets, the
cost table (TinyLM fine-tune + generation + refinement against the LLM fine-tune), and
printed tables."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Iterable, Optional

from scipy import stats as scipy_stats

from gtapp.bench import stats

DISTILLATION = ("kd_logit", "weak_to_strong", "proxy_tuning", "datafree_kd")
PROVIDER_ONLY = ("mean_shadow", "public_ft")


def mean_ci(values: Iterable[float]) -> tuple[float, float, float, int]:
    """Mean and the 95 % t-interval (lo, hi) of the finite values; (nan, nan, nan, 0) if none."""
    xs = [float(v) for v in values if v is not None and v == v and not math.isinf(v)]
    if not xs:
        return float("nan"), float("nan"), float("nan"), 0
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan"), float("nan"), 1
    half = scipy_stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half, len(xs)


GT_FAMILY = ("gt", "gt_refine", "gt_auto", "gt_refine_prompts")
# what a GT-family method is compared with, task by task (paired bootstrap of the difference)
RIVALS = ("mean_shadow", "public_ft", "ridge", "cross_lora", "proxy_tuning", "kd_logit", "weak_to_strong",
          "datafree_kd", "gt", "gt_refine")


def summarise(rows: list[dict], boots: Optional[dict] = None) -> list[dict]:
    """One line per (protocol, task, method, dp_epsilon, clients): the value's mean and t-interval
    over seeds; gap recovery (task metric and answer NLL) with the paired bootstrap's 95 %
    interval over test examples and seeds (gtapp.bench.stats), or the t-interval over seeds for
    rows without per-example scores. ``gap_defined``: whether the task has a gap to recover at all
    (:func:`gap_defined`); where it has none its gap recoveries divide by noise."""
    boots = stats.bootstraps(rows) if boots is None else boots
    groups = defaultdict(list)
    for r in rows:
        groups[(r["protocol"], r["task"], r["method"], r["dp_epsilon"], r["clients"])].append(r)
    out = []
    for (protocol, task, method, eps, clients), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        v = mean_ci(r["value"] for r in rs)
        g = mean_ci(r["gap_recovery"] for r in rs)
        gn = mean_ci(r.get("gap_recovery_nll") for r in rs)
        g_ci, gn_ci = [g[1], g[2]], [gn[1], gn[2]]
        boot = boots.get((protocol, task))
        if boot is not None and all(r.get("examples") for r in rs):
            g_ci = list(stats.interval(boot.gap(method, "metric", eps, clients)))
            gn_ci = list(stats.interval(boot.gap(method, "nll", eps, clients)))
        out.append({"protocol": protocol, "task": task, "method": method, "dp_epsilon": eps, "clients": clients,
                    "metric": rs[0]["metric"], "seeds": len(rs), "n_eval": rs[0].get("n_eval"),
                    "n_truncated": max((r.get("n_truncated") or 0) for r in rs),
                    "value_mean": v[0], "value_ci95": [v[1], v[2]],
                    "gap_recovery_mean": g[0], "gap_recovery_ci95": g_ci,
                    "gap_recovery_nll_mean": gn[0], "gap_recovery_nll_ci95": gn_ci,
                    "gap_defined": gap_defined(boots, protocol, task),
                    "wall_s_mean": mean_ci(r["wall_s"] for r in rs)[0],
                    "peak_mem_mb_mean": mean_ci(r["peak_mem_mb"] for r in rs)[0]})
    return out


def comparisons(rows: list[dict], boots: Optional[dict] = None) -> list[dict]:
    """Per (protocol, task): each GT-family method minus each rival on NLL and task-metric gap
    recovery, with the paired bootstrap's 95 % interval; ``a_beats_b`` = interval above 0."""
    boots = stats.bootstraps(rows) if boots is None else boots
    present = defaultdict(set)
    for r in rows:
        if r["dp_epsilon"] is None and r["clients"] == 1 and r.get("examples"):
            present[(r["protocol"], r["task"])].add(r["method"])
    out = []
    for key, methods in sorted(present.items()):
        for a in GT_FAMILY:
            if a not in methods:
                continue
            for b in RIVALS:
                if b == a or b not in methods:
                    continue
                for kind in stats.KINDS:
                    d = stats.difference(boots[key], a, b, kind)
                    if d["diff_mean"] == d["diff_mean"]:
                        out.append({"protocol": key[0], "task": key[1], **d})
    return out


def _gap(s: dict) -> float:
    """The headline gap recovery of a summary line: on answer NLL (it moves on every task), else
    on the task metric."""
    g = s.get("gap_recovery_nll_mean", float("nan"))
    return g if g == g else s["gap_recovery_mean"]


def _lookup(summary, protocol, task, method, eps=None, clients=1) -> Optional[dict]:
    for s in summary:
        if (s["protocol"], s["task"], s["method"], s["dp_epsilon"], s["clients"]) == (protocol, task, method, eps, clients):
            return s
    return None


def _beats(comps: list[dict], protocol: str, a: str, b: str) -> tuple[int, int]:
    """(tasks where a beats b on NLL gap recovery, tasks compared) in ``protocol``."""
    hits = [c for c in comps if c["protocol"] == protocol and c["a"] == a and c["b"] == b and c["kind"] == "nll"]
    return sum(c["a_beats_b"] for c in hits), len(hits)


def gap_defined(boots: dict, protocol: str, task: str) -> bool:
    """Whether the task has a gap to recover: the oracle's answer NLL (the task metric where no
    NLL was scored) beats the base LLM's with a paired 95 % interval above 0. Where it does not
    (the oracle no better than the base LLM), every gap recovery divides by noise. Decided by
    the base LLM and the oracle alone, never by a method's result; True where no per-example
    scores say otherwise."""
    b = boots.get((protocol, task))
    if b is None:
        return True
    for kind in stats.KINDS:
        lo, _ = stats.interval(b.oracle_gain(kind))
        if lo == lo:
            return lo > 0
    return True


def no_gap_tasks(rows: list[dict]) -> set[tuple[str, str]]:
    """The (protocol, task) pairs with no gap to recover (:func:`gap_defined` is False), from the
    base LLM's and the oracle's per-example scores in ``rows`` (the only rows the decision reads):
    for results whose summary does not record it."""
    anchors = [r for r in rows if r.get("method") in ("base_llm", "oracle") and r.get("examples")]
    boots = stats.bootstraps(anchors)
    return {key for key in boots if not gap_defined(boots, *key)}


def targets(summary: list[dict], rows: list[dict], comps: Optional[list[dict]] = None,
            boots: Optional[dict] = None) -> list[dict]:
    """The targets of the method issue, each with the measured number, MET or NOT MET, and for
    the GT family the method that reached it (``gt``, ``gt_refine`` or ``gt_auto``, named, never chosen per
    task). Gap recovery is on answer NLL, falling back to the task metric where NLL is missing.
    Averages and counts are over the tasks with a gap to recover (:func:`gap_defined`); the
    others are named in the detail."""
    boots = stats.bootstraps(rows) if boots is None else boots
    comps = comparisons(rows, boots) if comps is None else comps
    res = []

    every = defaultdict(set)
    for s in summary:
        every[s["protocol"]].add(s["task"])
    defined = {p: [t for t in sorted(ts) if gap_defined(boots, p, t)] for p, ts in every.items()}

    def tasks(protocol):
        return defined.get(protocol, [])

    def left_out(protocol) -> str:
        out = sorted(every.get(protocol, set()) - set(tasks(protocol)))
        return f"; left out (the oracle no better than the base LLM): {', '.join(out)}" if out else ""

    def avg(protocol, method, eps=None):
        gaps = [_gap(s) for s in (_lookup(summary, protocol, t, method, eps) for t in tasks(protocol)) if s]
        gaps = [g for g in gaps if g == g]
        return (statistics.fmean(gaps) if gaps else float("nan")), len(gaps)

    family = [m for m in GT_FAMILY if any(s["method"] == m for s in summary)] or ["gt"]
    best = max(family, key=lambda m: _nan_low(avg("cross_task", m)[0]))
    cavg, n = avg("cross_task", best)
    res.append({"target": "cross-task: best GT-family method recovers >= 0.6 of the NLL gap on average",
                "measured": cavg, "met": _met(cavg >= 0.6, n), "detail": f"{best} over {n} tasks{left_out('cross_task')}"})
    wins, total = _beats([c for c in comps if c["protocol"] != "cross_task" or c["task"] in tasks("cross_task")],
                         "cross_task", best, "proxy_tuning")
    res.append({"target": "cross-task: best GT-family method beats proxy-tuning on >= 4 of 5 families "
                          "(paired 95 % interval of the NLL gap-recovery difference above 0)",
                "measured": float(wins), "met": _met(wins >= 4, total),
                "detail": f"{best}: {wins}/{total} tasks{left_out('cross_task')}"})
    ind_best = max(family, key=lambda m: _nan_low(avg("in_distribution", m)[0]))
    both = 0
    ind_tasks = tasks("in_distribution")
    for t in ind_tasks:
        ok = [c for c in comps if c["protocol"] == "in_distribution" and c["task"] == t and c["a"] == ind_best
              and c["kind"] == "nll" and c["b"] in PROVIDER_ONLY and c["a_beats_b"]]
        both += len({c["b"] for c in ok}) == len(PROVIDER_ONLY)
    res.append({"target": "in-distribution: best GT-family method beats mean_shadow and public_ft on >= 3 of 5 tasks",
                "measured": float(both), "met": _met(both >= 3, len(ind_tasks)),
                "detail": f"{ind_best}: {both}/{len(ind_tasks)} tasks{left_out('in_distribution')}"})
    real = [s for s in summary if s["protocol"] == "cross_task_real" and s["dp_epsilon"] is None and s["clients"] == 1]
    for t in sorted({s["task"] for s in real}):
        g = {m: _gap(s) for m in family + ["proxy_tuning"] if (s := _lookup(summary, "cross_task_real", t, m))}
        fam = {m: v for m, v in g.items() if m != "proxy_tuning" and v == v}
        m_best = max(fam, key=fam.get) if fam else "gt"
        val, proxy = fam.get(m_best, float("nan")), g.get("proxy_tuning", float("nan"))
        has_gap = t in tasks("cross_task_real")
        res.append({"target": f"{t} as a private task: NLL gap recovery > 0 and >= proxy-tuning's",
                    "measured": val, "met": bool(has_gap and val > 0 and (proxy != proxy or val >= proxy)),
                    "detail": f"{m_best} {val:.3f}, proxy_tuning {proxy:.3f}"
                              + ("" if has_gap else "; the oracle is no better than the base LLM here")})
    # ratio of the mean gap recoveries (over tasks that have both), not the mean of per-task
    # ratios: a task whose non-DP gap recovery is near 0 would make its ratio meaningless
    plain, dp8, dp_method = [], [], None
    for m in family:
        p_, d_ = [], []
        for protocol in ("in_distribution", "cross_task"):
            for t in tasks(protocol):
                a, b = _lookup(summary, protocol, t, m), _lookup(summary, protocol, t, m, 8.0)
                if a and b and _gap(a) == _gap(a) and _gap(b) == _gap(b):
                    p_.append(_gap(a))
                    d_.append(_gap(b))
        if p_ and (not plain or statistics.fmean(p_) > statistics.fmean(plain)):
            plain, dp8, dp_method = p_, d_, m
    mean_plain = statistics.fmean(plain) if plain else float("nan")
    r = statistics.fmean(dp8) / mean_plain if plain and mean_plain > 0 else float("nan")
    res.append({"target": "gap recovery at eps=8 >= 75 % of the non-DP figure", "measured": r,
                "met": _met(r >= 0.75, len(plain)),
                "detail": f"{dp_method}: mean gap recovery {statistics.fmean(dp8) if dp8 else float('nan'):.3f} at "
                          f"eps=8 vs {mean_plain:.3f} without DP over {len(plain)} tasks"})
    cost = cost_table(rows, best)
    share = statistics.fmean(c["tiny_plus_generate_share"] for c in cost) if cost else float("nan")
    both = [c["share_with_selection"] for c in cost if c["share_with_selection"] == c["share_with_selection"]]
    res.append({"target": "TinyLM fine-tune + generation + refinement <= 40 % of the LLM fine-tune's wall time",
                "measured": share, "met": _met(share <= 0.4, len(cost)),
                "detail": f"{best} (the cross-task target's method): what it spent, the refinement where it "
                          "refined; the LLM fine-tune is the oracle's final run"
                          + (f"; {statistics.fmean(both):.2f} against the LLM fine-tune with its learning-rate "
                             "selection counted too" if both else "")})
    return res


def _met(ok: bool, measured_on: int) -> Optional[bool]:
    """MET / NOT MET, or None (not measured) where the results hold nothing to measure it on."""
    return bool(ok) if measured_on else None


def _nan_low(x: float) -> float:
    return x if x == x else -math.inf


def cost_table(rows: list[dict], method: Optional[str] = None) -> list[dict]:
    """Per (protocol, task, seed): the organisation's path with ``method`` (TinyLM fine-tune +
    generation, and the refinement where the method refined) against the LLM fine-tune on the
    same private data (the oracle's final run, its learning-rate selection not counted: the
    conservative comparison; ``share_with_selection`` counts it, as the refinement's time counts
    its own). Without ``method``: gt_refine where it ran, else gt."""
    out = []
    by = defaultdict(dict)
    for r in rows:
        if r["clients"] == 1 and r["dp_epsilon"] is None and r["method"] in GT_FAMILY + ("oracle",):
            by[(r["protocol"], r["task"], r["seed"])][r["method"]] = r
    for (protocol, task, seed), d in sorted(by.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if "gt" not in d or "oracle" not in d:
            continue
        llm_s = d["oracle"].get("final_fit_s") or d["oracle"]["wall_s"]
        if not llm_s:
            continue
        ours = d.get(method) if method else d.get("gt_refine", d["gt"])
        if ours is None:
            continue
        tiny_s, gen_s = ours.get("tiny_finetune_s", float("nan")), ours.get("generate_s", float("nan"))
        refine_s = ours.get("refine_s") or 0.0
        share = (tiny_s + gen_s + refine_s) / llm_s
        # like for like: the refinement's time holds its own learning-rate selection, so count the oracle's too
        # (its whole wall time; the final fit alone where it recorded no selection)
        with_selection = d["oracle"]["wall_s"]
        out.append({"protocol": protocol, "task": task, "seed": seed, "method": ours["method"],
                    "tiny_finetune_s": tiny_s, "generate_s": gen_s, "refine_s": refine_s, "llm_finetune_s": llm_s,
                    "tiny_plus_generate_share": share, "time_saved_pct": 100 * (1 - share),
                    "llm_finetune_with_selection_s": with_selection,
                    "share_with_selection": (tiny_s + gen_s + refine_s) / with_selection if with_selection else
                    float("nan")})
    return out


def format_table(summary: list[dict]) -> str:
    lines = [f"{'protocol':<16} {'task':<30} {'method':<15} {'eps':>5} {'cl':>2} {'metric':<11} "
             f"{'value':>8} {'±95%':>7} {'gap':>7} {'gapNLL':>7} {'gapNLL 95%':>15} {'wall_s':>7} {'mem_MB':>7}"]
    for s in summary:
        lo, hi = s["value_ci95"]
        half = (hi - lo) / 2 if hi == hi else float("nan")
        eps = "-" if s["dp_epsilon"] is None else f"{s['dp_epsilon']:g}"
        nlo, nhi = s.get("gap_recovery_nll_ci95") or [float("nan")] * 2
        lines.append(f"{s['protocol']:<16} {s['task'][:30]:<30} {s['method']:<15} {eps:>5} {s['clients']:>2} "
                     f"{s['metric']:<11} {s['value_mean']:>8.3f} {half:>7.3f} {s['gap_recovery_mean']:>7.2f} "
                     f"{s['gap_recovery_nll_mean']:>7.2f} {f'[{nlo:.2f}, {nhi:.2f}]':>15} "
                     f"{s['wall_s_mean']:>7.1f} {s['peak_mem_mb_mean']:>7.1f}"
                     + ("  (no gap)" if s.get("gap_defined") is False else ""))
    if any(s.get("gap_defined") is False for s in summary):
        lines.append("(no gap): the oracle is no better than the base LLM there (paired 95 % interval), so its gap "
                     "recoveries divide by noise; the targets leave it out")
    return "\n".join(lines)


def format_comparisons(comps: list[dict], kind: str = "nll") -> str:
    """The paired differences, one line each: 'gt_refine - proxy_tuning  +0.12 [0.03, 0.21] beats'."""
    lines = [f"{'protocol':<16} {'task':<30} {'a - b':<28} {'diff':>7} {'95% interval':>17}  verdict"]
    for c in comps:
        if c["kind"] != kind:
            continue
        lo, hi = c["diff_ci95"]
        verdict = "a beats b" if c["a_beats_b"] else ("b beats a" if hi < 0 else "no difference shown")
        lines.append(f"{c['protocol']:<16} {c['task'][:30]:<30} {c['a'] + ' - ' + c['b']:<28} "
                     f"{c['diff_mean']:>+7.3f} {f'[{lo:+.2f}, {hi:+.2f}]':>17}  {verdict}")
    return "\n".join(lines)


def format_targets(tg: list[dict]) -> str:
    verdict = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}
    return "\n".join(f"[{verdict[t['met']]}] {t['target']}: measured {t['measured']:.3f}"
                     + (f" ({t['detail']})" if t.get("detail") else "") for t in tg)


def format_cost(cost: list[dict]) -> str:
    lines = [f"{'protocol':<16} {'task':<30} {'seed':>4} {'tiny_ft_s':>9} {'gen_s':>6} {'refine_s':>8} "
             f"{'llm_ft_s':>8} {'saved%':>7} {'share_w_sel':>11}"]
    for c in cost:
        lines.append(f"{c['protocol']:<16} {c['task'][:30]:<30} {c['seed']:>4} {c['tiny_finetune_s']:>9.1f} "
                     f"{c['generate_s']:>6.2f} {c.get('refine_s', 0.0):>8.1f} {c['llm_finetune_s']:>8.1f} "
                     f"{c['time_saved_pct']:>7.1f} {c.get('share_with_selection', float('nan')):>11.2f}")
    return "\n".join(lines)
