"""Generation on the micro zoo: stock peft adapters that change the LLM, refusals, OOD, CLI."""

import json

import pytest
import torch

from gtapp.lora.recipe import RecipeError, RecipePair, init_fingerprint
from gtapp.lora.validate import AdapterError


@pytest.fixture(scope="module")
def setup(micro_zoo, tmp_path_factory):
    """A small pair set, a GT mapper version trained on it, and two TinyLM adapters."""
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.mapper import GTMapper
    from gtapp.models import ModelPair
    from gtapp.shadow import ShadowConfig, make_pairs
    from gtapp.tasks.universe import make_task, task_names

    root = tmp_path_factory.mktemp("gen")
    task = task_names("math")[1]
    cfg = ShadowConfig(tasks=(task,), subsets=3, subset_size=12, steps=4, snapshot_steps=(2,), batch_size=4,
                       max_length=48, n_train=48, lr=3e-3)
    ps = make_pairs(micro_zoo, cfg, root / "pairs")
    mapper = GTMapper(ps.recipes, {"steps": 30, "d_model": 32, "n_heads": 2, "eval_every": 10})
    mapper.fit(ps)
    mapper.save(root / "mapper")
    pair = ModelPair.from_dir(micro_zoo)
    adapters = []
    for i, n in enumerate((12, 36)):
        t = make_task(task, seed=100 + i, n_train=n)  # "private" data: other examples of the task
        res = finetune(pair.tiny_path, pair.recipes.tiny, t.train,
                       FinetuneConfig(steps=4, batch_size=4, max_length=48, lr=3e-3, seed=i), root / f"org{i}")
        adapters.append(res.adapter_dir)
    return {"root": root, "mapper": root / "mapper", "adapters": adapters, "pair": pair, "zoo": micro_zoo}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_generated_adapter_loads_in_stock_peft_and_changes_the_llm(setup, tmp_path):
    from peft import PeftModel

    from gtapp.generate import generate
    from gtapp.models import load_model

    res = generate(setup["mapper"], [setup["adapters"][0]], tmp_path / "out", zoo=setup["zoo"], merged=True)
    print("timing", res.timing, "ood score", round(res.ood[0]["score"], 3))
    assert res.timing["map_s"] < 1.0 and not res.warnings
    rec = json.loads((tmp_path / "out" / "generate.json").read_text())
    assert rec["mapper"]["kind"] == "gt" and rec["mapper"]["version"] and rec["contributors"][0]["weight"] == 1.0
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    base = load_model(setup["pair"].llm_path)
    ref = _logits(base, ids)
    peft_model = PeftModel.from_pretrained(base, str(res.adapter_dir))
    out = _logits(peft_model, ids)
    diff = float((out - ref).abs().max())
    merged = _logits(load_model(res.merged_dir), ids)
    print(f"max |logit change| from the generated adapter: {diff:.3e}; merged vs peft "
          f"{float((merged - out).abs().max()):.1e}")
    assert diff > 1e-4
    assert torch.allclose(merged, out, atol=1e-4)


def test_mismatched_tiny_recipe_is_refused(setup, tmp_path):
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.generate import generate
    from gtapp.tasks.universe import make_task, task_names

    pair = setup["pair"]
    # an LLM adapter handed in as a TinyLM one: shapes do not match the mapper's tiny recipe
    t = make_task(task_names("math")[1], seed=7, n_train=8)
    llm_ad = finetune(pair.llm_path, pair.recipes.llm, t.train, FinetuneConfig(steps=2, batch_size=4, max_length=48),
                      tmp_path / "llm_ad").adapter_dir
    with pytest.raises(AdapterError) as e:
        generate(setup["mapper"], [llm_ad], tmp_path / "x")
    print("refused:", str(e.value)[:160])
    # a TinyLM adapter trained from another LoRA init (another init_seed): refused by the init check
    tiny = pair.recipes.tiny
    other = RecipePair(type(tiny)(**{**tiny.__dict__, "init_seed": 1,
                                     "init_fingerprint": init_fingerprint(1, tiny.rank, tiny.shapes)}), pair.recipes.llm)
    zoo2 = tmp_path / "zoo2"
    zoo2.mkdir()
    for sub in ("tiny", "llm"):
        (zoo2 / sub).symlink_to(setup["zoo"] / sub)
    other.save(zoo2 / "recipe.json")
    other_ad = finetune(str(zoo2 / "tiny"), other.tiny, t.train, FinetuneConfig(steps=2, batch_size=4, max_length=48),
                        tmp_path / "other_ad").adapter_dir
    with pytest.raises(AdapterError, match="(?i)init"):
        generate(setup["mapper"], [other_ad], tmp_path / "y")
    # a model pair whose recipes are not the mapper's
    with pytest.raises(RecipeError, match="not the mapper's"):
        generate(setup["mapper"], [setup["adapters"][0]], tmp_path / "z", zoo=zoo2)


def test_out_of_distribution_input_is_flagged(setup, tmp_path):
    from gtapp.generate import generate
    from gtapp.lora.peft_format import write_peft_adapter
    from gtapp.lora.validate import load_adapter

    tiny = setup["pair"].recipes.tiny
    f = load_adapter(setup["adapters"][0], tiny).factors
    big = {m: (a, 40 * b) for m, (a, b) in f.items()}
    write_peft_adapter(big, tiny, tmp_path / "big")
    res = generate(setup["mapper"], [tmp_path / "big"], tmp_path / "out")
    print("OOD score of a 40x scaled update:", round(res.ood[0]["score"], 2))
    assert res.ood[0]["ood"] and res.warnings and "out of distribution" in res.warnings[0]


