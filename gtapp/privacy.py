"""Differential-privacy accounting: THE one place gtapp computes privacy numbers.

Two mechanisms appear in gtapp:

* **DP-SGD** (the TinyLM fine-tune, via Opacus): the Poisson-subsampled Gaussian
  mechanism, repeated ``steps`` times with sampling rate ``q`` (expected batch size / N)
  and noise multiplier ``z`` (noise std / clipping norm). Its (ε, δ) comes from the
  Rényi-DP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019) as implemented by
  Opacus (``opacus.accountants.RDPAccountant``), converted to (ε, δ) with the conversion
  of Balle et al. 2020 / Canonne, Kamath & Steinke 2020 (Opacus's ``get_privacy_spent``).
  gtapp evaluates the RDP curve on a wider grid of orders (:data:`ALPHAS`, up to 1024)
  than Opacus's default (up to 63), so small ε (down to about 0.1) is not loosened by a
  too-short order grid. ``accountant="prv"`` uses Opacus's PRV accountant instead
  (numerically tighter; optional, never the default, because the ledger composes in RDP).

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

Composition (:func:`compose`) — the privacy ledger for repeated jobs on one dataset —
sums RDP curves over a heterogeneous history of mechanisms, then converts once. An
output-perturbation release enters as ``{"noise_multiplier": sigma/sensitivity,
"sample_rate": 1.0, "steps": 1}`` (see :func:`gaussian_mechanism`); inside a composition
it is accounted in RDP, so its share is slightly larger than its stand-alone analytic ε.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

# RDP orders: fine near 1 (large ε), integers to 64, then coarser up to 1024 (small ε).
ALPHAS: tuple[float, ...] = tuple(sorted(set(
    [1.0 + x / 20.0 for x in range(1, 100)]          # 1.05 .. 5.95
    + [float(a) for a in range(6, 64)]                 # Opacus's integer range
    + [float(a) for a in range(64, 256, 8)]
    + [float(a) for a in range(256, 1025, 64)]
)))

ACCOUNTANTS = ("rdp", "prv")


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
    """ε of a composed history of (noise multiplier, sample rate, steps) from Opacus's RDP or PRV
    accountant."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    history = [(float(z), float(q), int(t)) for z, q, t in history if int(t) > 0]
    if not history:
        return 0.0
    if any(z == 0 for z, _, _ in history):
        return math.inf
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = history
    if accountant == "rdp":
        with warnings.catch_warnings():
            # Opacus warns when the optimum is at an end of the order grid; our grid is wide.
            warnings.simplefilter("ignore")
            eps, _ = acc.get_privacy_spent(delta=delta, alphas=list(ALPHAS))
    else:
        # eps_error: absolute error bound of the PRV estimate; we report its upper bound.
        eps = acc.get_epsilon(delta=delta, eps_error=0.01)
    return float(max(eps, 0.0))


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
