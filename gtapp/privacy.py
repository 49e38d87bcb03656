"""Differential-privacy accounting: THE one place gtapp computes privacy numbers.

Two mechanisms appear in gtapp:

* **DP-SGD** (the TinyLM fine-tune, via Opacus): the Poisson-subsampled Gaussian
  mechanism, repeated ``steps`` times with sampling rate ``q`` (expected batch size / N)
  and noise multiplier ``z`` (noise std / clipping norm). Its (ε, δ) comes from the
  Rényi-DP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019) of Google's
  ``dp-accounting`` library (``dp_accounting.rdp.RdpAccountant``), which converts RDP to
  (ε, δ) with the bound of Balle et al. 2020 / Canonne, Kamath & Steinke 2020. gtapp
  evaluates the RDP curve on a wide grid of orders (:data:`ALPHAS`, up to 1024), so small ε
  (down to about 0.1) is not loosened by a too-short grid. ``accountant="pld"`` uses
  dp-accounting's privacy-loss-distribution accountant instead (numerically tighter;
  optional, never the default, because the ledger composes in RDP). The library is
  torch-free, so the dashboard calibrates and charges a DP job without importing torch;
  the tests check these numbers against Opacus's own accountants and published values.

* **Output perturbation** (the paper's second DP option): clip the update vector to L2
  norm ``C`` and add N(0, σ² I). Two updates inside the ball of radius ``C`` differ by at
  most ``2C``, so the L2 sensitivity of a whole fine-tune's clipped update to one example
  is Δ = 2C (unless the caller can prove a smaller bound); the caller passes Δ.
  Calibrated with the **analytic Gaussian mechanism** (Balle & Wang 2018, Theorem 8),
  which is exact for a single Gaussian release and tighter than the classic
  σ = Δ·sqrt(2 ln(1.25/δ))/ε bound (which, moreover, only holds for ε < 1).

Units: ε is in nats (the natural-log privacy loss, as everywhere in the DP literature);
δ is a probability; ``noise_multiplier`` is the ratio noise std / clipping norm
(dimensionless); ``sigma`` and ``sensitivity`` are in the units of the released vector
(the update's L2 norm), so only their ratio matters. Neighbouring datasets differ by
adding or removing one example (one sequence), Opacus's and dp-accounting's default.

Composition (:func:`compose`, :func:`compose_entries`) — the privacy ledger for repeated
jobs on one dataset — sums RDP curves over a heterogeneous history of mechanisms, then
converts once; entries without a known mechanism fall back to basic composition (the sum
of the ε's, always a valid bound). Several organisations' contributions to one combined
adapter (:func:`contributors_privacy`) are not composed: their datasets are disjoint, so
the result is ε_i-DP with respect to organisation i's data, by post-processing. An
output-perturbation release enters as ``{"noise_multiplier": sigma/sensitivity,
"sample_rate": 1.0, "steps": 1}`` (see :func:`gaussian_mechanism`); inside a composition
it is accounted in RDP, so its share is slightly larger than its stand-alone analytic ε.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

# RDP orders: fine near 1 (large ε), integers to 64, then coarser up to 1024 (small ε).
ALPHAS: tuple[float, ...] = tuple(sorted(set(
    [1.0 + x / 20.0 for x in range(1, 100)]          # 1.05 .. 5.95
    + [float(a) for a in range(6, 64)]                 # Opacus's integer range
    + [float(a) for a in range(64, 256, 8)]
    + [float(a) for a in range(256, 1025, 64)]
)))

ACCOUNTANTS = ("rdp", "pld")
MECHANISM_KEYS = ("noise_multiplier", "sample_rate", "steps")


def _check(noise_multiplier: float, sample_rate: float, steps: int, delta: float | None = None) -> None:
    if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if delta is not None and not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _accountant_epsilon(history: Sequence[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """ε of a composed history of (noise multiplier, sample rate, steps) from dp-accounting's RDP
    or PLD accountant."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    history = [(float(z), float(q), int(t)) for z, q, t in history if int(t) > 0]
    if not history:
        return 0.0
    if any(z == 0 for z, _, _ in history):
        return math.inf
    if accountant == "rdp":
        acc = rdp_privacy_accountant.RdpAccountant(orders=list(ALPHAS))
    else:
        acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    for z, q, t in history:
        event = dp_event.GaussianDpEvent(z) if q >= 1.0 else dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))
        acc.compose(event, t)
    return float(max(acc.get_epsilon(delta), 0.0))


