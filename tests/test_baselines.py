"""Baselines (gtapp.baselines) on the ci zoo: every method runs, records its costs, and
produces a stock peft adapter (or, for proxy-tuning, a scored decode-time model)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from gtapp.baselines import (
    METHODS,
    BaselineResult,
    Budget,
    evaluate_result,
    run_baseline,
)
from gtapp.models import ModelPair

TASK = "commonsense/tool_use-4opt"
LLM_BUDGET = Budget(steps=8, batch_size=8, lr=1e-2, max_length=64)
TINY_BUDGET = Budget(steps=20, batch_size=16, lr=1e-2, max_length=64)
DATAFREE = {"n_samples": 16, "sample_tokens": 16}


class Untouchable(Sequence):
    """Private examples that fail the test if anything reads them."""

    def __len__(self):
        raise AssertionError("datafree_kd read the private examples (len)")

    def __getitem__(self, i):
        raise AssertionError("datafree_kd read the private examples (getitem)")

    def __iter__(self):
        raise AssertionError("datafree_kd read the private examples (iter)")

    def __bool__(self):
        raise AssertionError("datafree_kd read the private examples (bool)")


def mean_init_distance(adapter_dir, recipe, init_seed: int) -> float:
    """Mean over modules of ||A - A0|| / ||A0|| for the initial A's of ``init_seed``."""
    from safetensors.torch import load_file

    from gtapp.lora.recipe import seeded_lora_a

    weights = load_file(f"{adapter_dir}/adapter_model.safetensors")
    dists = []
    for module in recipe.modules():
        a = weights[f"base_model.model.{module}.lora_A.weight"]
        a0 = seeded_lora_a(init_seed, module, recipe.rank, recipe.shapes[module][1])
        dists.append(float((a - a0).norm() / a0.norm()))
    return sum(dists) / len(dists)


@pytest.fixture(scope="module")
def setup(ci_zoo, tmp_path_factory):
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(ci_zoo)
    task = make_task(TASK, seed=0, n_train=128, n_test=32)
    public = make_task(TASK, seed=1, n_train=64, n_test=1).train  # the provider's own data
    out = tmp_path_factory.mktemp("baselines")
    tiny = run_baseline("tiny_ft", pair, None, task.train, public, LLM_BUDGET, out / "tiny_ft", seed=0,
                        options={"budget": TINY_BUDGET})
    return pair, task, public, out, tiny


@pytest.fixture(scope="module")
def results(setup) -> dict[str, BaselineResult]:
    pair, task, public, out, tiny = setup
    res = {"tiny_ft": tiny}
    for m in METHODS:
        if m == "tiny_ft":
            continue
        private = Untouchable() if m == "datafree_kd" else task.train
        res[m] = run_baseline(m, pair, tiny.adapter_dir, private, public, LLM_BUDGET, out / m, seed=0, task=task,
                              options=DATAFREE if m == "datafree_kd" else None)
    return res


@pytest.mark.slow  # the module's `setup`: the ci_zoo (about 20 s) and every baseline run
def test_every_baseline_runs_records_costs_and_is_evaluated(setup, results):
    from peft import PeftModel

    from gtapp.models import load_model
    from gtapp.lora.validate import validate_adapter

    pair, task, *_ = setup
    assert set(results) == set(METHODS)
    print(f"\n{'method':15s} {'wall_s':>7s} {'peak_MB':>8s} {'tokens':>7s} {'EM':>6s} {'ans_nll':>7s}")
    for m, r in results.items():
        assert r.method == m
        assert r.wall_s > 0 and r.peak_mem_mb > 0, r
        # cross_lora maps weights through the base models' subspaces: it reads no text at all
        assert (r.tokens == 0) if m == "cross_lora" else (r.tokens > 0), r
        if m == "proxy_tuning":
            assert r.adapter_dir is None and r.model == "llm+tiny"
            ev = r.extra["eval"]
        else:
            recipe = pair.recipe(r.model)
            if m != "cross_lora":  # cross_lora's factors are projected, not trained from the recipe's init
                summary = validate_adapter(r.adapter_dir, recipe)
                seeded = sum(summary.init_distance.values()) / len(summary.init_distance)
                other = mean_init_distance(r.adapter_dir, recipe, recipe.init_seed + 1)
                assert seeded < other, (m, seeded, other)  # trained from the recipe's seeded A, not another
            peft = PeftModel.from_pretrained(load_model(pair.path(r.model)), r.adapter_dir)  # stock peft
            assert any("lora_B" in n and float(p.abs().max()) > 0 for n, p in peft.named_parameters())
            ev = evaluate_result(r, pair, task, limit=8)
        assert ev["n"] > 0 and ev["answer_nll"] == ev["answer_nll"]
        print(f"{m:15s} {r.wall_s:7.2f} {r.peak_mem_mb:8.2f} {r.tokens:7d} {ev['value']:6.3f} {ev['answer_nll']:7.3f}")
    for m in ("oracle", "public_ft", "kd_logit", "weak_to_strong", "datafree_kd"):  # the same budget
        info = results[m].extra
        assert (info["steps"], info["batch_size"], info["lr"]) == (LLM_BUDGET.steps, LLM_BUDGET.batch_size, LLM_BUDGET.lr)
        assert results[m].extra["budget"]["sequences"] == LLM_BUDGET.steps * LLM_BUDGET.batch_size
    assert results["oracle"].extra["data_fingerprint"] != results["public_ft"].extra["data_fingerprint"]


