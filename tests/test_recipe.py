import json

import pytest
import torch

from gtapp.lora.peft_model import attach_lora, lora_factors
from gtapp.models import ModelPair, load_model
from gtapp.lora.recipe import (LoraRecipe, RecipeError, RecipePair, init_fingerprint, module_sort_key, seeded_lora_a, weights_fingerprint)


def test_seeded_init_is_deterministic_and_module_specific():
    a1 = seeded_lora_a(7, "model.layers.0.self_attn.q_proj", 4, 32)
    a2 = seeded_lora_a(7, "model.layers.0.self_attn.q_proj", 4, 32)
    a3 = seeded_lora_a(7, "model.layers.1.self_attn.q_proj", 4, 32)
    a4 = seeded_lora_a(8, "model.layers.0.self_attn.q_proj", 4, 32)
    assert torch.equal(a1, a2)
    assert not torch.allclose(a1, a3) and not torch.allclose(a1, a4)
    assert a1.abs().max() <= 1 / 32 ** 0.5  # peft's kaiming-uniform bound


def test_attach_lora_uses_recipe_init_and_starts_at_base(micro_zoo):
    pair = ModelPair.from_dir(micro_zoo)
    recipe = pair.recipes.tiny
    base = load_model(pair.tiny_path)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        ref = base(input_ids=ids).logits.clone()
    peft_model = attach_lora(base, recipe)
    factors = lora_factors(peft_model)
    assert set(factors) == set(recipe.shapes)
    for module, (a, b) in factors.items():
        assert torch.equal(a, seeded_lora_a(recipe.init_seed, module, recipe.rank, a.shape[1]))
        assert b.abs().sum() == 0
    with torch.no_grad():
        out = peft_model(input_ids=ids).logits
    assert torch.allclose(out, ref, atol=1e-6)


def test_wrong_base_model_is_refused(micro_zoo):
    pair = ModelPair.from_dir(micro_zoo)
    llm = load_model(pair.llm_path)
    with pytest.raises(RecipeError, match="do not match the recipe"):
        attach_lora(llm, pair.recipes.tiny)


def test_recipe_roundtrip_and_fingerprint(micro_zoo, tmp_path):
    pair = RecipePair.load(micro_zoo / "recipe.json")
    pair.save(tmp_path / "recipe.json")
    again = RecipePair.load(tmp_path)
    assert again == pair
    model = load_model(micro_zoo / "tiny")
    assert weights_fingerprint(model.state_dict()) == pair.tiny.base_fingerprint
    assert init_fingerprint(pair.tiny.init_seed, pair.tiny.rank, pair.tiny.shapes) == pair.tiny.init_fingerprint


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["tiny"].update(rank=0), "rank must be"),
    (lambda d: d["tiny"].pop("init_seed"), "missing key 'init_seed'"),
    (lambda d: d["tiny"].update(init_seed=99), "init_fingerprint does not match"),
    (lambda d: d["tiny"].update(surprise=1), "unknown keys"),
    (lambda d: d["llm"].update(dropout=1.5), "dropout"),
    (lambda d: d.update(format=99), "format"),
])
def test_bad_recipe_files_are_refused(micro_zoo, tmp_path, mutate, message):
    d = json.loads((micro_zoo / "recipe.json").read_text())
    mutate(d)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(d))
    with pytest.raises(RecipeError, match=message):
        RecipePair.load(path)


def test_module_sort_key_orders_layers_numerically():
    names = ["model.layers.10.q_proj", "model.layers.2.q_proj", "model.layers.1.v_proj"]
    assert sorted(names, key=module_sort_key) == ["model.layers.1.v_proj", "model.layers.2.q_proj",
                                                   "model.layers.10.q_proj"]


def test_recipe_from_dict_rejects_non_object():
    with pytest.raises(RecipeError, match="JSON object"):
        LoraRecipe.from_dict([1, 2])
