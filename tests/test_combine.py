"""Several organisations (combine) and output perturbation (perturb)."""

import json
import math

import pytest
import torch

from gtapp import privacy
from gtapp.combine import Contributor, combine_and_map, combine_factors, contributor_from_adapter, weighted_median
from gtapp.mapper import RidgeMapper
from gtapp.mapper.space import UpdateSpace, update_metrics
from testkit.synthetic import linear_pairs, small_recipes
from gtapp.perturb import perturb_adapter, perturb_update


def test_weighted_median():
    x = torch.tensor([[1.0, 5.0], [2.0, -1.0], [10.0, 0.0], [3.0, 2.0]])
    assert torch.allclose(weighted_median(x, torch.full((4,), 0.25)), torch.tensor([2.5, 1.0]))
    assert torch.allclose(weighted_median(x[:3], torch.full((3,), 1 / 3)), torch.tensor([2.0, 0.0]))
    # a heavy contributor pulls the median to its value
    assert torch.allclose(weighted_median(x, torch.tensor([0.7, 0.1, 0.1, 0.1])), torch.tensor([1.0, 5.0]))


def _rel(space, a, b):
    return float(update_metrics(space, space.stack([a]), space.stack([b]))["rel_err"][0])


def test_median_and_clipping_resist_one_hostile_update():
    rec = small_recipes()
    space = UpdateSpace(rec.tiny)
    honest = [p.tiny for p in linear_pairs(rec, n_runs=4, steps=(1.0,), noise=0.05, offset=2.0, seed=5)]
    truth, _ = combine_factors(honest, rec.tiny, method="mean")
    x = space.stack([honest[0]])
    hostile = space.unstack({t: (-50 * a, -50 * b) for t, (a, b) in x.items()})[0]  # huge, opposite direction
    everyone = honest + [hostile]
    errs = {}
    for method in ("mean", "median", "clip"):
        out, details = combine_factors(everyone, rec.tiny, method=method)
        errs[method] = _rel(space, out, truth)
    print("rel. error vs the honest mean with one hostile update of 5:", {k: round(v, 3) for k, v in errs.items()})
    assert errs["mean"] > 5
    assert errs["median"] < 0.5
    assert errs["clip"] < 0.6


@pytest.mark.parametrize("organisation", ["average_then_map", "map_then_average"])
def test_combine_and_map_records_weights_and_privacy(organisation):
    rec = small_recipes()
    mapper = RidgeMapper(rec)
    mapper.fit(linear_pairs(rec, n_runs=8, seed=0))
    ups = [p.tiny for p in linear_pairs(rec, n_runs=3, steps=(1.0,), seed=42)]
    contributors = [Contributor("a", ups[0], examples=100, epsilon=1.0, delta=1e-5, dp=True),
                    Contributor("b", ups[1], examples=300, epsilon=4.0, delta=1e-5, dp=True),
                    Contributor("c", ups[2], examples=600)]
    res = combine_and_map(mapper, contributors, organisation=organisation)
    rows = {r["name"]: r for r in res.record["contributors"]}
    assert [rows[n]["weight"] for n in "abc"] == pytest.approx([0.1, 0.3, 0.6])
    assert rows["a"]["epsilon"] == 1.0 and rows["c"]["epsilon"] is None and rows["a"]["ood"] is not None
    assert res.record["privacy"]["max_epsilon"] == 4.0 and res.record["privacy"]["all_dp"] is False
    json.dumps(res.record)
    # with a linear (ridge) mapper and mean combining, both organisations agree
    other = "map_then_average" if organisation == "average_then_map" else "average_then_map"
    res2 = combine_and_map(mapper, contributors, organisation=other)
    llm = UpdateSpace(rec.llm)
    assert _rel(llm, res.update, res2.update) < 1e-3
    res3 = combine_and_map(mapper, contributors, organisation=organisation, method="median", weighting="equal")
    assert res3.record["weighting"] == "equal" and res3.record["method"] == "median"