def test_several_adapters_and_cli(setup, tmp_path, capsys):
    from gtapp.cli import main

    rc = main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][0]),
               "--tiny-adapter", str(setup["adapters"][1]), "--zoo", str(setup["zoo"]), "--out", str(tmp_path / "o")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "o" / "adapter_model.safetensors").is_file() and len(out["ood"]) == 2
    rec = json.loads((tmp_path / "o" / "generate.json").read_text())
    weights = [c["weight"] for c in rec["contributors"]]
    print("data-size weights:", weights, rec["combine"]["weighting"])
    assert weights == pytest.approx([0.25, 0.75])  # 12 and 36 examples
    assert all(c["dp"] is False and c["epsilon"] is None for c in rec["contributors"])
    # a mismatched adapter via the CLI: a clear error, exit code 2
    rc = main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(tmp_path / "o"),
               "--out", str(tmp_path / "p")])
    assert rc == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_refine_cli_writes_a_static_adapter_closer_to_the_proxy(setup, tmp_path, capsys):
    """`gtapp generate --refine`: the mapped adapter refined towards the proxy-tuned distribution on
    the pair set's shadow-task text; a stock peft adapter whose record says DP carries over."""
    from gtapp.baselines.distill import kl_to_teacher
    from gtapp.baselines.proxy import load_proxy
    from gtapp.cli import main
    from gtapp.evaluate import load_with_adapter
    from gtapp.tasks.universe import make_task, task_names

    rc = main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][1]),
               "--zoo", str(setup["zoo"]), "--out", str(tmp_path / "r"), "--refine", "--refine-steps", "6"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refine"]["text"]["public_examples"] > 0 and "post-processing" in out["refine"]["privacy"]
    assert (tmp_path / "r" / "adapter_model.safetensors").is_file()
    assert "over the mapped adapter" in out["refine"]["teacher"]  # --refine (always): stacked on the GT's
    teacher, tok = load_proxy(setup["pair"], setup["adapters"][1], llm_adapter_dir=tmp_path / "r" / "mapped")
    held_out = make_task(task_names("math")[1], seed=77, n_train=16, n_test=1).train
    mapped, _ = load_with_adapter(setup["pair"].llm_path, tmp_path / "r" / "mapped")
    refined, _ = load_with_adapter(setup["pair"].llm_path, tmp_path / "r")
    assert kl_to_teacher(refined, teacher, tok, held_out) < kl_to_teacher(mapped, teacher, tok, held_out)
    assert main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][0]),
                 "--tiny-adapter", str(setup["adapters"][1]), "--out", str(tmp_path / "x"), "--refine"]) == 2
    capsys.readouterr()
    # --refine auto: decided from the update's OOD record, said on stderr and in the report
    from gtapp.refine import refine_wanted

    rc = main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][1]),
               "--zoo", str(setup["zoo"]), "--out", str(tmp_path / "a"), "--refine", "auto", "--refine-steps", "6"])
    io = capsys.readouterr()
    auto = json.loads(io.out)
    assert rc == 0 and auto["refine"]["mode"] == "auto" and f"refine=auto: {auto['refine']['reason']}" in io.err
    assert (auto["refine"]["refined"], auto["refine"]["reason"]) == refine_wanted("auto", auto["ood"][0])
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file() == auto["refine"]["refined"]
    if auto["refine"]["refined"]:  # auto refines towards the base LLM's proxy-tuning
        assert auto["refine"]["teacher"].startswith("llm_base + ")
    # --refine-prompts: the samples written after the organisation's public prompts (a CSV here)
    from gtapp.refine import ORG_PROMPTS

    prompts = tmp_path / "public.csv"
    prompts.write_text("prompt,answer\n" + "".join(f"How many apples are {i} and {i + 1}?,-\n" for i in range(12)))
    rc = main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][1]),
               "--zoo", str(setup["zoo"]), "--out", str(tmp_path / "p"), "--refine", "--refine-steps", "4",
               "--refine-prompts", str(prompts)])
    text = json.loads(capsys.readouterr().out)["refine"]["text"]
    assert rc == 0 and (text["prompts_from"], text["organisation_prompts"]) == (ORG_PROMPTS, 12)
    assert main(["generate", "--mapper", str(setup["mapper"]), "--tiny-adapter", str(setup["adapters"][1]),
                 "--zoo", str(setup["zoo"]), "--out", str(tmp_path / "q"), "--refine-prompts", str(prompts)]) == 2
    assert "add --refine" in capsys.readouterr().err


def test_mapper_cli_train_info_eval(setup, tmp_path, capsys):
    from gtapp.cli import main

    pairs = setup["root"] / "pairs"
    assert main(["mapper", "train", "--pairs", str(pairs), "--kind", "ridge", "--out", str(tmp_path / "r")]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["kind"] == "ridge" and card["pair_set"]["version"]
    assert main(["mapper", "info", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == card["version"]
    assert main(["mapper", "eval", "--mapper", str(tmp_path / "r"), "--pairs", str(pairs)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 6 and ev["rel_err_mean"] >= 0
