"""Mappers on synthetic pairs: factored maths, any shapes, overfitting, held-out accuracy, versions."""

import json

import pytest
import torch

from gtapp.mapper import GTMapper, MeanMapper, RidgeMapper, load_mapper, read_card, split_by_run
from gtapp.lora.factors import product_sqdist
from gtapp.mapper.space import UpdateSpace, update_metrics
from testkit.synthetic import linear_pairs, llama_recipe, random_factors, small_recipes
from gtapp.mapper.gt import GradientTransformer, GTConfig
from gtapp.lora.recipe import RecipeError, RecipePair


def test_factored_distance_matches_dense_and_update_vector():
    rec = small_recipes().llm
    g = torch.Generator().manual_seed(0)
    f1, f2 = random_factors(rec, generator=g), random_factors(rec, generator=g)
    space = UpdateSpace(rec)
    x1, x2 = space.stack([f1]), space.stack([f2])
    err = nt = 0.0
    for m in rec.modules():
        (a1, b1), (a2, b2) = f1[m], f2[m]
        d_dense = float(((b1.double() @ a1.double()) - (b2.double() @ a2.double())).pow(2).sum())
        d_gram = float(product_sqdist(a1.double(), b1.double(), a2.double(), b2.double()))
        assert d_gram == pytest.approx(d_dense, rel=1e-9)
        err += d_dense
        nt += float((b2.double() @ a2.double()).pow(2).sum())
    m = update_metrics(space, x1, x2)
    assert float(m["rel_err"][0]) == pytest.approx((err / nt) ** 0.5, rel=1e-9)
    from gtapp.lora.update import UpdateVector

    u1, u2 = UpdateVector.from_factors(f1, rec), UpdateVector.from_factors(f2, rec)
    assert float(m["rel_err"][0]) == pytest.approx(u1.distance(u2) / u2.frobenius_norm(), rel=1e-6)
    assert float(m["cosine"][0]) == pytest.approx(u1.cosine(u2), rel=1e-6)
    # the flat layout is UpdateVector's
    assert torch.allclose(space.to_flat(x1)[0], u1.to_flat().float(), atol=1e-7)
    back = space.unstack(space.from_flat(space.to_flat(x1)))[0]
    assert all(torch.allclose(back[k][0], f1[k][0], atol=1e-7) and torch.equal(back[k][1], f1[k][1]) for k in f1)


def test_gt_maps_any_depths_and_widths():
    tiny = llama_recipe("t", 24, 2, 2, 1, 48, targets=("q_proj", "v_proj"), rank=2)
    llm = llama_recipe("l", 40, 5, 4, 2, 96, rank=4)  # all 7 linear modules, GQA, other rank
    for d_rank in (None, 3):
        cfg = GTConfig(d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_rank=d_rank)
        ts, ls = UpdateSpace(tiny), UpdateSpace(llm)
        net = GradientTransformer(ts.describe(), ls.describe(), cfg)
        x = {t: (torch.randn(3, *a.shape[1:]), torch.randn(3, *b.shape[1:])) for t, (a, b) in ts.zeros(3).items()}
        out = net(x, {t: ts.depth(t) for t in ts.types}, {t: ls.depth(t) for t in ls.types})
        for t, (a, b) in ls.zeros(3).items():
            assert out[t][0].shape == a.shape and out[t][1].shape == b.shape
        print(f"d_rank={d_rank}: {net.num_parameters()} parameters for 2x(q,v) r2 -> 5x7 modules r4")


def test_gt_overfits_a_handful_of_pairs():
    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=1, steps=(0.25, 0.5, 0.75, 1.0), seed=3)  # one run: no validation split
    m = GTMapper(rec, {"steps": 300, "d_model": 32, "n_heads": 2, "lr": 3e-3, "base": "mean", "mixup": 0.0,
                       "mse_weight": 0.0, "eval_every": 50, "warmup": 10})
    card = m.fit(pairs)
    first, best = card["fit"]["loss_first"], card["fit"]["best_score"]
    print(f"overfit 4 pairs: factored loss {first:.3g} -> {best:.3g} ({first / best:.0f}x), "
          f"train rel_err {card['train']['rel_err_mean']:.4f}")
    assert card["split"]["val_pairs"] == 0 and card["fit"]["selected_on"] == "train"
    assert best < first / 100


