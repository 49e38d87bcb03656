"""Privacy accounting against known values and against Opacus's own accountants, computed
independently here (gtapp's runtime accountant is Google's dp-accounting: gtapp.privacy)."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from gtapp import privacy as P

# (noise multiplier, sample rate, steps, delta)
GRID = [
    (4.0, 0.01, 10_000, 1e-5),          # Abadi et al. 2016
    (1.1, 256 / 60_000, 14_100, 1e-5),  # MNIST-style, 60 epochs
    (0.8, 0.01, 1_000, 1e-5),
    (2.0, 0.05, 200, 1e-6),
    (1.0, 1.0, 10, 1e-5),               # full batch
    (10.0, 16 / 512, 100, 1e-5),        # small epsilon
    (0.6, 0.001, 5_000, 1e-7),
]


def opacus_rdp_epsilon(history, delta, orders=P.ALPHAS):
    """The peer: Opacus's RDP accountant (its own RDP curve and conversion), on our order grid."""
    import warnings

    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(z), float(q), int(t)) for z, q, t in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return acc.get_privacy_spent(delta=delta, alphas=list(orders))[0]


def opacus_prv_epsilon(history, delta):
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(float(z), float(q), int(t)) for z, q, t in history]
    return acc.get_epsilon(delta=delta, eps_error=0.01)


def test_abadi_setting():
    # Abadi et al. (2016), Sec. 3.1: q=0.01, sigma=4, T=10000, delta=1e-5 gives eps ~ 1.26 with
    # the moments accountant; RDP with the modern conversion is a bit tighter.
    eps = P.epsilon(4.0, 0.01, 10_000, 1e-5)
    print(f"Abadi setting: eps = {eps:.4f} (moments accountant 1.26)")
    assert 0.9 < eps <= 1.26


@pytest.mark.parametrize("z,q,steps,delta", GRID)
def test_epsilon_matches_opacus_rdp(z, q, steps, delta):
    ours = P.epsilon(z, q, steps, delta)
    theirs = opacus_rdp_epsilon([(z, q, steps)], delta)
    print(f"z={z} q={q:.5f} T={steps} delta={delta}: gtapp {ours:.5f} Opacus RDP {theirs:.5f}")
    assert ours == pytest.approx(theirs, rel=0.01)


def test_rdp_is_an_upper_bound_close_to_pld():
    # PLD accounting is (nearly) exact; RDP must never report less, and not wildly more.
    for z, q, steps, delta in [(1.1, 256 / 60_000, 14_100, 1e-5), (0.8, 0.01, 1_000, 1e-5)]:
        rdp = P.epsilon(z, q, steps, delta)
        pld = P.epsilon(z, q, steps, delta, accountant="pld")
        prv = opacus_prv_epsilon([(z, q, steps)], delta)
        print(f"z={z} q={q:.4f} T={steps}: RDP {rdp:.4f}  PLD {pld:.4f}  Opacus PRV(upper) {prv:.4f}")
        assert pld <= rdp * 1.001
        assert rdp < 1.5 * pld
        assert pld == pytest.approx(prv, rel=0.05)


def test_noise_multiplier_for_hits_target():
    q, steps, delta = 16 / 512, 100, 1e-5
    previous = math.inf
    for target in (0.1, 1.0, 8.0):
        z = P.noise_multiplier_for(target, delta, q, steps)
        eps = P.epsilon(z, q, steps, delta)
        print(f"target eps {target}: noise multiplier {z:.4f} -> eps {eps:.5f}")
        assert eps <= target
        assert eps >= 0.995 * target
        assert z < previous  # more budget, less noise
        previous = z
    # Independently: Opacus's RDP accountant at that noise gives the same eps.
    z = P.noise_multiplier_for(1.0, delta, q, steps)
    assert opacus_rdp_epsilon([(z, q, steps)], delta) == pytest.approx(1.0, rel=0.01)


def test_compose_heterogeneous_history():
    a = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 1000, "job": "a"}
    b = {"noise_multiplier": 2.0, "sample_rate": 0.05, "steps": 100}
    assert P.compose([], 1e-5) == 0.0
    assert P.compose([a], 1e-5) == pytest.approx(P.epsilon(1.0, 0.01, 1000, 1e-5))
    # Same mechanism twice = twice the steps.
    assert P.compose([a, a], 1e-5) == pytest.approx(P.epsilon(1.0, 0.01, 2000, 1e-5), rel=1e-9)
    both = P.compose([a, b], 1e-5)
    theirs = opacus_rdp_epsilon([(1.0, 0.01, 1000), (2.0, 0.05, 100)], 1e-5)
    print(f"compose(a, b): gtapp {both:.4f} Opacus {theirs:.4f}; "
          f"a alone {P.compose([a], 1e-5):.4f}, b alone {P.compose([b], 1e-5):.4f}")
    assert both == pytest.approx(theirs, rel=0.01)
    assert both > max(P.compose([a], 1e-5), P.compose([b], 1e-5))
    assert both < P.compose([a], 1e-5) + P.compose([b], 1e-5)  # RDP composition beats adding eps
    # An output-perturbation release composes as a q=1, one-step Gaussian.
    g = P.gaussian_mechanism(sigma=6.0, sensitivity=2.0)
    assert g == {"noise_multiplier": 3.0, "sample_rate": 1.0, "steps": 1}
    assert P.compose([a, g], 1e-5) > P.compose([a], 1e-5)


