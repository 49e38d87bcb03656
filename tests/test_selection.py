"""The shared learning-rate and early-stopping procedure (gtapp.baselines.selection)."""

import math

import pytest

from gtapp.baselines.selection import Selection, choose


def test_stops_and_split():
    sel = Selection(val_fraction=0.25, checkpoints=4)
    assert sel.stops(60) == [15, 30, 45, 60] and sel.stops(2) == [1, 2]
    tr, va = sel.split(40, seed=3)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == list(range(40))
    assert sel.split(40, seed=3) == (tr, va) and sel.split(40, seed=4) != (tr, va)
    with pytest.raises(ValueError, match=">= 2 training sequences"):
        sel.split(1, 0)
    with pytest.raises(ValueError, match="positive"):
        Selection(lrs=(0.0,))


def test_choose_takes_the_lowest_held_out_loss_and_skips_diverged_rates():
    sel = Selection(lrs=(1e-3, 1e-2, 1.0), checkpoints=3)
    losses = {1e-3: {4: 3.0, 8: 2.5, 12: 2.2}, 1e-2: {4: 2.0, 8: 1.5, 12: 1.7}, 1.0: {4: math.nan, 8: math.nan, 12: math.nan}}
    seen = []

    def curve(lr, tr, va, stops):
        seen.append((lr, tuple(stops), len(tr), len(va)))
        return losses[lr]

    c = choose(sel, 12, 20, seed=0, curve=curve)
    assert (c.lr, c.steps) == (1e-2, 8) and c.n_val == 4 and c.n_train == 16
    assert [s[0] for s in seen] == [1e-3, 1e-2, 1.0] and all(s[1] == (4, 8, 12) for s in seen)
    with pytest.raises(FloatingPointError):
        choose(sel, 12, 20, 0, lambda *a: {4: math.nan, 8: math.nan, 12: math.nan})


@pytest.mark.slow
def test_oracle_picks_its_rate_on_its_own_data(micro_zoo, tmp_path):
    """A real fine-tune: the curves are measured (they differ by learning rate), the final
    adapter is trained on all the data with the chosen rate and no more steps than the budget."""
    from gtapp.baselines import Budget, run_baseline
    from gtapp.models import ModelPair
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    task = make_task("math/add-fruit-easy", seed=0, n_train=40, n_test=4)
    sel = Selection(lrs=(1e-4, 1e-2), checkpoints=2)
    res = run_baseline("oracle", pair, None, task.train, [], Budget(steps=6, batch_size=8, lr=3e-3), tmp_path / "o",
                       overwrite=True, selection=sel)
    s = res.extra["selection"]
    assert s["lr"] in (1e-4, 1e-2) and s["steps"] in (3, 6) and s["n_val"] == 8
    curves = s["curves"]
    assert set(curves) == {"0.0001", "0.01"} and curves["0.0001"] != curves["0.01"]
    assert res.extra["lr"] == s["lr"] and res.extra["steps"] == s["steps"] and res.extra["examples"] == 40
    assert res.extra["selection"]["selection_s"] > 0


def test_distillation_runs_the_teacher_once_per_batch_and_learns_the_same(micro_zoo, tmp_path):
    """The selection's learning rates share their training batches and held-out rows: the fixed
    teacher runs once per distinct batch, and the cached logits are the ones it would give again."""
    import torch

    from gtapp.baselines.common import Budget, CostMeter
    from gtapp.baselines.distill import TeacherTargets, distill, encoded_examples, kd_loss, kd_loss_at_targets
    from gtapp.baselines.selection import Selection
    from gtapp.models import ModelPair, load_model, load_tokenizer
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    teacher = load_model(pair.llm_path)
    calls = []
    teacher.register_forward_hook(lambda module, args, out: calls.append(1))
    tokenizer = load_tokenizer(pair.llm_path)
    ids, mask, tgt = encoded_examples(tokenizer, make_task("math/add-fruit-easy", seed=0, n_train=40, n_test=1).train,
                                      64)
    budget, selection = Budget(steps=4, batch_size=8, lr=1e-3), Selection(lrs=(1e-3, 3e-3), checkpoints=2)
    with CostMeter() as meter:
        rec = distill(pair.llm_path, pair.recipes.llm, teacher, ids, mask, tgt, budget, tmp_path / "a", 0, meter,
                      selection=selection)
    # without the cache: 2 rates x (4 training batches + 2 checkpoints x 1 held-out batch of 8) + 4 final
    uncached = 2 * (4 + 2 * 1) + 4
    assert rec["selection"]["n_val"] == 8 and len(calls) < uncached
    assert len(calls) <= 4 + 1 + 4  # the shared training batches, the held-out batch, the final run's

    # a cached batch is what the teacher gives again, and the loss on it is kd_loss's
    targets = TeacherTargets(teacher, CostMeter(), max_mb=0)  # nothing kept: computes every time
    rows = torch.arange(8)
    first = targets(rows, ids[:8], mask[:8], tgt[:8])
    assert torch.equal(first, targets(rows, ids[:8], mask[:8], tgt[:8])) and targets.computed == 2
    student_logits = torch.randn(8, ids.shape[1], first.shape[-1])
    t_logits = teacher(input_ids=ids[:8], attention_mask=mask[:8]).logits
    assert torch.equal(kd_loss_at_targets(student_logits, first, tgt[:8]), kd_loss(student_logits, t_logits, tgt[:8]))
