"""The peft adapter format: gtapp's one reader and writer of adapter folders and its names.

An adapter folder holds ``adapter_config.json`` (peft's LoraConfig), ``adapter_model.safetensors``
(``base_model.model.<module>.lora_A.weight`` r×in and ``.lora_B.weight`` out×r per module) and
gtapp's ``gtapp_recipe.json`` sidecar (the recipe's fingerprints; peft ignores it).

* :func:`factors_from_tensors` turns a loaded state dict into :data:`Factors` (the one place
  keys are mapped to modules; the untrusted path, ``gtapp.lora.validate``, reads the tensors
  itself from validated byte ranges and hands them here too);
* :func:`read_adapter` reads a folder gtapp itself wrote (trusted: shadow runs, generated
  adapters);
* :func:`write_peft_adapter` / :func:`write_peft_config` write one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from gtapp.files import atomic_write_text
from gtapp.lora.factors import Factors, as_factors
from gtapp.lora.recipe import LoraRecipe, RecipeError, recipe_fingerprints

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SIDECAR_NAME = "gtapp_recipe.json"
PEFT_PREFIX = "base_model.model."  # peft's prefix of a wrapped model's module names


def expected_numel(recipe: LoraRecipe) -> int:
    r = recipe.rank
    return sum(r * (o + i) for o, i in recipe.shapes.values())


def adapter_key(module: str, part: str) -> str:
    """The stock peft key of a module's ``lora_A`` / ``lora_B`` weight."""
    return f"{PEFT_PREFIX}{module}.{part}.weight"


def expected_keys(recipe: LoraRecipe) -> dict[str, tuple[str, str, tuple[int, int]]]:
    """key -> (module, "lora_A"|"lora_B", shape) for every tensor the recipe's adapter holds."""
    out = {}
    for module in recipe.modules():
        o, i = recipe.shapes[module]
        out[adapter_key(module, "lora_A")] = (module, "lora_A", (recipe.rank, i))
        out[adapter_key(module, "lora_B")] = (module, "lora_B", (o, recipe.rank))
    return out




def factors_from_tensors(tensors: Mapping[str, torch.Tensor], recipe: LoraRecipe, where: str = "adapter",
                         prefix: str = PEFT_PREFIX) -> Factors:
    """``{module: (A, B)}`` (float32) of every recipe module from a peft state dict; a missing
    module is an error. ``prefix``: what precedes the module name in the keys."""
    out = {}
    for m in recipe.modules():
        ka, kb = f"{prefix}{m}.lora_A.weight", f"{prefix}{m}.lora_B.weight"
        if ka not in tensors or kb not in tensors:
            raise RecipeError(f"{where}: adapter lacks {m}")
        out[m] = (tensors[ka].float(), tensors[kb].float())
    return out


def read_adapter(folder: str | Path, recipe: LoraRecipe) -> Factors:
    """Factors of an adapter folder gtapp itself wrote (trusted: not validated; keys checked).
    Untrusted adapters go through :func:`gtapp.lora.validate.load_adapter`."""
    return factors_from_tensors(load_file(str(Path(folder) / WEIGHTS_NAME)), recipe, str(folder))


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32).contiguous()




def write_peft_config(recipe: LoraRecipe, out_dir: str | Path, base_model_name_or_path: str | None = None,
                      r: int | None = None, alpha: float | None = None) -> Path:
    """Write the one ``adapter_config.json`` gtapp ever serves: built from the recipe (plain LoRA
    on its target modules; rank/alpha as given, default the recipe's), naming the base model
    ``base_model_name_or_path`` (default the recipe's), with no other field a client chose."""
    from peft import LoraConfig

    out_dir = Path(out_dir)
    config = LoraConfig(r=r or recipe.rank, lora_alpha=alpha if alpha is not None else recipe.alpha,
                        lora_dropout=recipe.dropout, target_modules=sorted(recipe.target_modules), bias="none",
                        task_type="CAUSAL_LM", init_lora_weights=True,
                        base_model_name_or_path=base_model_name_or_path or recipe.base_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    return out_dir / CONFIG_NAME


def write_peft_adapter(update: Any, recipe: LoraRecipe, out_dir: str | Path,
                       base_model_name_or_path: str | None = None) -> Path:
    """Write a stock peft LoRA adapter folder loadable by ``PeftModel.from_pretrained``.

    ``update``: an :class:`gtapp.lora.update.UpdateVector` (anything with ``scaled_factors()``:
    each module's own scale is folded into B so that the adapter's ``(lora_alpha / r) · B · A``
    equals the update's ΔW) or raw ``{module: (A, B)}`` factors taken at the recipe's scale. The adapter's rank is the recipe's when every module
    has that rank (alpha = the recipe's), else the largest module rank (factors zero-padded,
    ``lora_alpha = r`` so the scale is 1). Also writes ``gtapp_recipe.json`` (fingerprints;
    peft ignores it). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if hasattr(update, "scaled_factors"):
        items = update.scaled_factors()
    else:
        items = {m: (_f32(a), _f32(b), recipe.scale) for m, (a, b) in as_factors(update).items()}
    missing, extra = set(recipe.shapes) - set(items), set(items) - set(recipe.shapes)
    if missing or extra:
        raise ValueError(f"update does not cover the recipe's modules (missing {sorted(missing)[:3]}, "
                         f"extra {sorted(extra)[:3]})")
    ranks = {a.shape[0] for a, _, _ in items.values()}
    if ranks == {recipe.rank}:
        r, alpha = recipe.rank, recipe.alpha
    else:
        r = max(ranks)
        alpha = float(r)
    target_scale = alpha / r
    tensors = {}
    for m in recipe.modules():
        a, b, scale = items[m]
        o, i = recipe.shapes[m]
        if a.shape[1] != i or b.shape[0] != o:
            raise ValueError(f"{m}: factors give a {b.shape[0]}x{a.shape[1]} update, the recipe's module is {o}x{i}")
        k = a.shape[0]
        a_out = torch.zeros(r, i)
        b_out = torch.zeros(o, r)
        a_out[:k] = a
        b_out[:, :k] = b * (scale / target_scale)
        if not (torch.isfinite(a_out).all() and torch.isfinite(b_out).all()):
            raise ValueError(f"{m}: update has non-finite values")
        tensors[adapter_key(m, "lora_A")] = a_out.contiguous()
        tensors[adapter_key(m, "lora_B")] = b_out.contiguous()
    write_peft_config(recipe, out_dir, base_model_name_or_path, r=r, alpha=alpha)
    tmp = out_dir / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_dir / WEIGHTS_NAME)
    side = {"gtapp_recipe": 1, **recipe_fingerprints(recipe)}
    atomic_write_text(out_dir / SIDECAR_NAME, json.dumps(side, indent=2, sort_keys=True))
    return out_dir