def test_edge_cases_and_validation():
    assert P.epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert P.epsilon(0.0, 0.1, 10, 1e-5) == math.inf
    for bad in [dict(noise_multiplier=-1, sample_rate=0.1, steps=1, delta=1e-5),
                dict(noise_multiplier=1, sample_rate=0, steps=1, delta=1e-5),
                dict(noise_multiplier=1, sample_rate=1.5, steps=1, delta=1e-5),
                dict(noise_multiplier=1, sample_rate=0.1, steps=-1, delta=1e-5),
                dict(noise_multiplier=1, sample_rate=0.1, steps=1, delta=0)]:
        with pytest.raises(ValueError):
            P.epsilon(**bad)
    with pytest.raises(ValueError):
        P.noise_multiplier_for(0, 1e-5, 0.1, 10)
    with pytest.raises(ValueError):
        P.compose([{"noise_multiplier": 1.0}], 1e-5)
    with pytest.raises(ValueError):
        P.epsilon(1.0, 0.1, 10, 1e-5, accountant="moments")


def test_analytic_gaussian_known_value_and_dp_accounting():
    from dp_accounting import gaussian_mechanism as G

    sigma = P.gaussian_sigma_for(1.0, 1e-5)
    print(f"analytic Gaussian sigma(eps=1, delta=1e-5) = {sigma:.4f}; classic {P.classic_gaussian_sigma(1.0, 1e-5):.4f}")
    assert sigma == pytest.approx(3.7306, abs=1e-3)  # Balle & Wang 2018
    for eps, delta in [(0.1, 1e-5), (0.5, 1e-6), (1.0, 1e-5), (4.0, 1e-5), (8.0, 1e-8)]:
        s = P.gaussian_sigma_for(eps, delta)
        assert s == pytest.approx(G.get_sigma_gaussian(eps, delta), rel=0.01)
        assert P.gaussian_epsilon(s, delta) == pytest.approx(eps, rel=1e-6)
        # A single Gaussian release via dp-accounting's (near-exact) PLD accountant.
        acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
        acc.compose(dp_event.GaussianDpEvent(s))
        assert acc.get_epsilon(delta) == pytest.approx(eps, rel=0.01)


def test_analytic_gaussian_beats_classic_bound_and_scales():
    for delta in (1e-5, 1e-7):
        for eps in (0.05, 0.1, 0.3, 0.6, 0.9, 0.99):
            analytic = P.gaussian_sigma_for(eps, delta, sensitivity=1.0)
            classic = 1.0 * math.sqrt(2 * math.log(1.25 / delta)) / eps
            assert classic >= analytic
    # sigma is in the units of the sensitivity; only the ratio matters.
    assert P.gaussian_sigma_for(0.5, 1e-5, sensitivity=2.5) == pytest.approx(2.5 * P.gaussian_sigma_for(0.5, 1e-5))
    assert P.gaussian_epsilon(10.0, 1e-5, sensitivity=2.0) == pytest.approx(P.gaussian_epsilon(5.0, 1e-5))
    # More noise, less epsilon; huge noise, ~0.
    assert P.gaussian_epsilon(2.0, 1e-5) > P.gaussian_epsilon(4.0, 1e-5) > 0
    assert P.gaussian_epsilon(1e4, 1e-5) < 1e-3
    with pytest.raises(ValueError):
        P.gaussian_sigma_for(0, 1e-5)
    with pytest.raises(ValueError):
        P.gaussian_epsilon(1.0, 1e-5, sensitivity=0)


def test_contributors_privacy_of_a_combined_adapter():
    rec = P.contributors_privacy([{"name": "a", "epsilon": 1.0, "delta": 1e-5},
                                  {"name": "b", "epsilon": 4.0, "delta": 1e-6}])
    assert (rec["all_dp"], rec["epsilon"], rec["delta"], rec["max_epsilon"]) == (True, 4.0, 1e-5, 4.0)
    rec = P.contributors_privacy([{"name": "a", "epsilon": 1.0, "delta": 1e-5}, {"name": "b", "epsilon": None}])
    assert (rec["all_dp"], rec["epsilon"], rec["max_epsilon"]) == (False, None, 1.0)
    assert [c["dp"] for c in rec["per_contributor"]] == [True, False]
