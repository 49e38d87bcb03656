"""Recipes from model dimensions and synthetic pairs: for tests and the speed benchmark.

``llama_recipe`` builds a LoraRecipe for a Llama/Qwen2-shaped model from its published
dimensions, without weights (so 3B -> 7B shapes can be mapped on a laptop).
``linear_pairs`` makes pairs with a *known* linear relation: each shadow run has a latent
``z``; its TinyLM update is ``P_tiny z`` and its LLM update ``P_llm z`` (plus noise), with
checkpoints along the run scaling the update -- a ground truth a mapper should recover.
"""

from __future__ import annotations

from typing import Sequence

import torch

from gtapp.lora.recipe import LoraRecipe, RecipePair, init_fingerprint
from gtapp.pairset import Pair

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def llama_shapes(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                 head_dim: int | None = None, targets: Sequence[str] = ALL_LINEAR) -> dict[str, tuple[int, int]]:
    """{module: (out, in)} of a Llama/Qwen2 decoder's LoRA targets."""
    hd = head_dim or hidden // heads
    dims = {"q_proj": (heads * hd, hidden), "k_proj": (kv_heads * hd, hidden), "v_proj": (kv_heads * hd, hidden),
            "o_proj": (hidden, heads * hd), "gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden),
            "down_proj": (hidden, intermediate)}
    out = {}
    for layer in range(layers):
        for t in targets:
            part = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            out[f"model.layers.{layer}.{part}.{t}"] = dims[t]
    return out


def llama_recipe(name: str, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                 head_dim: int | None = None, targets: Sequence[str] = ALL_LINEAR, rank: int = 4,
                 alpha: float = 8.0, init_seed: int = 0) -> LoraRecipe:
    shapes = llama_shapes(hidden, layers, heads, kv_heads, intermediate, head_dim, targets)
    return LoraRecipe(base_model=name, base_fingerprint="synthetic:" + name, architecture="LlamaForCausalLM",
                      num_layers=layers, target_modules=tuple(sorted(targets)), rank=rank, alpha=float(alpha),
                      dropout=0.0, init_seed=init_seed, init_fingerprint=init_fingerprint(init_seed, rank, shapes),
                      shapes=shapes)


def small_recipes(targets: Sequence[str] = ("q_proj", "v_proj"), rank: int = 2) -> RecipePair:
    """A tiny (2 layers, width 16) and a larger (3 layers, width 32, GQA) recipe."""
    return RecipePair(llama_recipe("syn-tiny", 16, 2, 2, 2, 32, targets=targets, rank=rank, alpha=2.0 * rank),
                      llama_recipe("syn-llm", 32, 3, 4, 2, 64, targets=targets, rank=rank, alpha=2.0 * rank))


def random_factors(recipe: LoraRecipe, scale_a: float = 1e-3, scale_b: float = 1e-2,
                   generator: torch.Generator | None = None) -> dict:
    """Absolute factors (A = A0 + noise, B = noise) of a random update for ``recipe``."""
    from gtapp.mapper.space import UpdateSpace

    space = UpdateSpace(recipe)
    t = space.zeros(1)
    t = {k: (torch.randn(a.shape, generator=generator) * scale_a, torch.randn(b.shape, generator=generator) * scale_b)
         for k, (a, b) in t.items()}
    return space.unstack(t)[0]


def linear_pairs(recipes: RecipePair, n_runs: int, steps: Sequence[float] = (0.5, 0.75, 1.0), latent: int = 4,
                 noise: float = 0.02, seed: int = 0, scale_a: float = 1e-3, scale_b: float = 1e-2,
                 offset: float = 1.0) -> list[Pair]:
    """Pairs whose tiny and LLM updates are both linear in a per-run latent ``z``.

    tiny = mean_t + P_t z * step (+ noise), llm = mean_l + P_l z * step (+ noise), in
    (dA, B) coordinates scaled by ``scale_a``/``scale_b``. ``offset`` adds a shared mean
    update (what MeanMapper can get right); the z-dependent part is what only a map gets.
    """
    from gtapp.mapper.space import UpdateSpace

    g = torch.Generator().manual_seed(seed)
    spaces = {w: UpdateSpace(getattr(recipes, w)) for w in ("tiny", "llm")}
    dims = {w: s.dim for w, s in spaces.items()}
    proj = {w: torch.randn(d, latent, generator=g) / latent ** 0.5 for w, d in dims.items()}
    mean = {w: offset * torch.randn(d, generator=g) for w, d in dims.items()}
    weights = {}  # per-coordinate scale in flat order: dA entries scale_a, B entries scale_b
    for w, s in spaces.items():
        vec = []
        for m in s.modules:
            o, i = getattr(recipes, w).shapes[m]
            vec.append(torch.full((s.rank * i,), scale_a))
            vec.append(torch.full((o * s.rank,), scale_b))
        weights[w] = torch.cat(vec)
    pairs = []
    for run in range(n_runs):
        z = torch.randn(latent, generator=g)
        for st in steps:
            flats = {}
            for w in ("tiny", "llm"):
                v = (mean[w] + proj[w] @ z) * st + noise * torch.randn(dims[w], generator=g)
                flats[w] = (v * weights[w])[None]
            tiny = spaces["tiny"].unstack(spaces["tiny"].from_flat(flats["tiny"]))[0]
            llm = spaces["llm"].unstack(spaces["llm"].from_flat(flats["llm"]))[0]
            pairs.append(Pair(f"syn{run}@{st}", f"syn{run}", tiny, llm, {"step": st, "z": z.tolist()}))
    return pairs
