"""Intervals that can tell methods apart: a paired, two-stage bootstrap of gap recovery.

Every method of one (protocol, task, seed) is scored on the same test examples, and each
row keeps its per-example numbers (``row["examples"]``: task score, summed answer NLL and
answer-token count; see :func:`gtapp.evaluate.evaluate`). One bootstrap replicate draws the
seeds with replacement and, for each drawn seed, the test examples with replacement; every
method is then re-scored on *those* examples (the pairing), the base LLM and the oracle too,
so the gap recovery

    (method - base LLM) / (oracle - base LLM)

is recomputed per replicate, on the task metric (``"metric"``) or on the answer NLL per token
(``"nll"``), and averaged over the drawn seeds. The 2.5 and 97.5 percentiles of a method's
replicates are its 95 % interval; those of the per-replicate *difference* between two methods
are the interval of the difference, and "A beats B" means that interval lies above 0. An
average over tasks draws every task's seeds and examples independently (tasks are fixed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Optional

import numpy as np

N_BOOT = 1000
KINDS = ("nll", "metric")


def _key(r: dict) -> tuple:
    return (r["protocol"], r["task"], r["dp_epsilon"], r["clients"])


class TaskBootstrap:
    """The paired replicates of one (protocol, task): ``gap(method, kind)`` gives an array of
    ``n_boot`` gap recoveries (nan where a replicate's oracle gap is 0 or data are missing)."""

    def __init__(self, rows: list[dict], n_boot: int = N_BOOT, seed: int = 0):
        self.rows = defaultdict(dict)  # method -> {seed: row}; every ε/clients variant is its own method key
        for r in rows:
            if r.get("examples"):
                self.rows[_method_key(r)][r["seed"]] = r
        self.seeds = sorted({s for by_seed in self.rows.values() for s in by_seed})
        self.n_boot = n_boot
        rng = np.random.default_rng(seed)
        s = len(self.seeds)
        self.picks = rng.integers(0, s, size=(n_boot, s)) if s else np.zeros((n_boot, 0), dtype=int)
        self._seed = seed
        self._idx: dict[int, np.ndarray] = {}
        self._cache: dict = {}

    def _examples(self, seed_pos: int, n: int) -> np.ndarray:
        """[n_boot, n] example indices of pick ``seed_pos`` (the same for every method)."""
        key = (seed_pos, n)
        if key not in self._idx:
            rng = np.random.default_rng((self._seed, 1000 + seed_pos, n))
            self._idx[key] = rng.integers(0, n, size=(self.n_boot, n))
        return self._idx[key]

    def _per_pick(self, method: str, kind: str) -> Optional[np.ndarray]:
        """[n_boot, picks] of the method's value per replicate and pick (nan: seed missing)."""
        key = (method, kind)
        if key in self._cache:
            return self._cache[key]
        by_seed = self.rows.get(method)
        if not by_seed:
            return None
        out = np.full(self.picks.shape, np.nan)
        for j in range(self.picks.shape[1]):
            for si, seed in enumerate(self.seeds):
                r = by_seed.get(seed)
                if r is None:
                    continue
                ex = r["examples"]
                n = len(ex["nll_sum"])
                idx = self._examples(j, n)
                if kind == "nll":
                    tok = np.asarray(ex["n_tokens"], dtype=float)[idx].sum(1)
                    val = np.asarray(ex["nll_sum"], dtype=float)[idx].sum(1) / np.where(tok > 0, tok, np.nan)
                elif r.get("metric") == "perplexity":
                    tok = np.asarray(ex["n_tokens"], dtype=float)[idx].sum(1)
                    val = np.exp(np.asarray(ex["nll_sum"], dtype=float)[idx].sum(1) / np.where(tok > 0, tok, np.nan))
                else:
                    sc = ex.get("score")
                    if sc is None or any(x is None for x in sc):
                        return None
                    val = np.asarray(sc, dtype=float)[idx].mean(1)
                rows_here = self.picks[:, j] == si
                out[rows_here, j] = val[rows_here]
        self._cache[key] = out
        return out

    def gap(self, method: str, kind: str = "nll", dp_epsilon=None, clients: int = 1) -> np.ndarray:
        """Replicates of the method's gap recovery averaged over the drawn seeds."""
        m = self._per_pick(_mkey(method, dp_epsilon, clients), kind)
        base = self._per_pick(_mkey("base_llm", None, 1), kind)
        oracle = self._per_pick(_mkey("oracle", None, 1), kind)
        if m is None or base is None or oracle is None:
            return np.full(self.n_boot, np.nan)
        gap = oracle - base
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(np.abs(gap) > 1e-9, (m - base) / gap, np.nan)
        return _nanmean_rows(g)

    def oracle_gain(self, kind: str = "nll") -> np.ndarray:
        """Replicates of how much better the oracle is than the base LLM (lower answer NLL or
        perplexity, higher task score), averaged over the drawn seeds: where its interval does
        not lie above 0 the gap every method's recovery divides by is not shown to exist."""
        base = self._per_pick(_mkey("base_llm", None, 1), kind)
        oracle = self._per_pick(_mkey("oracle", None, 1), kind)
        if base is None or oracle is None:
            return np.full(self.n_boot, np.nan)
        lower_better = kind == "nll" or self._metric() == "perplexity"
        return _nanmean_rows(base - oracle if lower_better else oracle - base)

    def _metric(self) -> Optional[str]:
        return next((r.get("metric") for by_seed in self.rows.values() for r in by_seed.values()), None)


def _mkey(method: str, dp_epsilon, clients) -> str:
    return f"{method}|{dp_epsilon}|{clients}"


def _method_key(r: dict) -> str:
    return _mkey(r["method"], r["dp_epsilon"], r["clients"])


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        n = np.sum(~np.isnan(a), axis=1)
        s = np.nansum(a, axis=1)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def interval(replicates: np.ndarray) -> tuple[float, float]:
    """The 95 % percentile interval of the finite replicates ((nan, nan) if under half are finite)."""
    x = replicates[np.isfinite(replicates)]
    if x.size < max(2, replicates.size // 2):
        return float("nan"), float("nan")
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def bootstraps(rows: list[dict], n_boot: int = N_BOOT, seed: int = 0) -> dict[tuple[str, str], TaskBootstrap]:
    """One :class:`TaskBootstrap` per (protocol, task)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["protocol"], r["task"])].append(r)
    return {k: TaskBootstrap(rs, n_boot, seed + i) for i, (k, rs) in enumerate(sorted(groups.items()))}


def difference(boot: TaskBootstrap, a: str, b: str, kind: str = "nll") -> dict:
    """Gap recovery of ``a`` minus ``b`` on the same replicates: mean, 95 % interval, a_beats_b."""
    d = boot.gap(a, kind) - boot.gap(b, kind)
    lo, hi = interval(d)
    mean = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
    return {"a": a, "b": b, "kind": kind, "diff_mean": mean, "diff_ci95": [lo, hi], "a_beats_b": bool(lo > 0)}


def average_gap(boots: Iterable[TaskBootstrap], method: str, kind: str = "nll") -> dict:
    """Mean over tasks of a method's gap recovery, with its 95 % interval (tasks fixed)."""
    reps = [b.gap(method, kind) for b in boots]
    reps = [r for r in reps if np.isfinite(r).any()]
    if not reps:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "tasks": 0}
    avg = np.mean(np.stack(reps), axis=0)
    lo, hi = interval(avg)
    return {"mean": float(np.nanmean(avg)), "ci95": [lo, hi], "tasks": len(reps)}


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def paired_gain(a: dict, b: dict, kind: str = "metric", n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``a`` minus ``b`` on the same test examples (per-example records of
    gtapp.evaluate.evaluate(per_example=True)): the task metric's mean (``kind="metric"``;
    higher is better) or the answer NLL per token (``kind="nll"``; reported as b − a, so that
    a positive gain is better there too), with a paired bootstrap 95 % interval."""
    na = len(a["nll_sum"])
    if na != len(b["nll_sum"]) or na == 0:
        raise ValueError("a paired gain needs the same test examples on both sides")
    idx = np.random.default_rng(seed).integers(0, na, size=(n_boot, na))
    if kind == "nll":
        def per_token(e, ix):
            return np.asarray(e["nll_sum"], float)[ix].sum(-1) / np.asarray(e["n_tokens"], float)[ix].sum(-1)
        full = per_token(b, np.arange(na)) - per_token(a, np.arange(na))
        reps = per_token(b, idx) - per_token(a, idx)
    else:
        if any(x is None for x in a["score"]) or any(x is None for x in b["score"]):
            return {"kind": kind, "diff": float("nan"), "ci95": [float("nan"), float("nan")]}
        sa, sb = np.asarray(a["score"], float), np.asarray(b["score"], float)
        full = float((sa - sb).mean())
        reps = (sa[idx] - sb[idx]).mean(-1)
    lo, hi = interval(reps)
    return {"kind": kind, "diff": float(full), "ci95": [lo, hi], "n": na}
