"""Step 5 and the result: every tensor finite, A still correlated with the recipe's seeded
A0 (the init check), and the summary the dashboard shows."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gtapp.lora.factors import product_sqnorm
from gtapp.lora.peft_format import CONFIG_NAME, SIDECAR_NAME, WEIGHTS_NAME, adapter_key
from gtapp.lora.recipe import LoraRecipe, layer_of, recipe_fingerprints, seeded_lora_a
from gtapp.lora.validate.common import Limits, AdapterError, _read_bounded, _strict_json
from gtapp.lora.validate.config import check_config, check_sidecar
from gtapp.lora.validate.container import AdapterFiles
from gtapp.lora.validate.header import DTYPE_NAMES, _read_tensors, check_header, read_safetensors_header

@dataclass
class AdapterSummary:
    """What the dashboard shows about an accepted adapter."""

    modules: list[str]
    rank: int
    alpha: float
    scale: float
    dtype: str  # "float32", or e.g. "mixed (bfloat16, float32)"
    num_parameters: int
    total_norm: float  # ‖ΔW‖_F over all modules, ΔW = scale · B · A
    module_norms: dict[str, float]
    layer_norms: dict[int, float]
    init_distance: dict[str, float]  # ‖A − A0‖_F / ‖A0‖_F per module
    file_sizes: dict[str, int]
    sha256: str  # of adapter_model.safetensors
    source_kind: str  # "folder" | "zip" | "files"
    base_model_name_or_path: str | None = None
    peft_version: str | None = None
    recipe_fingerprints: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    init_cosine: float = 1.0  # cosine between all of A and the recipe's seeded A0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_norms"] = {str(k): v for k, v in self.layer_norms.items()}
        return d

    def format(self) -> str:
        lines = [
            f"adapter OK: {len(self.modules)} LoRA modules, rank {self.rank}, alpha {self.alpha:g} "
            f"(scale {self.scale:g}), {self.dtype}, {self.num_parameters} parameters",
            "  files: " + ", ".join(f"{k} {v} B" for k, v in self.file_sizes.items()),
            f"  sha256({WEIGHTS_NAME}) = {self.sha256}",
            f"  ‖ΔW‖_F = {self.total_norm:.6g}; cosine(A, seeded A0) = {self.init_cosine:.4g}; "
            f"max ‖A−A0‖/‖A0‖ = {max(self.init_distance.values(), default=0.0):.4g}",
            "  per layer ‖ΔW‖_F: " + ", ".join(f"{k}: {v:.4g}" for k, v in sorted(self.layer_norms.items())),
        ]
        if self.base_model_name_or_path:
            lines.append(f"  base_model_name_or_path (informational): {self.base_model_name_or_path}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


@dataclass
class ValidatedAdapter:
    """An accepted adapter: its summary, its config and its factors (float32, CPU)."""

    summary: AdapterSummary
    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A r×in, B out×r)
    files: "AdapterFiles | None" = None  # where the checked files are (gone if extracted to a temp folder)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_files(files: AdapterFiles, recipe: LoraRecipe, limits: Limits) -> ValidatedAdapter:
    cfg_fix = "re-save the adapter with peft's save_pretrained"
    config = _strict_json(_read_bounded(files.config, limits.max_config_bytes, CONFIG_NAME, cfg_fix),
                          CONFIG_NAME, cfg_fix)
    warnings = check_config(config, recipe)
    if files.sidecar is not None:
        side_fix = f"delete {SIDECAR_NAME} or write it with gtapp"
        check_sidecar(_strict_json(_read_bounded(files.sidecar, limits.max_sidecar_bytes, SIDECAR_NAME, side_fix),
                                   SIDECAR_NAME, side_fix), recipe)
    header = read_safetensors_header(files.weights, limits.weights_bytes(recipe), limits.max_header_bytes,
                                     limits.keys(recipe))
    check_header(header, recipe)
    tensors = _read_tensors(files.weights, header)
    for key, t in tensors.items():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise AdapterError(f"{WEIGHTS_NAME}: tensor {key!r} contains {n_nan} NaN and {n_inf} Inf values; the "
                               f"fine-tune diverged: lower the learning rate or clip gradients and train again")
    factors, init_distance, module_norms = {}, {}, {}
    dot = a_sq = a0_sq = 0.0
    n_entries = 0
    for module in recipe.modules():
        a = tensors[adapter_key(module, "lora_A")].float()
        b = tensors[adapter_key(module, "lora_B")].float()
        a0 = seeded_lora_a(recipe.init_seed, module, recipe.rank, recipe.shapes[module][1])
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise AdapterError(f"{WEIGHTS_NAME}: {module} overflows float32; train again with a lower learning rate")
        dist = float((a.double() - a0.double()).norm() / a0.double().norm().clamp_min(1e-30))
        dot += float((a.double() * a0.double()).sum())
        a_sq += float(a.double().pow(2).sum())
        a0_sq += float(a0.double().pow(2).sum())
        n_entries += a.numel()
        init_distance[module] = dist
        ad, bd = a.double(), b.double()
        module_norms[module] = recipe.scale * math.sqrt(max(0.0, float(product_sqnorm(ad, bd))))
        factors[module] = (a, b)
    init_cosine = dot / max(math.sqrt(a_sq * a0_sq), 1e-30)
    needed = max(limits.init_min_cosine, limits.init_z / math.sqrt(max(n_entries, 1)))
    if not limits.init_known and not init_cosine >= needed:
        raise AdapterError(
            f"{WEIGHTS_NAME}: LoRA A does not match the recipe's seeded initialisation (init_fingerprint "
            f"{recipe.init_fingerprint[:12]}; cosine(A, A0) = {init_cosine:.3g} over {n_entries} entries, "
            f"needed >= {needed:.3g}): fine-tune with the recipe's init (gtapp.models.attach_lora sets it)")
    layer_sq: dict[int, float] = {}
    for module, norm in module_norms.items():
        try:
            layer = layer_of(module)
        except ValueError:
            layer = -1
        layer_sq[layer] = layer_sq.get(layer, 0.0) + norm ** 2
    dtypes = sorted({DTYPE_NAMES[e.dtype] for e in header.entries.values()})
    sizes = {CONFIG_NAME: files.config.stat().st_size, WEIGHTS_NAME: header.file_size}
    if files.sidecar is not None:
        sizes[SIDECAR_NAME] = files.sidecar.stat().st_size
    summary = AdapterSummary(
        modules=recipe.modules(), rank=recipe.rank, alpha=recipe.alpha, scale=recipe.scale,
        dtype=dtypes[0] if len(dtypes) == 1 else f"mixed ({', '.join(dtypes)})",
        num_parameters=sum(t.numel() for t in tensors.values()),
        total_norm=math.sqrt(sum(n ** 2 for n in module_norms.values())),
        module_norms=module_norms, layer_norms={k: math.sqrt(v) for k, v in sorted(layer_sq.items())},
        init_distance=init_distance, init_cosine=init_cosine, file_sizes=sizes, sha256=_sha256(files.weights), source_kind=files.kind,
        base_model_name_or_path=config.get("base_model_name_or_path"), peft_version=config.get("peft_version"),
        recipe_fingerprints=recipe_fingerprints(recipe), warnings=warnings,
    )
    return ValidatedAdapter(summary, config, factors, files)