def test_gt_beats_mean_on_held_out_runs_of_a_linear_relation():
    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=16, seed=0)
    train, test = split_by_run(pairs, 0.25, seed=1)
    assert not {p.run_id for p in train} & {p.run_id for p in test}
    results = {}
    for name, mapper in [("mean", MeanMapper(rec)), ("ridge", RidgeMapper(rec)),
                         ("gt(base=mean)", GTMapper(rec, {"steps": 300, "d_model": 32, "n_heads": 2, "base": "mean",
                                                          "eval_every": 25, "lr": 3e-3})),
                         ("gt", GTMapper(rec, {"steps": 100, "d_model": 32, "n_heads": 2, "eval_every": 25}))]:
        mapper.fit(train)
        results[name] = mapper.evaluate(test)
        print(f"{name:>14}: held-out rel_err {results[name]['rel_err_mean']:.3f}  cosine {results[name]['cosine_mean']:.4f}")
    assert results["gt(base=mean)"]["rel_err_mean"] < 0.6 * results["mean"]["rel_err_mean"]
    assert results["gt(base=mean)"]["cosine_mean"] > results["mean"]["cosine_mean"]
    # the default GT starts from ridge and only keeps what helps on validation runs
    assert results["gt"]["rel_err_mean"] <= results["ridge"]["rel_err_mean"] * 1.1
    assert results["gt"]["rel_err_mean"] < results["mean"]["rel_err_mean"]


def test_gt_progress_ends_where_patience_ends_the_run_not_at_the_step_budget():
    rec = small_recipes()
    train, val = split_by_run(linear_pairs(rec, n_runs=8, seed=0), 0.25, seed=1)
    reports = []
    m = GTMapper(rec, {"steps": 5000, "d_model": 16, "n_heads": 2, "eval_every": 5, "patience": 2, "lr": 3e-3})
    card = m.fit(train, val_pairs=val, progress=reports.append)
    steps_run = card["fit"]["steps_run"]
    assert card["fit"]["stopped"] == "early_stopping" and steps_run < 1000, card["fit"]
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions), "progress moved back"
    last = [r for r in reports if r.step == steps_run and r.message != "done"][-1]
    # the evaluation that ran out of patience reports the end (the budget would say steps_run / 5000)
    assert last.fraction == 1.0 and last.eta_s == 0.0, last
    # before it, the horizon is at most patience * eval_every steps ahead, never the whole budget
    early = next(r for r in reports if r.step == 5)
    assert early.fraction >= 5 / (5 + 2 * 5) - 1e-9, early


@pytest.mark.parametrize("kind", ["gt", "ridge", "mean"])
def test_mapper_version_roundtrip(tmp_path, kind):
    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=6, seed=1)
    cls = {"gt": GTMapper, "ridge": RidgeMapper, "mean": MeanMapper}[kind]
    m = cls(rec, {"steps": 20, "d_model": 32, "n_heads": 2, "eval_every": 10} if kind == "gt" else None)
    m.fit(pairs)
    x = pairs[0].tiny
    before = m.predict(x)
    m.save(tmp_path / "v1")
    assert {p.name for p in (tmp_path / "v1").iterdir()} == {"weights.safetensors", "config.json", "recipe.json", "card.json"}
    card = read_card(tmp_path / "v1")
    for key in ("kind", "config", "recipes", "pair_set", "train", "validation", "validation_mean_baseline", "version", "ood"):
        assert key in card, key
    assert card["recipes"]["tiny"] != card["recipes"]["llm"]
    m2 = load_mapper(tmp_path / "v1")
    after = m2.predict(x)
    from gtapp.lora.update import UpdateVector

    via_uv = m2.predict(UpdateVector.from_factors(x, rec.tiny))  # an UpdateVector is accepted too
    assert all(torch.equal(via_uv[k][1], after[k][1]) for k in after)
    for mod, (a, b) in before.items():
        assert torch.allclose(after[mod][0], a, atol=1e-6) and torch.allclose(after[mod][1], b, atol=1e-6)
    # the LLM factors are in the LLM recipe's seeded basis: A = A0 + dA with dA small
    a0 = UpdateSpace(rec.llm)
    for t in a0.types:
        for j, mod in enumerate(a0.by_type[t]):
            assert (after[mod][0] - a0.a0(t)[j]).abs().max() < 0.1
    json.dumps(card)  # the card is plain JSON


def test_ood_score_flags_far_inputs():
    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=10, seed=2)
    m = RidgeMapper(rec)
    m.fit(pairs)
    near = m.ood_score(linear_pairs(rec, n_runs=1, seed=99)[0].tiny)
    space = UpdateSpace(rec.tiny)
    x = space.stack([pairs[0].tiny])
    far_f = space.unstack({t: (a * 30, b * 30) for t, (a, b) in x.items()})[0]
    far = m.ood_score(far_f)
    print(f"OOD score: new run from the same distribution {near['score']:.2f}, 30x scaled update {far['score']:.2f}")
    assert not near["ood"] and far["ood"] and far["score"] > 5 * near["score"]


