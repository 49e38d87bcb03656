"""Output perturbation: clip a TinyLM update and add calibrated Gaussian noise.

The paper's second DP option, for organisations that fine-tuned without DP-SGD:

    v = flat (dA, B) of the update          (gtapp.update's flat layout, seeded basis)
    v_c = v * min(1, C / ||v||_2)           (clip the global L2 norm to C)
    v~ = v_c + N(0, sigma^2 I),  sigma = gtapp.privacy.gaussian_sigma_for(eps, delta, Delta)

**Sensitivity.** Default ``neighbouring="replace"``: Delta = 2C. Two neighbouring datasets
can give *any* two clipped updates in the C-ball, which are at most 2C apart; this holds
for replace-one and for add/remove-one adjacency alike, so it is the sound choice for a
whole fine-tune's output. ``neighbouring="add_remove"`` uses Delta = C, gtapp.privacy's
convention for a sum in which one example's contribution is clipped to C; a fine-tune's
output is not such a sum, so use it only when the update has that structure. The report
states which was used.

The initial A0 is public (the recipe's seed), so releasing A0 + dA~ is post-processing.
``parts="b"`` releases only B (clipped and noised) with A = A0: dA barely moves in a
fine-tune, dropping it is post-processing, and the noise then lands on fewer coordinates
(noise on dA can also push A outside the validator's init tolerance, so a ``"both"``
release at small ε may be refused as an upload).
Noise of std sigma in every one of D coordinates has norm about sigma * sqrt(D), usually
far larger than C: the report gives that ratio so nobody mistakes the result for signal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from gtapp import privacy
from gtapp.lora.factors import Factors, as_factors
from gtapp.mapper.space import UpdateSpace
from gtapp.lora.recipe import LoraRecipe

NEIGHBOURING = {"replace": 2.0, "add_remove": 1.0}


@dataclass
class PerturbReport:
    mechanism: str
    epsilon: float  # what the released update satisfies (recomputed from sigma)
    delta: float
    target_epsilon: float
    sigma: float
    clip_norm: float
    sensitivity: float
    neighbouring: str
    norm_before: float
    norm_clipped: float
    clipped: bool
    dimension: int
    expected_noise_norm: float
    noise_to_signal: float
    seed: Optional[int]
    parts: str = "both"

    def to_dict(self) -> dict:
        return asdict(self)


def perturb_update(update, recipe: LoraRecipe, clip_norm: float, epsilon: float, delta: float,
                   neighbouring: str = "replace", seed: Optional[int] = None,
                   parts: str = "both") -> tuple[Factors, PerturbReport]:
    """Clip ``update`` (factors or UpdateVector of ``recipe``) to ``clip_norm`` and add Gaussian
    noise for (``epsilon``, ``delta``)-DP; returns (noisy factors, report).

    ``parts``: ``"both"`` releases (dA, B); ``"b"`` releases B only (A = A0)."""
    if parts not in ("both", "b"):
        raise ValueError(f"parts must be 'both' or 'b', got {parts!r}")
    if neighbouring not in NEIGHBOURING:
        raise ValueError(f"neighbouring must be one of {sorted(NEIGHBOURING)}, got {neighbouring!r}")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    space = UpdateSpace(recipe)
    f = as_factors(update)
    space.check(f, "update")
    x = space.stack([f])
    if parts == "b":
        x = {t: (torch.zeros_like(a), b) for t, (a, b) in x.items()}
    v = space.to_flat(x)[0].double()
    mask = space.to_flat({t: (torch.zeros_like(a), torch.ones_like(b)) if parts == "b" else
                          (torch.ones_like(a), torch.ones_like(b)) for t, (a, b) in x.items()})[0].bool()
    norm = float(v.norm())
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    v = v * factor
    sens = NEIGHBOURING[neighbouring] * clip_norm
    sigma = privacy.gaussian_sigma_for(epsilon, delta, sens)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    noisy = v + sigma * torch.randn(v.shape, generator=g, dtype=torch.float64) * mask
    out = space.unstack(space.from_flat(noisy[None].float()))[0]
    d = int(mask.sum())
    report = PerturbReport(
        mechanism="output perturbation: L2 clipping + Gaussian noise (analytic Gaussian mechanism)",
        epsilon=privacy.gaussian_epsilon(sigma, delta, sens), delta=delta, target_epsilon=epsilon, sigma=sigma,
        clip_norm=clip_norm, sensitivity=sens, neighbouring=neighbouring, norm_before=norm,
        norm_clipped=norm * factor, clipped=factor < 1.0, dimension=d,
        expected_noise_norm=sigma * math.sqrt(d), noise_to_signal=sigma * math.sqrt(d) / max(norm * factor, 1e-30),
        seed=seed, parts=parts)
    return out, report


def perturb_adapter(adapter_dir, recipe: LoraRecipe, out_dir, clip_norm: float, epsilon: float, delta: float,
                    neighbouring: str = "replace", seed: Optional[int] = None, parts: str = "both") -> PerturbReport:
    """Validate an adapter, perturb it, write a stock peft adapter + ``perturb.json`` to ``out_dir``."""
    import json
    from pathlib import Path

    from gtapp.lora.peft_format import write_peft_adapter
    from gtapp.lora.validate import load_adapter

    checked = load_adapter(adapter_dir, recipe)
    noisy, report = perturb_update(checked.factors, recipe, clip_norm, epsilon, delta, neighbouring, seed, parts)
    out = Path(out_dir)
    write_peft_adapter(noisy, recipe, out, base_model_name_or_path=checked.summary.base_model_name_or_path)
    (out / "perturb.json").write_text(json.dumps({"source_sha256": checked.summary.sha256, **report.to_dict()},
                                                 indent=2))
    return report