def test_contributor_from_adapter_reads_finetune_record(tmp_path):
    from gtapp.lora.peft_format import write_peft_adapter

    rec = small_recipes()
    f = linear_pairs(rec, n_runs=1, steps=(1.0,), seed=3)[0].tiny
    write_peft_adapter(f, rec.tiny, tmp_path / "ad")
    (tmp_path / "ad" / "finetune.json").write_text(json.dumps({"examples": 250, "dp": True, "epsilon": 2.5,
                                                               "delta": 1e-5}))
    c = contributor_from_adapter(tmp_path / "ad", rec.tiny)
    assert (c.examples, c.epsilon, c.delta, c.dp) == (250, 2.5, 1e-5, True)
    assert all(torch.allclose(c.update[m][1], f[m][1]) for m in f)


def test_output_perturbation_epsilon_matches_privacy():
    rec = small_recipes().tiny
    f = linear_pairs(small_recipes(), n_runs=1, steps=(1.0,), seed=1)[0].tiny
    space = UpdateSpace(rec)
    norm = float(space.to_flat(space.stack([f])).norm())
    clip = norm / 4
    for neighbouring, mult in (("replace", 2.0), ("add_remove", 1.0)):
        noisy, rep = perturb_update(f, rec, clip_norm=clip, epsilon=2.0, delta=1e-5, neighbouring=neighbouring, seed=0)
        assert rep.sensitivity == pytest.approx(mult * clip)
        assert rep.sigma == pytest.approx(privacy.gaussian_sigma_for(2.0, 1e-5, mult * clip))
        assert rep.epsilon == pytest.approx(2.0, rel=1e-6)
        assert privacy.gaussian_epsilon(rep.sigma, 1e-5, rep.sensitivity) == pytest.approx(rep.epsilon)
        assert rep.clipped and rep.norm_clipped == pytest.approx(clip, rel=1e-6)
        # the released noise has the calibrated std
        diff = space.to_flat(space.stack([noisy]))[0].double() - space.to_flat(space.stack([f]))[0].double() * clip / norm
        assert float(diff.std()) == pytest.approx(rep.sigma, rel=0.1)
        print(f"{neighbouring}: C={clip:.3g} Δ={rep.sensitivity:.3g} σ={rep.sigma:.3g} ε={rep.epsilon:.4f} "
              f"δ={rep.delta:g} noise/signal={rep.noise_to_signal:.1f}")
    # an update already inside the ball is not scaled
    _, rep = perturb_update(f, rec, clip_norm=norm * 2, epsilon=1.0, delta=1e-6, seed=1)
    assert not rep.clipped and rep.norm_clipped == pytest.approx(norm, rel=1e-6)
    with pytest.raises(ValueError):
        perturb_update(f, rec, clip_norm=1.0, epsilon=1.0, delta=1e-5, neighbouring="swap")
    # B only: A stays exactly the seeded A0, noise only on B's coordinates
    noisy, rep = perturb_update(f, rec, clip_norm=clip, epsilon=2.0, delta=1e-5, seed=0, parts="b")
    x = space.stack([noisy])
    assert all(float(a.abs().max()) == 0 for a, _ in x.values())
    assert rep.dimension == sum(b[0].numel() for _, b in x.values()) and rep.epsilon == pytest.approx(2.0, rel=1e-6)


def test_perturb_adapter_writes_a_valid_adapter(tmp_path):
    from gtapp.lora.peft_format import write_peft_adapter
    from gtapp.lora.validate import load_adapter

    rec = small_recipes().tiny
    f = linear_pairs(small_recipes(), n_runs=1, steps=(1.0,), seed=1)[0].tiny
    write_peft_adapter(f, rec, tmp_path / "ad")
    rep = perturb_adapter(tmp_path / "ad", rec, tmp_path / "noisy", clip_norm=0.05, epsilon=8.0, delta=1e-5, seed=0)
    checked = load_adapter(tmp_path / "noisy", rec)  # still a valid adapter of the recipe
    assert set(checked.factors) == set(f)
    saved = json.loads((tmp_path / "noisy" / "perturb.json").read_text())
    assert saved["epsilon"] == pytest.approx(rep.epsilon) and math.isfinite(saved["sigma"])
