"""LoRA factors and the algebra on them, without ever forming a dense ΔW.

A module's update is held as its factors ``(A, B)``: ``A`` is r×in, ``B`` out×r, and the
weight update is ``scale · B · A``. :data:`Factors` maps module names to ``(A, B)``.

Inner products, norms and distances of such products come from r×r Gram matrices:

    ⟨B1A1, B2A2⟩_F = tr((B1ᵀB2)(A2A1ᵀ))
    ‖B1A1 − B2A2‖²_F = ‖B1A1‖² + ‖B2A2‖² − 2⟨B1A1, B2A2⟩

The functions here are batched: every leading dimension (runs, pairs, layers) is kept, so
one call covers K runs of a batched fine-tune or N pairs of a mapper's batch alike.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A r×in, B out×r), absolute factors


def as_factors(update: Any) -> Factors:
    """``{module: (A, B)}`` from a factors mapping, an :class:`gtapp.lora.update.UpdateVector`,
    or anything exposing modules with ``a``/``b``."""
    if isinstance(update, Mapping):
        out = {}
        for m, v in update.items():
            if hasattr(v, "a") and hasattr(v, "b"):
                out[m] = (v.a, v.b)
            else:
                a, b = v
                out[m] = (a, b)
        return out
    mods = getattr(update, "modules", None)
    if isinstance(mods, Mapping):
        return as_factors(mods)
    if hasattr(update, "factors") and callable(update.factors):
        return as_factors(update.factors())
    raise TypeError(f"cannot read LoRA factors from a {type(update).__name__}")


def product_inner(a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """⟨B1 A1, B2 A2⟩_F per leading index ((..., r, in) and (..., out, r) factors), via r×r Grams."""
    gb = b1.transpose(-1, -2) @ b2  # [..., r1, r2]
    ga = a2 @ a1.transpose(-1, -2)  # [..., r2, r1]
    return (gb * ga.transpose(-1, -2)).sum((-1, -2))


def product_sqnorm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖B A‖²_F per leading index."""
    return product_inner(a, b, a, b)


def product_sqdist(a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """‖B1 A1 − B2 A2‖²_F per leading index (clamped at 0 against round-off)."""
    return (product_sqnorm(a1, b1) + product_sqnorm(a2, b2) - 2 * product_inner(a1, b1, a2, b2)).clamp_min(0)
