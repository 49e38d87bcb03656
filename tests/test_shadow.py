"""Shadow pair sets on the micro zoo: contents, versioning, resuming after a cancel, real mappers."""

import json

import pytest

from gtapp.progress import Cancelled
from gtapp.shadow import MANIFEST, PairSet, ShadowConfig, generate_pairs, plan



def _tasks():
    from gtapp.tasks.universe import task_names

    return (task_names("math")[0], task_names("commonsense")[0])


def _config(**kw):
    base = dict(tasks=_tasks(), subsets=2, subset_size=12, steps=4, snapshot_steps=(2,), seeds=(0,),
                batch_size=4, max_length=48, n_train=48, lr=3e-3)
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
    ps = generate_pairs(micro_zoo, _config(), out, finetune_fn=counter)
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
        generate_pairs(micro_zoo, _config(), out, finetune_fn=first)
    m = json.loads((out / MANIFEST).read_text())
    assert len(m["runs"]) == 2 and len(first.calls) == 6
    assert not list((out / "runs").glob("*.partial"))
    # 2. cancelled from the progress callback right after the 3rd run finished
    seen = []

    def progress(p):
        if p.stage == "shadow" and p.message.startswith("finished run"):
            seen.append(p.message)
            raise Cancelled("stop after a finished run")
    second = Counting()
    with pytest.raises(Cancelled):
        generate_pairs(micro_zoo, _config(), out, progress=progress, finetune_fn=second)
    assert len(second.calls) == 2  # only run 3, never runs 1-2 again
    assert len(json.loads((out / MANIFEST).read_text())["runs"]) == 3  # run 3 was saved before the cancel
    # 3. resumed to the end: only the last run is fine-tuned
    third = Counting()
    ps = generate_pairs(micro_zoo, _config(), out, finetune_fn=third)
    print(f"fine-tune calls: cancelled attempt {len(first.calls)}, second {len(second.calls)}, "
          f"resume {len(third.calls)} (uninterrupted: 8)")
    assert len(third.calls) == 2 and len(ps) == len(ps_full)
    # deterministic fine-tunes: the resumed set is the uninterrupted one, bit for bit
    assert ps.version == ps_full.version
    # a rerun of a finished set does nothing
    fourth = Counting()
    generate_pairs(micro_zoo, _config(), out, finetune_fn=fourth)
    assert fourth.calls == []
    # more subsets extend the set (and change its version)
    fifth = Counting()
    bigger = generate_pairs(micro_zoo, _config(subsets=3), out, finetune_fn=fifth)
    assert len(fifth.calls) == 4 and len(bigger) == len(ps) + 4 and bigger.version != ps.version


def test_changed_settings_are_refused(pair_set, micro_zoo):
    ps, _ = pair_set
    with pytest.raises(ValueError, match="other settings"):
        generate_pairs(micro_zoo, _config(steps=5), ps.root, finetune_fn=Counting())


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
    res = {}
    for name, m in [("mean", MeanMapper(ps.recipes)), ("ridge", RidgeMapper(ps.recipes)),
                    ("gt", GTMapper(ps.recipes, {"steps": 60, "d_model": 32, "n_heads": 2, "eval_every": 10}))]:
        card = m.fit(train)
        res[name] = m.evaluate(test)
        print(f"real micro pairs, held-out run: {name:>5} rel_err {res[name]['rel_err_mean']:.3f} "
              f"cosine {res[name]['cosine_mean']:.3f} (validation rel_err {card['validation'].get('rel_err_mean')})")
        assert 0 <= res[name]["rel_err_mean"] < 10 and -1 <= res[name]["cosine_mean"] <= 1
    assert res["gt"]["rel_err_mean"] <= res["mean"]["rel_err_mean"] * 1.25


def test_functional_loss_runs_on_real_pairs(pair_set, micro_zoo):
    from gtapp.mapper import GTMapper

    ps, _ = pair_set
    m = GTMapper(ps.recipes, {"steps": 4, "d_model": 16, "n_heads": 2, "eval_every": 2, "functional_weight": 1.0,
                              "functional_model": str(micro_zoo / "llm"), "functional_examples": 2, "batch_size": 2})
    card = m.fit(ps)
    assert card["fit"]["steps_run"] >= 2


def test_shadow_cli_summary(pair_set, capsys):
    from gtapp.cli import main

    ps, _ = pair_set
    assert main(["shadow", "--out", str(ps.root), "--summary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == ps.version and out["pairs"] == len(ps)