@pytest.mark.slow  # the module's `setup`: the ci_zoo (about 20 s) and every baseline run
def test_kd_logit_moves_the_llm_towards_the_teacher(setup, results):
    from gtapp.baselines.distill import kl_to_teacher
    from gtapp.evaluate import load_with_adapter

    pair, task, *_ = setup
    teacher, tok = load_with_adapter(pair.tiny_path, results["tiny_ft"].adapter_dir)
    base, _ = load_with_adapter(pair.llm_path)
    kd, _ = load_with_adapter(pair.llm_path, results["kd_logit"].adapter_dir)
    held_out = task.test
    kl_base = kl_to_teacher(base, teacher, tok, held_out)
    kl_kd = kl_to_teacher(kd, teacher, tok, held_out)
    print(f"\nheld-out KL(teacher || LLM) per answer token: base {kl_base:.4f} -> kd_logit {kl_kd:.4f}")
    print("kd train loss", results["kd_logit"].extra["first_loss"], "->", results["kd_logit"].extra["final_loss"])
    assert kl_kd < kl_base


@pytest.mark.slow  # the module's `setup`: the ci_zoo (about 20 s) and every baseline run
def test_proxy_tuning_logits_are_exact_and_decoding_matches(setup, results):
    from gtapp.baselines.proxy import load_proxy
    from gtapp.data import EncodedDataset
    from gtapp.evaluate import greedy_decode, load_with_adapter
    from gtapp.models import load_model

    pair, task, *_ = setup
    tiny_dir = results["tiny_ft"].adapter_dir
    proxy, tok = load_proxy(pair, tiny_dir)
    ds = EncodedDataset(tok, task.test[:6], max_length=64)
    ids, mask = ds.input_ids, ds.attention_mask
    llm = load_model(pair.llm_path)
    ft, _ = load_with_adapter(pair.tiny_path, tiny_dir)
    base = load_model(pair.tiny_path)
    with torch.no_grad():
        got = proxy(input_ids=ids, attention_mask=mask).logits
        l, f, b = (m(input_ids=ids, attention_mask=mask).logits for m in (llm, ft, base))
    assert torch.equal(got, l + (f - b))
    assert float((f - b).abs().max()) > 0  # the tiny fine-tune moved the offset
    # Cached, left-padded batch decoding == uncached greedy decoding of each prompt alone.
    prompts = [e.prompt for e in task.test[:3]] + ["Question: Which"]
    batch = greedy_decode(proxy, tok, prompts, 4, batch_size=4)
    eos = tok.eos_token_id
    for p, g in zip(prompts, batch):
        seq = tok(p, add_special_tokens=True)["input_ids"]
        new = []
        for _ in range(4):
            with torch.no_grad():
                nxt = int(proxy(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            if nxt == eos:
                break
            seq, new = seq + [nxt], new + [nxt]
        assert g == tok.decode(new, skip_special_tokens=True)
    ev = results["proxy_tuning"].extra["eval"]
    print(f"\nproxy-tuning on {task.name}: {ev['metric']} {ev['value']:.3f}, answer NLL {ev['answer_nll']:.3f} "
          f"(combined distribution), n={ev['n']}; generations {batch}")


@pytest.mark.slow  # the module's `setup`: the ci_zoo (about 20 s) and every baseline run
def test_same_seed_same_adapter_and_datafree_never_reads_private(setup, results):
    from safetensors.torch import load_file

    pair, _task, public, out, tiny = setup
    again = run_baseline("datafree_kd", pair, tiny.adapter_dir, Untouchable(), public, LLM_BUDGET,
                         out / "datafree_again", seed=0, options=DATAFREE)
    a = load_file(f"{results['datafree_kd'].adapter_dir}/adapter_model.safetensors")
    b = load_file(f"{again.adapter_dir}/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print("\ndatafree samples:", again.extra["sample_examples"][:2])


@pytest.mark.slow  # the module's `setup`: the ci_zoo (about 20 s) and every baseline run
def test_bad_requests_are_refused(setup):
    pair, task, public, out, tiny = setup
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("nope", pair, tiny.adapter_dir, task.train, public, LLM_BUDGET, out / "x")
    with pytest.raises(ValueError, match="task"):
        run_baseline("proxy_tuning", pair, tiny.adapter_dir, task.train, public, LLM_BUDGET, out / "x")
    with pytest.raises(ValueError, match="unknown options"):
        run_baseline("oracle", pair, None, task.train, public, LLM_BUDGET, out / "x", options={"temperature": 2})
    with pytest.raises(ValueError, match="tiny_adapter_dir"):
        run_baseline("kd_logit", pair, None, task.train, public, LLM_BUDGET, out / "x")
    with pytest.raises(ValueError):
        Budget(steps=0, batch_size=8, lr=1e-3)


def test_language_modelling_task_paths(micro_zoo, tmp_path):
    """Empty-prompt (LM) examples: weak-to-strong labels continue the text's first half with
    the TinyLM; kd_logit on the teacher's own answers; proxy-tuning scores perplexity."""
    from gtapp.baselines.common import CostMeter
    from gtapp.baselines.sft import teacher_labels
    from gtapp.tasks.universe import make_task

    pair = ModelPair.from_dir(micro_zoo)
    task = make_task("lm/weather-0", seed=0, n_train=8, n_test=4)
    b = Budget(steps=2, batch_size=4, lr=1e-3, max_length=48)
    tiny = run_baseline("tiny_ft", pair, None, task.train, [], b, tmp_path / "tiny", seed=0)
    with CostMeter() as meter:
        labelled = teacher_labels(pair, tiny.adapter_dir, task.train[:3], 8, meter, max_length=48)
    assert all(e.prompt and task.train[i].answer.startswith(e.prompt[:5]) for i, e in enumerate(labelled))
    assert meter.tokens > 0
    for m, opts in (("weak_to_strong", None), ("kd_logit", {"targets": "teacher"})):
        r = run_baseline(m, pair, tiny.adapter_dir, task.train, [], b, tmp_path / m, seed=0, task=task, options=opts)
        assert r.tokens > 0 and r.wall_s > 0
    p = run_baseline("proxy_tuning", pair, tiny.adapter_dir, task.train, [], b, tmp_path / "proxy", task=task)
    assert p.extra["eval"]["metric"] == "perplexity" and p.extra["eval"]["value"] > 1
    assert BaselineResult.load(tmp_path / "proxy" / "baseline.json").extra["eval"] == p.extra["eval"]
    print(f"\nLM task proxy-tuning perplexity {p.extra['eval']['value']:.2f}")


def test_cost_meter_sees_tensor_memory_and_time():
    from gtapp.baselines.common import CostMeter

    # 256 MiB: large against what the rest of the process (other threads, the allocator) moves
    # meanwhile; with 64 MiB the RSS reading fell below the tensor's size now and then (58.8 MiB)
    with CostMeter() as meter:
        x = torch.ones(64 * 2**20)  # 256 MiB of float32
        x.add_(1)
        meter.add_tokens(5, "a")
        meter.add_tokens(7, "b")
        del x
    print(f"\n256 MiB tensor: peak {meter.peak_mem_mb:.1f} MiB above start, {meter.wall_s * 1e3:.1f} ms")
    assert 0.9 * 256 <= meter.peak_mem_mb < 400 and meter.wall_s > 0
    assert meter.tokens == 12 and meter.details()["tokens_by_part"] == {"a": 5, "b": 7}
