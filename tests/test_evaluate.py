"""Answer NLL, left-padded greedy generation, task metrics, adapters loaded from folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gtapp.evaluate import answer_nll, evaluate, evaluate_paths, greedy_decode, load_with_adapter
from gtapp.tasks.base import Example
from gtapp.tasks.universe import make_task, task_names


@pytest.fixture(scope="module")
def micro(micro_zoo):
    from gtapp.models import load_model, load_tokenizer

    path = micro_zoo / "tiny"
    return load_model(path), load_tokenizer(path)


@pytest.fixture(scope="module")
def random_adapter(micro_zoo, tmp_path_factory):
    """A peft adapter folder with nonzero B, saved the stock way."""
    from gtapp.lora.peft_model import attach_lora
    from gtapp.models import ModelPair, load_model

    pair = ModelPair.from_dir(micro_zoo)
    pm = attach_lora(load_model(pair.tiny_path), pair.recipes.tiny)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    folder = tmp_path_factory.mktemp("adapter")
    pm.save_pretrained(str(folder))
    return folder, pm.eval()


def test_answer_nll_matches_transformers_loss_and_ignores_padding(micro):
    model, tok = micro
    from gtapp.data import encode

    exs = [Example("Question: Ann has 2 pears and gets 3 more. How many?\nAnswer:", " 5"),
           Example("Q: x?\nAnswer:", " a much longer answer than the other one"),
           Example("", "plain text for language modelling")]
    for ex in exs:
        enc = encode(tok, ex, 256)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            hf = float(model(input_ids=ids, labels=torch.tensor([enc.labels])).loss)
        ours, n = answer_nll(model, tok, [ex])
        assert n == enc.n_answer_tokens
        assert ours == pytest.approx(hf, rel=1e-5)
    one = answer_nll(model, tok, exs, batch_size=1)
    batched = answer_nll(model, tok, exs, batch_size=3)
    assert batched[1] == one[1]
    assert batched[0] == pytest.approx(one[0], rel=1e-5)
    assert math.isnan(answer_nll(model, tok, [])[0])


@pytest.mark.slow  # the session ci_zoo: about 20 s to build on an idle 2-core machine
def test_left_padded_batch_generation_equals_one_by_one(ci_zoo):
    from gtapp.models import load_model, load_tokenizer

    model, tok = load_model(ci_zoo / "llm"), load_tokenizer(ci_zoo / "llm")
    task = make_task("math/add-fruit-easy", seed=0, n_train=16, n_test=6)
    prompts = [e.prompt for e in task.test] + ["Q:", ""]  # very different lengths -> lots of left padding
    batched = greedy_decode(model, tok, prompts, max_new_tokens=8, batch_size=len(prompts))
    single = [greedy_decode(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    print("ci llm generations:", batched, "answers:", [e.answer for e in task.test])
    assert batched == single
    assert all(isinstance(g, str) for g in batched)
    assert tok.eos_token not in "".join(batched) and tok.pad_token not in "".join(batched)
    assert greedy_decode(model, tok, prompts, max_new_tokens=0) == [""] * len(prompts)


def test_evaluate_generative_and_perplexity_tasks(micro):
    model, tok = micro
    task = make_task("math/add-fruit-easy", seed=0, n_train=16, n_test=8)
    r = evaluate(model, tok, task, limit=5)
    print("micro tiny on math:", r)
    assert r["metric"] == "exact_match" and r["n"] == 5 and 0.0 <= r["value"] <= 1.0
    assert r["answer_nll"] > 0 and r["n_tokens"] > 0 and r["wall_s"] >= 0
    lm = make_task(task_names("lm")[0], seed=0, n_train=4, n_test=4)
    r2 = evaluate(model, tok, lm)
    print("micro tiny on lm:", r2)
    assert r2["metric"] == "perplexity"
    assert r2["value"] == pytest.approx(math.exp(r2["answer_nll"]))
    with pytest.raises(ValueError):
        evaluate(model, tok, task, split="dev")


def test_adapter_loading_from_folder(micro_zoo, random_adapter, tmp_path):
    folder, in_memory = random_adapter
    model, tok = load_with_adapter(micro_zoo / "tiny", folder)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, in_memory(input_ids=ids).logits, atol=1e-6)
    task = make_task("math/add-fruit-easy", seed=0, n_train=16, n_test=6)
    base = evaluate_paths(micro_zoo / "tiny", task)
    adapted = evaluate_paths(micro_zoo / "tiny", task, adapter_dir=folder)
    print("base", base["answer_nll"], "with random adapter", adapted["answer_nll"])
    assert adapted["adapter"] == str(folder) and base["adapter"] is None
    assert adapted["answer_nll"] != pytest.approx(base["answer_nll"])
    assert adapted["answer_nll"] == pytest.approx(answer_nll(in_memory, tok, task.test)[0], rel=1e-5)
    # Only safetensors adapters are loaded.
    (tmp_path / "adapter_config.json").write_text((folder / "adapter_config.json").read_text())
    with pytest.raises(ValueError, match="safetensors"):
        load_with_adapter(micro_zoo / "tiny", tmp_path)
    with pytest.raises(FileNotFoundError):
        load_with_adapter(micro_zoo / "tiny", tmp_path / "missing")


def test_cli_evaluate(micro_zoo, random_adapter, capsys):
    from gtapp.cli import main

    folder, _ = random_adapter
    rc = main(["evaluate", "--zoo", str(micro_zoo), "--which", "tiny", "--adapter", str(folder),
               "--task", "math/add-fruit-easy", "--limit", "4", "--n-test", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    r = json.loads(out)
    print(r)
    assert r["metric"] == "exact_match" and r["n"] == 4 and r["which"] == "tiny" and r["adapter"] == str(folder)
    rc = main(["evaluate", "--zoo", str(micro_zoo), "--task", "no/such-task"])
    assert rc == 2


def test_per_example_scores_add_up_and_truncation_is_counted(micro_zoo):
    from gtapp.evaluate import evaluate
    from gtapp.models import load_model, load_tokenizer
    from gtapp.tasks.base import Example, Task

    model, tok = load_model(micro_zoo / "llm"), load_tokenizer(micro_zoo / "llm")
    long_prompt = " ".join(["the weather was mild and the market was busy"] * 40)
    test = [Example("2 + 2 =", "4"), Example(long_prompt + " so 1 + 1 =", "2"), Example("3 + 4 =", "7")]
    task = Task(name="t", family="math", metric="numeric_exact_match", train=[], test=test, max_new_tokens=4)
    out = evaluate(model, tok, task, max_length=64, per_example=True)
    ex = out["examples"]
    assert len(ex["score"]) == 3 and out["value"] == pytest.approx(sum(ex["score"]) / 3)
    assert out["answer_nll"] == pytest.approx(sum(ex["nll_sum"]) / sum(ex["n_tokens"]), rel=1e-4)
    assert out["n_truncated"] == 1 and all(n >= 1 for n in ex["n_tokens"])  # the answer survives the cut
