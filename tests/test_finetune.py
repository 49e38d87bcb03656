"""LoRA fine-tuning from a recipe: saved stock adapters, records, DP-SGD, snapshots, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gtapp import privacy as P
from gtapp.finetune import DPConfig, FinetuneConfig, FinetuneError, _check_moved, finetune, load_record
from gtapp.models import ModelPair
from gtapp.progress import Cancelled
from gtapp.tasks.universe import make_task

TASK = "math/add-fruit-easy"


@pytest.fixture(scope="module")
def micro_pair(micro_zoo) -> ModelPair:
    return ModelPair.from_dir(micro_zoo)


@pytest.fixture(scope="module")
def micro_task():
    return make_task(TASK, seed=0, n_train=24, n_test=8)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def plain_run(micro_pair, micro_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "plain"
    seen = []
    config = FinetuneConfig(steps=6, lr=1e-2, batch_size=4, seed=0, snapshot_steps=(2, 6), log_every=2)
    result = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train, config, out,
                      progress=seen.append, keep_model=True)
    return result, seen


def test_saves_stock_peft_adapter_that_reloads_identically(plain_run, micro_pair):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = plain_run
    out = result.adapter_dir
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not list(out.parent.glob(".*partial*"))  # staging folder gone
    keys = list(weights(out))
    assert keys and all(k.startswith("base_model.model.") and "lora_" in k and "_module" not in k for k in keys)
    # Plain peft, no gtapp code: same logits as the model that was trained.
    base = AutoModelForCausalLM.from_pretrained(micro_pair.tiny_path)
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    ids = torch.tensor([[5, 17, 33, 2, 40, 41, 42]])
    with torch.no_grad():
        a = loaded(input_ids=ids).logits
        b = result.model.eval()(input_ids=ids).logits
        c = AutoModelForCausalLM.from_pretrained(micro_pair.tiny_path)(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-6)  # the adapter does something
    # B moved off zero, A kept the recipe's seeded init as its starting point.
    from gtapp.lora.peft_model import lora_factors
    from gtapp.lora.recipe import seeded_lora_a

    factors = lora_factors(loaded)
    assert set(factors) == set(micro_pair.recipes.tiny.shapes)
    assert any(float(bm.abs().max()) > 0 for _, bm in factors.values())
    m = sorted(factors)[0]
    a0 = seeded_lora_a(micro_pair.recipes.tiny.init_seed, m, micro_pair.recipes.tiny.rank, factors[m][0].shape[1])
    assert (factors[m][0] - a0).abs().max() < 0.1  # small steps from the shared init


def test_record_contents(plain_run, micro_pair, micro_task):
    result, _ = plain_run
    r = load_record(result.adapter_dir)
    print(json.dumps({k: r[k] for k in ("examples", "steps", "seed", "loss", "wall_s", "versions")}, indent=1))
    assert r == result.record
    assert r["examples"] == 24 and r["steps"] == 6 and r["seed"] == 0
    from gtapp.data import data_fingerprint

    assert r["data_fingerprint"] == data_fingerprint(micro_task.train)
    assert r["config"]["lr"] == 1e-2 and r["config"]["batch_size"] == 4 and r["config"]["dp"] is None
    assert FinetuneConfig.from_dict(r["config"]) == FinetuneConfig(
        steps=6, lr=1e-2, batch_size=4, seed=0, snapshot_steps=(2, 6), log_every=2)
    assert r["recipe"]["base_fingerprint"] == micro_pair.recipes.tiny.base_fingerprint
    assert r["recipe"]["init_fingerprint"] == micro_pair.recipes.tiny.init_fingerprint
    assert r["dp"] is False and r["epsilon"] is None
    for k in ("torch", "transformers", "peft", "opacus", "gtapp"):
        assert r["versions"][k]
    assert r["loss"]["first"] > 0 and r["loss"]["last"] > 0 and len(r["loss"]["curve"]) == 3
    assert r["wall_s"] > 0


def test_progress_and_snapshots(plain_run):
    result, seen = plain_run
    assert [p.stage for p in seen] == ["finetune"] * 7
    assert seen[0].fraction == 0 and seen[-1].fraction == 1.0 and seen[-1].eta_s == 0
    assert seen[3].eta_s is not None
    assert sorted(result.snapshots) == [2, 6]
    for k, folder in result.snapshots.items():
        assert folder == result.adapter_dir / "snapshots" / f"step_{k}"
        assert (folder / "adapter_config.json").is_file()
    final, s6, s2 = weights(result.adapter_dir), weights(result.snapshots[6]), weights(result.snapshots[2])
    assert all(torch.equal(final[k], s6[k]) for k in final)
    assert not all(torch.equal(final[k], s2[k]) for k in final)


def test_same_seed_same_adapter(plain_run, micro_pair, micro_task, tmp_path):
    result, _ = plain_run
    config = FinetuneConfig(steps=6, lr=1e-2, batch_size=4, seed=0, log_every=2)
    again = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train, config, tmp_path / "a")
    w0, w1 = weights(result.adapter_dir), weights(again.adapter_dir)
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    other = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train,
                     FinetuneConfig(steps=6, lr=1e-2, batch_size=4, seed=1), tmp_path / "b")
    w2 = weights(other.adapter_dir)
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)
    # An existing result is not overwritten silently.
    with pytest.raises(FileExistsError):
        finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train, config, tmp_path / "a")
    finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train, config, tmp_path / "a", overwrite=True)


def test_dp_sgd_moves_adapter_and_reports_accountant_epsilon(plain_run, micro_pair, tmp_path):
    # batch_size 1 of 12 examples: q = 1/12, so some Poisson batches are empty.
    examples = make_task(TASK, seed=0, n_train=12, n_test=1).train
    target = 3.0
    config = FinetuneConfig(steps=16, lr=1e-2, batch_size=1, seed=0, snapshot_steps=(8,),
                            dp=DPConfig(target_epsilon=target, delta=1e-5))
    t0 = time.monotonic()
    result = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, examples, config, tmp_path / "dp")
    r = result.record
    print(f"DP-SGD: target eps {target}, reported eps {r['epsilon']:.4f}, noise {r['noise_multiplier']:.4f}, "
          f"q {r['sample_rate']:.4f}, steps {r['steps']}, empty batches {r['privacy']['empty_batches']}, "
          f"{time.monotonic() - t0:.1f}s")
    assert r["dp"] is True and r["sample_rate"] == pytest.approx(1 / 12) and r["delta"] == 1e-5
    assert r["epsilon"] == P.epsilon(r["noise_multiplier"], r["sample_rate"], r["steps"], r["delta"])
    assert r["epsilon"] <= target and abs(r["epsilon"] - target) / target < 0.05
    assert r["privacy"]["empty_batches"] >= 1  # the empty-batch path ran (deterministic for this seed)
    same_plain = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, examples,
                          FinetuneConfig(steps=16, lr=1e-2, batch_size=1, seed=0), tmp_path / "same_plain")
    dpw, plain = weights(result.adapter_dir), weights(same_plain.adapter_dir)
    assert any(float(v.abs().max()) > 0 for k, v in dpw.items() if "lora_B" in k)
    assert not all(torch.equal(dpw[k], plain[k]) for k in dpw)
    snap = weights(result.snapshots[8])
    assert snap.keys() == dpw.keys() and all("_module" not in k for k in dpw)
    # A fixed noise multiplier: eps is whatever the accountant says for it.
    fixed = finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, examples,
                     FinetuneConfig(steps=4, lr=1e-2, batch_size=3, seed=0, dp=DPConfig(noise_multiplier=1.5)),
                     tmp_path / "dp_fixed")
    assert fixed.record["noise_multiplier"] == 1.5
    assert fixed.record["epsilon"] == P.epsilon(1.5, 3 / 12, 4, 1e-5)


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_opacus_per_example_gradients_are_independent_of_the_batch(micro_pair):
    """DP-SGD's privacy unit is one example: Opacus's per-sample gradients on the peft Llama,
    with gtapp's per-example loss and padding, equal each example's gradient computed alone."""
    from opacus import GradSampleModule

    from gtapp.data import EncodedDataset
    from gtapp.evaluate import sequence_nll
    from gtapp.lora.peft_model import attach_lora
    from gtapp.models import load_model, load_tokenizer

    tok = load_tokenizer(micro_pair.tiny_path)
    pm = attach_lora(load_model(micro_pair.tiny_path), micro_pair.recipes.tiny)
    with torch.no_grad():  # nonzero B so that A gets gradients too
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    examples = make_task(TASK, seed=0, n_train=3, n_test=1).train + make_task("lm/weather-0", seed=0, n_train=1, n_test=1).train
    ds = EncodedDataset(tok, examples, max_length=64)
    params = [p for p in pm.parameters() if p.requires_grad]
    alone = []
    for i in range(len(ds)):
        ids, mask, labels = ds.batch([i])
        s, c = sequence_nll(pm, ids, mask, labels)
        alone.append(torch.autograd.grad((s / c).mean(), params))
    gsm = GradSampleModule(pm, loss_reduction="mean")
    ids, mask, labels = ds.batch(list(range(len(ds))))
    s, c = sequence_nll(gsm, ids, mask, labels)
    (s / c).mean().backward()
    for j, p in enumerate(params):
        for i in range(len(ds)):
            assert torch.allclose(p.grad_sample[i], alone[i][j], atol=1e-5, rtol=1e-4)
    gsm.to_standard_module()


def test_cancel_leaves_no_adapter(micro_pair, micro_task, tmp_path):
    def cancel_at_3(p):
        if p.fraction >= 3 / 10:
            raise Cancelled("stop")

    out = tmp_path / "cancelled"
    for dp in (None, DPConfig(noise_multiplier=1.0)):
        with pytest.raises(Cancelled):
            finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train,
                     FinetuneConfig(steps=10, batch_size=4, snapshot_steps=(1, 2), dp=dp), out, progress=cancel_at_3)
        assert not list(tmp_path.rglob("adapter_model.safetensors"))
        assert not list(tmp_path.rglob("finetune.json"))
        assert not list(tmp_path.glob(".*"))


def test_guard_against_an_adapter_that_never_moved(micro_pair, micro_task, tmp_path, monkeypatch):
    init = {"m": (torch.ones(2, 3), torch.zeros(4, 2))}
    with pytest.raises(FinetuneError, match="did not change"):
        _check_moved(init, {"m": (torch.ones(2, 3), torch.zeros(4, 2))})
    with pytest.raises(FinetuneError, match="non-finite"):
        _check_moved(init, {"m": (torch.ones(2, 3), torch.full((4, 2), float("nan")))})
    assert _check_moved(init, {"m": (torch.ones(2, 3), torch.ones(4, 2))})["max_abs_B"] == 1.0
    # End to end: an optimizer that never updates (the silent Opacus failure) is caught.
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    for dp in (None, DPConfig(noise_multiplier=1.0)):
        with pytest.raises(FinetuneError, match="did not change"):
            finetune(micro_pair.tiny_path, micro_pair.recipes.tiny, micro_task.train,
                     FinetuneConfig(steps=2, batch_size=4, dp=dp), tmp_path / "stuck")
    assert not list(tmp_path.rglob("adapter_model.safetensors"))


def test_config_validation():
    with pytest.raises(ValueError):
        DPConfig()
    with pytest.raises(ValueError):
        DPConfig(target_epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError):
        DPConfig(target_epsilon=-1.0)
    with pytest.raises(ValueError):
        DPConfig(noise_multiplier=1.0, delta=1.0)
    with pytest.raises(ValueError):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError):
        FinetuneConfig(steps=10, snapshot_steps=(11,))
    assert FinetuneConfig(steps=10, snapshot_steps=(5, 2, 5)).snapshot_steps == (2, 5)
    c = FinetuneConfig(dp=DPConfig(target_epsilon=2.0))
    assert FinetuneConfig.from_dict(c.to_dict()) == c


def test_cli_finetune(micro_zoo, tmp_path, capsys):
    from gtapp.cli import main

    out = tmp_path / "cli"
    rc = main(["finetune", "--zoo", str(micro_zoo), "--which", "tiny", "--task", TASK, "--n-train", "16",
               "--steps", "4", "--batch-size", "4", "--lr", "0.01", "--dp-epsilon", "5", "--dp-delta", "1e-3",
               "--snapshot-steps", "2,4", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    print(summary)
    assert summary["epsilon"] == pytest.approx(5.0, rel=0.05) and summary["epsilon"] <= 5.0
    assert summary["steps"] == 4 and summary["examples"] == 16 and sorted(summary["snapshots"]) == ["2", "4"]
    assert "finetune" in captured.err and "100.0%" in captured.err
    assert (out / "adapter_model.safetensors").is_file()
    # Same folder again: refused with a message, not a traceback.
    rc = main(["finetune", "--zoo", str(micro_zoo), "--task", TASK, "--steps", "1", "--out", str(out), "--quiet"])
    assert rc == 2 and "already holds" in capsys.readouterr().err
    # A user's own JSONL file.
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q: {i} plus 1?\nA:", "answer": f" {i + 1}"}) for i in range(20)))
    rc = main(["finetune", "--zoo", str(micro_zoo), "--dataset", str(data), "--steps", "2", "--batch-size", "4",
               "--out", str(tmp_path / "mine"), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["dataset"] == str(data) and summary["epsilon"] is None and 0 < summary["examples"] < 20
    assert "ETA" not in captured.err  # --quiet


@pytest.mark.slow  # the session ci_zoo: about 20 s to build on an idle 2-core machine
def test_lora_finetune_lowers_answer_nll_on_held_out_examples(ci_zoo, tmp_path):
    """The real thing on the pretrained ci zoo: TinyLM + LoRA learns the task."""
    from gtapp.evaluate import answer_nll, load_with_adapter
    from gtapp.models import load_model, load_tokenizer

    pair = ModelPair.from_dir(ci_zoo)
    task = make_task(TASK, seed=0, n_train=256, n_test=64)
    tok = load_tokenizer(pair.tiny_path)
    before, n_tok = answer_nll(load_model(pair.tiny_path), tok, task.test)
    results = {}
    for label, dp in (("plain", None), ("dp eps=8", DPConfig(target_epsilon=8.0, delta=1e-5))):
        t0 = time.monotonic()
        res = finetune(pair.tiny_path, pair.recipes.tiny, task.train,
                       FinetuneConfig(steps=60, lr=1e-2, batch_size=16, seed=0, dp=dp), tmp_path / label)
        wall = time.monotonic() - t0
        model, _ = load_with_adapter(pair.tiny_path, res.adapter_dir)
        after, _ = answer_nll(model, tok, task.test)
        results[label] = after
        print(f"ci tiny on {TASK} ({label}): held-out answer NLL {before:.3f} -> {after:.3f} nats/token "
              f"over {n_tok} tokens; train loss {res.record['loss']['first']:.3f} -> {res.record['loss']['last']:.3f}; "
              f"eps {res.record['epsilon']}; {wall:.1f}s for 60 steps")
    assert results["plain"] < before - 1.0
    assert results["dp eps=8"] < before
