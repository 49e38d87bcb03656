"""An update vector from two full checkpoints (a base model and a fully fine-tuned one), for
comparing a full fine-tune with LoRA updates: each target module's dense ΔW, kept as its
rank-truncated SVD."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from gtapp.lora.peft_format import PEFT_PREFIX
from gtapp.lora.recipe import LoraRecipe, module_sort_key, recipe_fingerprints
from gtapp.lora.update import ModuleUpdate, UpdateVector


def update_from_checkpoints(base_model: Any, finetuned_model: Any, recipe_or_targets: LoraRecipe | Iterable[str],
                        rank: int) -> UpdateVector:
    """From two full checkpoints: ``ΔW = W_ft − W_base`` per target module, kept as its
    rank-``rank`` truncated SVD (``B = U√S``, ``A = √S Vᵀ``, scale 1, initial A zero).

    ``base_model`` / ``finetuned_model``: a local Hugging Face folder (only the target
    weights are read from its safetensors files), a hub id, a loaded ``nn.Module`` or a
    state dict. ``recipe_or_targets``: a recipe (its modules) or module-type names such as
    ``("q_proj", "v_proj")``. ``meta["dropped_energy"]`` is the fraction of ‖ΔW‖²_F the
    truncation discarded (overall), ``meta["dropped_energy_per_module"]`` per module.
    Each module's ΔW is formed densely here: it is what a full checkpoint difference is.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if isinstance(recipe_or_targets, LoraRecipe):
        recipe = recipe_or_targets
        names = {m: f"{m}.weight" for m in recipe.shapes}
        fps = recipe_fingerprints(recipe)
    else:
        recipe, fps, names = None, {}, None
    targets = set(recipe.target_modules) if recipe else set(recipe_or_targets)
    base = _weights(base_model, names, targets)
    ft = _weights(finetuned_model, names if names else {m: f"{m}.weight" for m in base}, targets)
    if set(base) != set(ft):
        raise ValueError(f"the checkpoints' target modules differ: {sorted(set(base) ^ set(ft))[:4]}")
    if not base:
        raise ValueError(f"no weights of modules {sorted(targets)} found in the checkpoints")
    modules, dropped, total_e, dropped_e = {}, {}, 0.0, 0.0
    for module in sorted(base, key=module_sort_key):
        wb, wf = base[module], ft[module]
        if wb.shape != wf.shape:
            raise ValueError(f"{module}: shapes differ ({tuple(wb.shape)} vs {tuple(wf.shape)})")
        if recipe and tuple(wb.shape) != tuple(recipe.shapes[module]):
            raise ValueError(f"{module}: checkpoint shape {tuple(wb.shape)} is not the recipe's "
                             f"{recipe.shapes[module]}")
        wdt = torch.float64 if wb.numel() <= 1 << 22 else torch.float32
        delta = wf.to(wdt) - wb.to(wdt)
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        k = min(rank, s.numel())
        e_all = float((s.double() ** 2).sum())
        e_drop = float((s[k:].double() ** 2).sum())
        root = s[:k].sqrt()
        b = u[:, :k] * root
        a = root[:, None] * vh[:k]
        modules[module] = ModuleUpdate(module, a, b, torch.zeros_like(a, dtype=torch.float32), 1.0)
        dropped[module] = e_drop / e_all if e_all > 0 else 0.0
        total_e += e_all
        dropped_e += e_drop
    meta = {"source": "checkpoints", "rank": rank, "dropped_energy": dropped_e / total_e if total_e > 0 else 0.0,
            "dropped_energy_per_module": dropped,
            "base": _describe(base_model), "finetuned": _describe(finetuned_model)}
    return UpdateVector(fps, modules, meta)



def _describe(obj: Any) -> str:
    return str(obj) if isinstance(obj, (str, Path)) else type(obj).__name__


def _weights(source: Any, names: Mapping[str, str] | None, targets: set[str]) -> dict[str, torch.Tensor]:
    """Target Linear weights ``{module: W}`` from a folder / hub id / module / state dict.

    ``names`` maps module -> state-dict key when known (a recipe); otherwise every
    ``*.layers.N.*.<target>.weight`` key is taken.
    """

    def pick(keys: Iterable[str]) -> dict[str, str]:
        if names is not None:
            return {m: k for m, k in names.items()}
        out = {}
        for k in keys:
            if k.endswith(".weight") and ".layers." in f".{k}":
                m = k[: -len(".weight")]
                if m.rsplit(".", 1)[-1] in targets:
                    out[m] = k
        return out

    if isinstance(source, torch.nn.Module):
        source = source.state_dict()
    if isinstance(source, Mapping):
        sd = {k.removeprefix(PEFT_PREFIX): v for k, v in source.items()}
        want = pick(sd)
        missing = [k for k in want.values() if k not in sd]
        if missing:
            raise ValueError(f"state dict lacks {missing[:3]}")
        return {m: sd[k].detach().to("cpu") for m, k in want.items()}
    path = Path(str(source))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if files:
        from safetensors import safe_open

        handles = {}
        try:
            for f in files:
                handles[f] = safe_open(str(f), "pt")
            index = {k: f for f, h in handles.items() for k in h.keys()}
            want = pick(index)
            missing = [k for k in want.values() if k not in index]
            if missing:
                raise ValueError(f"{path}: checkpoint lacks {missing[:3]}")
            return {m: handles[index[k]].get_tensor(k) for m, k in want.items()}
        finally:
            handles.clear()
    from gtapp.models import load_model

    return _weights(load_model(str(source)), names, targets)
