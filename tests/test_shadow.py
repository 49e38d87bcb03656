"""Shadow pair sets on the micro zoo: contents, versioning, resuming after a cancel, real mappers."""

import json

import pytest

from gtapp.progress import Cancelled
from gtapp.pairset import MANIFEST, PairSet
from gtapp.shadow import ShadowConfig, make_pairs, plan



def _tasks():
    from gtapp.tasks.universe import task_names

    return (task_names("math")[0], task_names("commonsense")[0])


def _config(**kw):
    # engine="per_run": these tests count (and cancel inside) the per-run fine-tune calls (finetune_fn)
    base = dict(tasks=_tasks(), subsets=2, subset_size=12, steps=4, snapshot_steps=(2,), seeds=(0,),
                batch_size=4, max_length=48, n_train=48, lr=3e-3, engine="per_run")
    base.update(kw)
    return ShadowConfig(**base)


class Counting:
    """A finetune wrapper that counts calls (and can raise Cancelled on the k-th call)."""

    def __init__(self, cancel_on_call=None):
        from gtapp.finetune import finetune

        self.fn, self.calls, self.cancel_on_call = finetune, [], cancel_on_call

    def __call__(self, model_path, recipe, examples, config, out_dir, progress=None):
        self.calls.append((model_path, len(examples), config.seed))
        if self.cancel_on_call is not None and len(self.calls) == self.cancel_on_call:
            def cancel(p):  # cancel in the middle of this fine-tune
                if p.fraction > 0.3:
                    raise Cancelled("stop")
            return self.fn(model_path, recipe, examples, config, out_dir, cancel)
        return self.fn(model_path, recipe, examples, config, out_dir, progress)


@pytest.fixture(scope="module")
def pair_set(micro_zoo, tmp_path_factory):
    counter = Counting()
    out = tmp_path_factory.mktemp("pairs") / "set"
    ps = make_pairs(micro_zoo, _config(), out, finetune_fn=counter)
    return ps, counter


def test_pair_set_contents(pair_set, micro_zoo):
    ps, counter = pair_set
    runs = plan(_config())
    assert len(counter.calls) == 2 * len(runs) == 8  # tiny + LLM per run
    assert len(ps) == 2 * len(runs)  # steps 2 and 4 of every run
    m = json.loads((ps.root / MANIFEST).read_text())
    assert m["version"] == ps.version and len(m["version"]) == 16
    assert set(m["recipes"]) == {"tiny", "llm"}
    print(json.dumps(ps.summary(), indent=1))
    for run_id, run in m["runs"].items():
        assert (ps.root / run["shard"]).is_file() and len(run["sha256"]) == 64
        assert run["steps"] == [2, 4] and len(run["indices"]) == 12 and len(run["subset_hash"]) == 16
        # both models saw exactly the same examples
        assert run["finetune"]["tiny"]["data_fingerprint"] == run["finetune"]["llm"]["data_fingerprint"]
    # bootstrap subsets differ between subsets of a task
    hashes = {r["subset_hash"] for r in m["runs"].values()}
    assert len(hashes) == len(m["runs"])
    for p in ps:
        assert set(p.tiny) == set(ps.recipes.tiny.shapes) and set(p.llm) == set(ps.recipes.llm.shapes)
        assert all(b.abs().max() > 0 for _, b in p.llm.values())  # the LLM update moved
    # later checkpoints of a run have moved further than earlier ones
    run = next(iter(m["runs"]))
    early, late = [p for p in ps if p.run_id == run]
    n = lambda f: sum(float(b.norm()) for _, b in f.values())  # noqa: E731
    assert n(late.llm) > n(early.llm)


def test_interrupted_generation_resumes_without_redoing_runs(pair_set, micro_zoo, tmp_path):
    ps_full, _ = pair_set
    out = tmp_path / "set"
    # 1. cancelled in the middle of the 3rd run's LLM fine-tune (call 6): runs 1-2 are finished
    first = Counting(cancel_on_call=6)
    with pytest.raises(Cancelled):
        make_pairs(micro_zoo, _config(), out, finetune_fn=first)
    m = json.loads((out / MANIFEST).read_text())
    assert len(m["runs"]) == 2 and len(first.calls) == 6
    assert not list((out / "runs").glob("*.partial"))
    # 2. cancelled from the progress callback right after the 3rd run finished
    seen = []

    def progress(p):
        if p.stage == "shadow" and p.message.startswith("finished batch"):  # per_run: a batch is one run
            seen.append(p.message)
            raise Cancelled("stop after a finished run")
    second = Counting()
    with pytest.raises(Cancelled):
        make_pairs(micro_zoo, _config(), out, progress=progress, finetune_fn=second)
    assert len(second.calls) == 2  # only run 3, never runs 1-2 again
    assert len(json.loads((out / MANIFEST).read_text())["runs"]) == 3  # run 3 was saved before the cancel
    # 3. resumed to the end: only the last run is fine-tuned
    third = Counting()
    ps = make_pairs(micro_zoo, _config(), out, finetune_fn=third)
    print(f"fine-tune calls: cancelled attempt {len(first.calls)}, second {len(second.calls)}, "
          f"resume {len(third.calls)} (uninterrupted: 8)")
    assert len(third.calls) == 2 and len(ps) == len(ps_full)
    # deterministic fine-tunes: the resumed set is the uninterrupted one, bit for bit
    assert ps.version == ps_full.version
    # a rerun of a finished set does nothing
    fourth = Counting()
    make_pairs(micro_zoo, _config(), out, finetune_fn=fourth)
    assert fourth.calls == []
    # more subsets extend the set (and change its version)
    fifth = Counting()
    bigger = make_pairs(micro_zoo, _config(subsets=3), out, finetune_fn=fifth)
    assert len(fifth.calls) == 4 and len(bigger) == len(ps) + 4 and bigger.version != ps.version


