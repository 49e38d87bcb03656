"""LoRA on a loaded model: attach it with the recipe's seeded initial A (B = 0, so the wrapped
model starts exactly at the base model), and read back the live factors."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from gtapp.lora.factors import Factors
from gtapp.lora.peft_format import PEFT_PREFIX
from gtapp.lora.recipe import LoraRecipe, RecipeError, seeded_lora_a, weights_fingerprint


def check_base(model: PreTrainedModel, recipe: LoraRecipe) -> None:
    """Refuse a base model whose weights are not the recipe's base checkpoint."""
    fp = weights_fingerprint(model.state_dict())
    if fp != recipe.base_fingerprint:
        raise RecipeError(
            f"base model weights do not match the recipe (fingerprint {fp[:12]} vs recipe "
            f"{recipe.base_fingerprint[:12]}): load the exact checkpoint the recipe was made from")


def lora_config(recipe: LoraRecipe) -> LoraConfig:
    return LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                      target_modules=list(recipe.target_modules), bias="none",
                      task_type="CAUSAL_LM", init_lora_weights=True)


def attach_lora(model: PreTrainedModel, recipe: LoraRecipe, verify_base: bool = True) -> PeftModel:
    """Wrap ``model`` with LoRA per the recipe and set the recipe's seeded initial weights.

    A = the recipe's seeded A, B = 0, so the wrapped model starts exactly at the base model.
    """
    if verify_base:
        check_base(model, recipe)
    peft_model = get_peft_model(model, lora_config(recipe))
    found = set()
    with torch.no_grad():
        for name, mod in peft_model.named_modules():
            if not hasattr(mod, "lora_A") or "default" not in getattr(mod, "lora_A", {}):
                continue
            module = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
            if module not in recipe.shapes:
                raise RecipeError(f"LoRA module '{module}' is not in the recipe")
            a = mod.lora_A["default"].weight
            a.copy_(seeded_lora_a(recipe.init_seed, module, recipe.rank, a.shape[1]).to(a))
            mod.lora_B["default"].weight.zero_()
            found.add(module)
    missing = set(recipe.shapes) - found
    if missing:
        raise RecipeError(f"recipe modules not present in the model: {sorted(missing)[:5]}")
    return peft_model


def lora_factors(peft_model: torch.nn.Module) -> Factors:
    """Current (A, B) of every LoRA module, keyed by recipe module name, detached on CPU float32."""
    out = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            module = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
            # Opacus wraps the model: strip its prefix too.
            module = module.removeprefix("_module.").removeprefix(PEFT_PREFIX)
            out[module] = (mod.lora_A["default"].weight.detach().float().cpu().clone(),
                           mod.lora_B["default"].weight.detach().float().cpu().clone())
    return out