def test_ood_task_score_is_relative_to_the_distance_between_tasks(tmp_path):
    """With the shadow runs' tasks the OOD reference also keeps the typical distance to another
    task's updates (never smaller than to another run's), the task score divides by it, and both
    survive saving; a pair set without tasks has no task score."""
    import math

    from gtapp.mapper.base import OodReference
    from gtapp.ood import OOD_TASK_THRESHOLD, ood_warning

    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=8, seed=3)
    for p in pairs:
        p.meta["task"] = f"task{int(p.run_id[3:]) // 2}"  # runs syn0..syn7: two per task
    assert len({p.meta["task"] for p in pairs}) == 4, {p.run_id for p in pairs}
    m = RidgeMapper(rec)
    m.fit(pairs)
    ref = m.ood
    assert ref.task_reference >= ref.reference > 0 and m.card["ood"]["task_reference_nn_distance"] == ref.task_reference
    new = m.ood_score(linear_pairs(rec, n_runs=1, seed=99)[0].tiny)
    assert new["task_score"] == pytest.approx(new["nn_distance"] / ref.task_reference)
    assert new["task_score"] <= new["score"]
    # the warning follows the task score where there is one, and says so
    assert new["measure"] == "task_score" and new["threshold"] == OOD_TASK_THRESHOLD
    assert new["ood"] == (new["task_score"] > OOD_TASK_THRESHOLD) and m.card["ood"]["shadow_tasks"] == 4
    space = UpdateSpace(rec.tiny)
    x = space.stack([pairs[0].tiny])
    far = m.ood_score(space.unstack({t: (a * 30, b * 30) for t, (a, b) in x.items()})[0])
    assert far["ood"] and far["task_score"] > OOD_TASK_THRESHOLD
    assert f"task score {far['task_score']:.2f} > 1.5" in ood_warning(far) and "refine" in ood_warning(far)
    m.save(tmp_path / "m")
    again = load_mapper(tmp_path / "m").ood_score(linear_pairs(rec, n_runs=1, seed=99)[0].tiny)
    assert again["task_score"] == pytest.approx(new["task_score"], rel=1e-5)
    old = ref.state_dict()
    old["ood.reference"] = old["ood.reference"][:2]  # a mapper saved before the task reference
    assert math.isnan(OodReference(m.tiny).load_state_dict(old).task_reference)
    for p in pairs:
        p.meta.pop("task")
    m2 = RidgeMapper(rec)
    m2.fit(pairs)
    assert math.isnan(m2.ood.task_reference) and math.isnan(m2.ood_score(pairs[0].tiny)["task_score"])
    assert m2.ood_score(pairs[0].tiny)["measure"] == "score" and m2.card["ood"]["shadow_tasks"] == 0


def test_card_warnings_say_when_the_ood_warning_cannot_be_trusted():
    """The Admin page and an auto-refining generate job show these for a mapper version."""
    from gtapp.ood import MIN_TASKS_FOR_TASK_SCORE, card_warnings
    from ui.admin import card_summary

    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=8, seed=3)
    for n_tasks, expect in ((2, "only 2 shadow tasks"), (4, None), (1, "no task reference")):
        for p in pairs:
            p.meta["task"] = f"task{int(p.run_id[3:]) % n_tasks}"
        m = RidgeMapper(rec)
        m.fit(pairs)
        warnings = card_warnings(m.card)
        print(n_tasks, "tasks:", warnings)
        if expect is None:
            assert warnings == [] and n_tasks >= MIN_TASKS_FOR_TASK_SCORE
        else:
            assert len(warnings) == 1 and expect in warnings[0] and "refine: auto" in warnings[0]
        summary = card_summary(json.loads(json.dumps(m.card, default=str)))  # as the database keeps it
        assert f"of {n_tasks} shadow tasks" in summary and (expect is None) == ("⚠" not in summary)
    assert "No model card" in card_summary({})


def test_predict_refuses_wrong_shapes():
    rec = small_recipes()
    m = MeanMapper(rec)
    m.fit(linear_pairs(rec, n_runs=3, seed=0))
    with pytest.raises(RecipeError):
        m.predict(random_factors(rec.llm))  # an LLM-shaped update is not a TinyLM update
    other = RecipePair(rec.llm, rec.tiny)
    with pytest.raises(RecipeError):
        MeanMapper(other).fit(linear_pairs(rec, n_runs=3, seed=0))


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="unknown config"):
        GTMapper(small_recipes(), {"stepz": 3})