def _epsilon_of(history, delta: float, accountant: str) -> float:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant '{accountant}'; choose one of {ACCOUNTANTS}")
    return _accountant_epsilon(history, delta, accountant)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε (nats) of DP-SGD: ``steps`` Poisson-subsampled Gaussian steps at rate
    ``sample_rate`` with ``noise_multiplier`` (noise std / clip norm), for ``delta``.

    0 for zero steps; inf for zero noise.
    """
    _check(noise_multiplier, sample_rate, steps, delta)
    return _epsilon_of([(noise_multiplier, sample_rate, steps)], delta, accountant)


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                         accountant: str = "rdp", rtol: float = 1e-4) -> float:
    """The smallest noise multiplier (to relative precision ``rtol``) whose
    :func:`epsilon` is at most ``target_epsilon``.

    The returned value always satisfies ``epsilon(z, ...) <= target_epsilon``; the
    reported ε is typically within 0.1 % of the target.
    """
    if not (isinstance(target_epsilon, (int, float)) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    _check(0.0, sample_rate, steps, delta)
    if steps < 1:
        raise ValueError("steps must be >= 1 to calibrate noise")

    memo: dict[float, float] = {}

    def eps(z: float) -> float:
        if z not in memo:
            memo[z] = _epsilon_of([(z, sample_rate, steps)], delta, accountant)
        return memo[z]

    from scipy.optimize import brentq

    # Bracket the root in z (eps is continuous and decreasing in z), starting from z = 1.
    lo, hi = 1.0, 1.0
    if eps(1.0) > target_epsilon:
        while eps(hi) > target_epsilon:
            lo, hi = hi, hi * 2
            if hi > 1e6:
                raise ValueError(f"no noise multiplier <= 1e6 reaches epsilon {target_epsilon} "
                                 f"(delta={delta}, sample_rate={sample_rate}, steps={steps})")
    else:
        while eps(lo) <= target_epsilon:
            lo, hi = lo / 2, lo
            if lo < 1e-3:
                return float(hi)  # hardly any noise needed
    log_t = math.log(target_epsilon)
    root = brentq(lambda u: math.log(eps(math.exp(u))) - log_t, math.log(lo), math.log(hi),
                  xtol=rtol / 4, rtol=1e-12, maxiter=100)
    z = math.exp(root) * (1 + rtol / 2)
    while eps(z) > target_epsilon:  # land on the safe side of the root
        z *= 1 + rtol
    return float(z)


def _history(mechanisms: Iterable[Mapping]) -> list[tuple[float, float, int]]:
    out = []
    for i, m in enumerate(mechanisms):
        if not isinstance(m, Mapping):
            raise ValueError(f"mechanism {i}: expected a dict, got {type(m).__name__}")
        missing = {"noise_multiplier", "sample_rate", "steps"} - set(m)
        if missing:
            raise ValueError(f"mechanism {i}: missing {sorted(missing)}")
        z, q, t = m["noise_multiplier"], m["sample_rate"], m["steps"]
        _check(z, q, t)
        out.append((float(z), float(q), int(t)))
    return out


def compose(mechanisms: Iterable[Mapping], delta: float, accountant: str = "rdp") -> float:
    """ε (nats) of running all ``mechanisms`` on one dataset, for ``delta``.

    Each mechanism is ``{"noise_multiplier": z, "sample_rate": q, "steps": T}`` (extra keys
    are ignored, so ledger entries can carry job ids). Composition is exact in RDP (the
    curves add), which is far tighter than adding the ε's of the parts.
    """
    _check(0.0, 1.0, 0, delta)
    return _epsilon_of(_history(mechanisms), delta, accountant)


def gaussian_mechanism(sigma: float, sensitivity: float) -> dict:
    """A single Gaussian release (output perturbation) as a mechanism for :func:`compose`."""
    _check_gauss(sigma=sigma, sensitivity=sensitivity)
    return {"noise_multiplier": sigma / sensitivity, "sample_rate": 1.0, "steps": 1}


class Composed(NamedTuple):
    epsilon: float
    accountant: str  # "rdp" | "basic"


def _has_mechanism(entry: Mapping[str, Any]) -> bool:
    mech = entry.get("mechanism") or {}
    return all(isinstance(mech.get(k), (int, float)) and not isinstance(mech.get(k), bool) for k in MECHANISM_KEYS)


def basic_composition(epsilons: Iterable[float]) -> float:
    """Sequential composition: the ε's add up (a valid bound for any mechanisms, at the sum of δ's)."""
    return float(sum(float(e) for e in epsilons))


def compose_entries(entries: Iterable[Mapping[str, Any]], delta: float) -> Composed:
    """Total ε of several DP releases on one dataset at ``delta`` (the privacy ledger's number).

    ``entries``: dicts with ``epsilon`` and optionally ``mechanism`` = {noise_multiplier,
    sample_rate, steps}. RDP composition (:func:`compose`) when every entry has its mechanism
    (never more than the basic bound); else basic composition.
    """
    entries = list(entries)
    if not entries:
        return Composed(0.0, "basic")
    basic = basic_composition(e["epsilon"] for e in entries)
    if all(_has_mechanism(e) for e in entries):
        eps = compose([{k: e["mechanism"][k] for k in MECHANISM_KEYS} for e in entries], delta)
        return Composed(min(eps, basic), "rdp")
    return Composed(basic, "basic")


def contributors_privacy(contributors: Sequence[Mapping[str, Any]]) -> dict:
    """The privacy of one adapter made from several organisations' updates.

    ``contributors``: dicts with ``name`` and, for a DP contribution, ``epsilon`` and ``delta``
    (``epsilon`` None: no DP). Each organisation's datasets are disjoint from the others', so the
    combined adapter is (ε_i, δ_i)-DP with respect to organisation i's data by post-processing;
    ``epsilon``/``delta`` are the largest over contributors, meaningful only when all are DP.
    """
    dp = [c for c in contributors if c.get("epsilon") is not None]
    all_dp = bool(contributors) and len(dp) == len(contributors)
    return {
        "all_dp": all_dp,
        "epsilon": max((float(c["epsilon"]) for c in dp), default=None) if all_dp else None,
        "delta": max((float(c.get("delta") or 0.0) for c in dp), default=None) if all_dp else None,
        "max_epsilon": max((float(c["epsilon"]) for c in dp), default=None),
        "per_contributor": [{"name": c.get("name"), "dp": c.get("epsilon") is not None, "epsilon": c.get("epsilon"),
                             "delta": c.get("delta") if c.get("epsilon") is not None else None,
                             **({"adapter_id": c["adapter_id"]} if "adapter_id" in c else {})}
                            for c in contributors],
        "note": "each contributor's (epsilon, delta) covers its own dataset (the datasets are disjoint); mapping "
                "and combining are post-processing and keep it; a contributor without DP has no guarantee",
    }


# ----------------------------------------------------------------------------- output perturbation

def _check_gauss(epsilon: float | None = None, delta: float | None = None, sensitivity: float | None = None,
                 sigma: float | None = None) -> None:
    if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if sensitivity is not None and not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a finite number > 0, got {sensitivity!r}")
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")


def _log_delta_analytic(s: float, eps: float) -> float:
    """log δ(ε) of the Gaussian mechanism with noise std ``s`` per unit sensitivity.

    Balle & Wang 2018, Thm 8: δ(ε) = Φ(1/(2s) − ε s) − e^ε Φ(−1/(2s) − ε s).
    """
    from scipy.special import log_ndtr

    x = float(log_ndtr(1 / (2 * s) - eps * s))
    y = eps + float(log_ndtr(-1 / (2 * s) - eps * s))
    if y >= x:
        return -math.inf
    return x + math.log1p(-math.exp(y - x))


def gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """ε (nats) of one release f(D) + N(0, σ² I), f with L2 sensitivity ``sensitivity``,
    at ``delta`` — the analytic Gaussian mechanism (Balle & Wang 2018), exact.

    ``sigma`` and ``sensitivity`` share units (e.g. the update's L2 norm); only σ/Δ matters.
    """
    _check_gauss(delta=delta, sensitivity=sensitivity, sigma=sigma)
    s = sigma / sensitivity
    log_d = math.log(delta)
    if _log_delta_analytic(s, 0.0) <= log_d:
        return 0.0
    lo, hi = 0.0, 1.0
    while _log_delta_analytic(s, hi) > log_d:
        lo, hi = hi, hi * 2
        if hi > 1e5:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _log_delta_analytic(s, mid) > log_d:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(hi, 1e-12):
            break
    return float(hi)


def gaussian_sigma_for(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest noise std σ such that one Gaussian release of an L2-sensitivity
    ``sensitivity`` quantity is (ε, δ)-DP — the analytic Gaussian mechanism (Balle & Wang
    2018). Valid for every ε > 0 (the classic bound needs ε < 1 and is larger). σ is in
    the units of ``sensitivity``.
    """
    _check_gauss(epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    log_d = math.log(delta)
    lo, hi = 0.0, 1.0
    while _log_delta_analytic(hi, epsilon) > log_d:
        lo, hi = hi, hi * 2
        if hi > 1e9:
            raise ValueError(f"no sigma reaches epsilon={epsilon}, delta={delta}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _log_delta_analytic(mid, epsilon) > log_d:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return float(hi * sensitivity)


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The classic bound σ = Δ·sqrt(2 ln(1.25/δ))/ε (Dwork & Roth, Thm A.1; valid for ε < 1).
    For comparison only: :func:`gaussian_sigma_for` is never larger."""
    _check_gauss(epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
