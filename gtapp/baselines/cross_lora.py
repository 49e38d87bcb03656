"""Cross-LoRA (Xia et al., 2025, arXiv 2508.05232): a LoRA moved from the TinyLM to the LLM
with no data and no training — the training-free peer that answers "do the provider's
shadow pairs help at all?".

Per LLM LoRA module (e.g. ``layers.5.self_attn.q_proj``):

1. **Depth**: the TinyLM module of the same type at the same *relative* depth
   (layer ``round(l * (L_tiny - 1) / (L_llm - 1))``).
2. **LoRA-Align**: rank-``k`` truncated SVDs of both base weights, ``W_s ≈ U_s S_s V_sᵀ`` and
   ``W_t ≈ U_t S_t V_tᵀ``, and a linear map between the two subspaces. Where a side of the
   module lives in the residual stream (the input of q/k/v/gate/up, the output of o/down), the
   two models' residual streams are related by the Frobenius-optimal linear map ``H`` between
   their token embeddings (``E_t ≈ E_s Hᵀ``, least squares over the shared vocabulary), and the
   subspace map is ``U_tᵀ H U_s`` (output side) or ``V_sᵀ H⁺ V_t`` (input side). Where it does
   not (attention-head and MLP-internal sides, which share no coordinates), the singular
   directions are matched by rank (the identity). This use of the embeddings is our reading of
   the paper's "Frobenius-optimal linear transformation under dimension mismatch". (A singular
   pair's joint sign is taken from the residual side's alignment.)
3. **LoRA-Shift**: the TinyLM update in its own subspace coordinates, ``C = U_sᵀ ΔW_s V_s``,
   carried across and back out, ``ΔW_t = U_t (A_out C A_in) V_tᵀ``, then factored to the LLM
   recipe's rank (truncated SVD) as a stock peft adapter. Its A is the SVD's, not the recipe's
   seeded A plus a change: a valid adapter for the LLM, but not an input gtapp's mappers or
   upload validator accept as "trained from the recipe's init" (it was not).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gtapp.lora.recipe import LoraRecipe, layer_of, module_type
from gtapp.lora.update import UpdateVector
from gtapp.models import ModelPair, load_model

RESIDUAL_IN = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
RESIDUAL_OUT = {"o_proj", "down_proj"}


def source_module(target: str, tiny: LoraRecipe, llm: LoraRecipe) -> str | None:
    """The TinyLM module of the target's type at the same relative depth (None if none)."""
    kind, layer = module_type(target), layer_of(target)
    src_layer = round(layer * (tiny.num_layers - 1) / (llm.num_layers - 1)) if llm.num_layers > 1 else 0
    candidates = [m for m in tiny.shapes if module_type(m) == kind and layer_of(m) == src_layer]
    return candidates[0] if candidates else None


def embedding_map(tiny_emb: torch.Tensor, llm_emb: torch.Tensor) -> torch.Tensor:
    """H [d_llm, d_tiny] minimising ||E_tiny Hᵀ - E_llm||_F over the shared vocabulary."""
    if tiny_emb.shape[0] != llm_emb.shape[0]:
        raise ValueError(f"the two models' vocabularies differ ({tiny_emb.shape[0]} vs {llm_emb.shape[0]} "
                         "tokens); Cross-LoRA's residual map needs a shared tokenizer")
    return torch.linalg.lstsq(tiny_emb.double(), llm_emb.double()).solution.T


def _svd(w: torch.Tensor, k: int):
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    return u[:, :k], vh[:k].T


def transfer_module(delta_s: torch.Tensor, w_s: torch.Tensor, w_t: torch.Tensor, kind: str,
                    h: torch.Tensor, h_pinv: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """ΔW_t (float64) for one module from the TinyLM's ΔW_s and both base weights."""
    k = k or min(*w_s.shape, *w_t.shape)
    u_s, v_s = _svd(w_s, k)
    u_t, v_t = _svd(w_t, k)
    c = u_s.T @ delta_s.double() @ v_s
    eye = torch.eye(k, dtype=torch.float64)
    a_out = u_t.T @ h @ u_s if kind in RESIDUAL_OUT else None
    a_in = v_s.T @ h_pinv @ v_t if kind in RESIDUAL_IN else None
    # a singular pair (u_i, v_i) is defined up to a joint sign: the rank-matched side takes the
    # sign that the residual side's alignment shows for the same pair
    if a_out is None:
        a_out = torch.diag(_signs(a_in)) if a_in is not None else eye
    if a_in is None:
        a_in = torch.diag(_signs(a_out))
    return u_t @ (a_out @ c @ a_in) @ v_t.T


def _signs(a: torch.Tensor) -> torch.Tensor:
    d = torch.sign(torch.diagonal(a))
    return torch.where(d == 0, torch.ones_like(d), d)


def to_factors(delta_t: torch.Tensor, recipe: LoraRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the recipe's rank with scale * B @ A the best rank-r approximation of ΔW_t."""
    p, sig, qh = torch.linalg.svd(delta_t, full_matrices=False)
    r = recipe.rank
    root = (sig[:r] / recipe.scale).clamp_min(0).sqrt()
    b = p[:, :r] * root
    a = root[:, None] * qh[:r]
    if b.shape[1] < r:  # a module narrower than the rank: pad with zero directions
        b = torch.nn.functional.pad(b, (0, r - b.shape[1]))
        a = torch.nn.functional.pad(a, (0, 0, 0, r - a.shape[0]))
    return a.float(), b.float()


def cross_lora(pair: ModelPair, tiny_update: UpdateVector, rank_k: int | None = None) -> UpdateVector:
    """The LLM update Cross-LoRA makes from ``tiny_update`` (no data, no training)."""
    tiny_sd = load_model(pair.tiny_path).state_dict()
    llm_sd = load_model(pair.llm_path).state_dict()
    emb_key = next(k for k in llm_sd if k.endswith("embed_tokens.weight"))
    h = embedding_map(tiny_sd[emb_key], llm_sd[emb_key])
    h_pinv = torch.linalg.pinv(h)
    tiny, llm = pair.recipes.tiny, pair.recipes.llm
    factors = {}
    for target in llm.modules():
        o, i = llm.shapes[target]
        src = source_module(target, tiny, llm)
        if src is None:
            factors[target] = to_factors(torch.zeros(o, i, dtype=torch.float64), llm)
            continue
        delta_s = tiny_update.dense(src)
        delta_t = transfer_module(delta_s, tiny_sd[f"{src}.weight"], llm_sd[f"{target}.weight"],
                                  module_type(target), h, h_pinv, rank_k)
        factors[target] = to_factors(delta_t, llm)
    return UpdateVector.from_factors(factors, llm, {"source": "cross_lora", "rank_k": rank_k})


def run_cross_lora(pair: ModelPair, tiny_adapter_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the Cross-LoRA LLM adapter for a fine-tuned TinyLM adapter; returns a record."""
    tiny_update = UpdateVector.from_adapter(tiny_adapter_dir, pair.recipes.tiny)
    update = cross_lora(pair, tiny_update)
    update.write_peft(pair.recipes.llm, out_dir)
    return {"adapter_dir": str(out_dir), "data": "none (base weights only)", "training": "none",
            "depth_matching": "relative", "residual_map": "least squares between token embeddings"}