def test_changed_settings_are_refused(pair_set, micro_zoo):
    ps, _ = pair_set
    with pytest.raises(ValueError, match="other settings"):
        make_pairs(micro_zoo, _config(steps=5), ps.root, finetune_fn=Counting())


def test_corrupted_shard_is_detected(pair_set, tmp_path):
    import shutil

    ps, _ = pair_set
    copy = tmp_path / "copy"
    shutil.copytree(ps.root, copy)
    shard = copy / next(iter(ps.runs.values()))["shard"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        PairSet.load(copy).pairs


def test_mappers_on_real_micro_pairs(pair_set, tmp_path):
    """GT, ridge and mean fitted on real shadow pairs; scored on a held-out shadow run."""
    from gtapp.mapper import GTMapper, MeanMapper, RidgeMapper

    ps, _ = pair_set
    runs = sorted(ps.runs)
    held = runs[-1]
    train = [p for p in ps if p.run_id != held]
    test = [p for p in ps if p.run_id == held]
    res, cards = {}, {}
    for name, m in [("mean", MeanMapper(ps.recipes)), ("ridge", RidgeMapper(ps.recipes)),
                    ("gt", GTMapper(ps.recipes, {"steps": 60, "d_model": 32, "n_heads": 2, "eval_every": 10}))]:
        cards[name] = card = m.fit(train)
        res[name] = m.evaluate(test)
        print(f"real micro pairs, held-out run: {name:>5} rel_err {res[name]['rel_err_mean']:.3f} "
              f"cosine {res[name]['cosine_mean']:.3f} (validation rel_err {card['validation'].get('rel_err_mean')})")
        assert res[name]["n"] == len(test) == 2 and set(res[name]["per_pair"]) == {p.pair_id for p in test}
        assert card["split"]["val_runs"] >= 1 and held not in card["split"]["val_run_ids"]
    # the learned mappers beat the input-blind mean on a run they never saw: lower error, closer direction
    for name in ("ridge", "gt"):
        assert res[name]["rel_err_mean"] < res["mean"]["rel_err_mean"], (name, res)
        assert res[name]["cosine_mean"] > res["mean"]["cosine_mean"], (name, res)
    # the GT keeps a checkpoint only if it is no worse than its base map (step 0) on validation runs,
    # and that base map beats the mean baseline there
    fit = cards["gt"]["fit"]
    assert fit["selected_on"] == "validation" and fit["best_score"] <= fit["base_score"]
    assert cards["gt"]["validation"]["rel_err_mean"] < cards["gt"]["validation_mean_baseline"]["rel_err_mean"]


def test_functional_loss_runs_on_real_pairs(pair_set, micro_zoo, monkeypatch):
    import math

    from gtapp.mapper import GTMapper
    from gtapp.mapper.functional import FunctionalLoss

    ps, _ = pair_set
    values = []
    real_call = FunctionalLoss.__call__

    def spy(self, pred, a0, run_ids):
        out = real_call(self, pred, a0, run_ids)
        values.append((out, list(run_ids)))
        return out

    monkeypatch.setattr(FunctionalLoss, "__call__", spy)
    m = GTMapper(ps.recipes, {"steps": 4, "d_model": 16, "n_heads": 2, "eval_every": 2, "functional_weight": 1.0,
                              "functional_model": str(micro_zoo / "llm"), "functional_examples": 2, "batch_size": 2})
    card = m.fit(ps)
    assert card["fit"]["steps_run"] == 4 and card["fit"]["stopped"] == "steps"
    # the LLM's answer NLL with the predicted adapter was added on every step, on real (unmixed) pairs
    # of the pair set (batch 2, half mixed up: one real pair per step), and it carries the GT's gradient
    assert len(values) == 4
    train_runs = set(ps.runs) - set(card["split"]["val_run_ids"])
    for loss, run_ids in values:
        assert loss.dim() == 0 and loss.requires_grad
        assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
        assert len(run_ids) == 1 and set(run_ids) <= train_runs


def test_shadow_cli_summary(pair_set, capsys):
    from gtapp.cli import main

    ps, _ = pair_set
    assert main(["shadow", "--out", str(ps.root), "--summary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == ps.version and out["pairs"] == len(ps)


def test_progress_inside_a_batch_carries_the_whole_runs_eta(micro_zoo, tmp_path):
    """The CLI's progress line showed "ETA --:--" for a whole shadow run: the updates from inside
    a batch (the fine-tunes' steps) dropped every ETA. They now carry the whole run's, from its pace."""
    seen = []
    make_pairs(micro_zoo, _config(engine="batched"), tmp_path / "set", progress=seen.append)
    inside = [p for p in seen if p.message.startswith("batch ") and 0.05 <= p.fraction < 1.0]
    assert inside and all(p.eta_s is not None and p.eta_s >= 0 for p in inside)
    assert all(p.eta_s is None for p in seen if p.message.startswith("batch ") and p.fraction < 0.05)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
