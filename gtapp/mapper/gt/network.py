"""The Gradient Transformer network, readable top to bottom (nanoGPT style).

Input: a TinyLM LoRA update as per-module-type batches ``{type: (dA [N,L,r,in], B [N,L,out,r])}``
(already normalised by the mapper). Output: the LLM's update in the same layout for the
LLM's module types and layers.

    tiny (layer, type) chunk ──ChunkIn[type]──► content c + depth(l/L) + type embedding
                         tokens ──Encoder (self-attention)──► memory
    LLM (layer, type) query q = depth(l/L) + type embedding
                         h0 = q + PositionalRouter(q; c)     (a linear read of the tiny update)
                         h0 ──Decoder (self-attn, cross-attn to memory)──► h
                         h ──ChunkOut[type]──► (dA, B) of that LLM module

Depth is *relative* (layer + 0.5) / num_layers encoded with Fourier features, so one
network maps any pair of depths; per-type linear maps are sized from the two recipes, so
any pair of widths works. The decoder is non-autoregressive (all LLM modules are predicted
at once from learned queries), which is what makes mapping one update a single forward pass.

Regression, not language modelling: there is no LayerNorm on the encoder memory nor before
the output heads (they would make the map blind to the update's scale), and the
PositionalRouter (attention weights from positions only) gives the residual stream an exact
linear path from the tiny update to the output, on which the blocks add nonlinear terms.

ChunkIn/ChunkOut come in two flavours:
  * dense (``d_rank=None``): one Linear over the whole flattened chunk r*(in+out) <-> d_model,
    like the reference implementation's input/output projections;
  * rank-factored (``d_rank=k``): each of the r rank-one components (row i of dA, column i
    of B) goes through one shared Linear (in+out) <-> k, and the r*k results are mixed by a
    Linear r*k <-> d_model. Parameters scale with (in+out)*k instead of r*(in+out)*d_model,
    which is what makes 3B -> 7B shapes affordable (see bench/mapper_speed.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GTConfig:
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    mlp_mult: int = 4
    dropout: float = 0.0
    d_rank: Optional[int] = None  # None: dense chunk maps; k: rank-factored chunk maps
    n_freq: int = 6  # Fourier frequencies for relative depth

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- blocks

class MLP(nn.Module):
    def __init__(self, cfg: GTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_mult * cfg.d_model)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Attention(nn.Module):
    """Multi-head attention of queries x over keys/values y (y = x for self-attention); no mask."""

    def __init__(self, cfg: GTConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, y=None):
        y = x if y is None else y
        n, tq, d = x.shape
        tk = y.shape[1]
        h = self.n_heads
        q = self.q(x).view(n, tq, h, d // h).transpose(1, 2)
        k, v = self.kv(y).split(d, dim=2)
        k = k.view(n, tk, h, d // h).transpose(1, 2)
        v = v.view(n, tk, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(out.transpose(1, 2).reshape(n, tq, d)))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: GTConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.mlp = nn.LayerNorm(cfg.d_model), MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: GTConfig):
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln3, self.mlp = nn.LayerNorm(cfg.d_model), MLP(cfg)

    def forward(self, x, memory):
        # memory is NOT layer-normed: its values carry the input update's magnitude through
        # to the output (a LayerNorm there would make the map blind to the update's scale).
        x = x + self.self_attn(self.ln1(x))
        x = x + self.cross_attn(self.ln2(x), memory)
        return x + self.mlp(self.ln3(x))


class DepthEncoding(nn.Module):
    """Relative depth d in (0, 1) -> Fourier features [sin, cos](2^k pi d) -> Linear -> d_model."""

    def __init__(self, cfg: GTConfig):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(cfg.n_freq).float(), persistent=False)
        self.proj = nn.Linear(2 * cfg.n_freq + 1, cfg.d_model)

    def forward(self, depth):  # depth [L] -> [L, d_model]
        x = depth[:, None] * self.freqs
        return self.proj(torch.cat([depth[:, None], x.sin(), x.cos()], dim=1))


class PositionalRouter(nn.Module):
    """Attention whose weights depend only on positions (depth, type), never on content:
    out_u = sum_j softmax_j(q_u . k_j) V c_j is *linear* in the tiny update. It gives every
    LLM query a linear read of the tiny tokens, so the network contains a linear map
    tiny -> LLM along its residual stream (the decoder adds nonlinear corrections); a
    linear map is the bar to clear (ridge), and this path makes it cheap to reach."""

    def __init__(self, cfg: GTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, queries, keys, content):  # [Tq, d], [Tk, d], [N, Tk, d] -> [N, Tq, d]
        tq, d = queries.shape
        tk = keys.shape[0]
        h = self.n_heads
        q = self.q(queries).view(tq, h, d // h).transpose(0, 1)  # [h, Tq, dh]
        k = self.k(keys).view(tk, h, d // h).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # [h, Tq, Tk]
        v = self.v(content).view(content.shape[0], tk, h, d // h).transpose(1, 2)  # [N, h, Tk, dh]
        out = (att.unsqueeze(0) @ v).transpose(1, 2).reshape(content.shape[0], tq, d)
        return self.proj(out)


# ----------------------------------------------------------------------------- chunk maps

class ChunkIn(nn.Module):
    """One module's (dA [.., r, in], B [.., out, r]) -> a d_model token."""

    def __init__(self, rank: int, out_f: int, in_f: int, cfg: GTConfig):
        super().__init__()
        self.rank, self.out_f, self.in_f, self.d_rank = rank, out_f, in_f, cfg.d_rank
        if cfg.d_rank is None:
            self.proj = nn.Linear(rank * (in_f + out_f), cfg.d_model)
        else:
            self.comp = nn.Linear(in_f + out_f, cfg.d_rank)
            self.proj = nn.Linear(rank * cfg.d_rank, cfg.d_model)

    def forward(self, da, b):
        lead = da.shape[:-2]
        if self.d_rank is None:
            return self.proj(torch.cat([da.reshape(*lead, -1), b.reshape(*lead, -1)], dim=-1))
        comps = torch.cat([da, b.transpose(-1, -2)], dim=-1)  # [.., r, in+out]: rank-one components
        return self.proj(self.comp(comps).reshape(*lead, -1))


class ChunkOut(nn.Module):
    """A d_model state -> one module's (dA [.., r, in], B [.., out, r]). Starts at zero."""

    def __init__(self, rank: int, out_f: int, in_f: int, cfg: GTConfig):
        super().__init__()
        self.rank, self.out_f, self.in_f, self.d_rank = rank, out_f, in_f, cfg.d_rank
        # No LayerNorm before the head (unlike a language model's ln_f): the residual stream's
        # scale is the predicted update's scale.
        if cfg.d_rank is None:
            self.proj = nn.Linear(cfg.d_model, rank * (in_f + out_f))
            last = self.proj
        else:
            self.proj = nn.Linear(cfg.d_model, rank * cfg.d_rank)
            self.comp = nn.Linear(cfg.d_rank, in_f + out_f)
            last = self.comp
        # Zero output at init: the mapper predicts the shadow mean until it learns otherwise.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, h):
        lead = h.shape[:-1]
        if self.d_rank is None:
            y = self.proj(h)
            k = self.rank * self.in_f
            return y[..., :k].reshape(*lead, self.rank, self.in_f), \
                y[..., k:].reshape(*lead, self.out_f, self.rank)
        comps = self.comp(self.proj(h).reshape(*lead, self.rank, self.d_rank))  # [.., r, in+out]
        return comps[..., :self.in_f], comps[..., self.in_f:].transpose(-1, -2)


# ----------------------------------------------------------------------------- the model

class GradientTransformer(nn.Module):
    """Maps a TinyLM update to an LLM update (both normalised), any depths and widths.

    ``tiny_types``/``llm_types``: {type: (rank, out, in)} from UpdateSpace.describe().
    forward(tiny, tiny_depth, llm_depth): tiny = {type: (dA, B)} batched [N, L_t, ...];
    *_depth = {type: relative depths [L_t]}; returns {llm type: (dA, B)} [N, L_u, ...].
    """

    def __init__(self, tiny_types: dict, llm_types: dict, cfg: GTConfig):
        super().__init__()
        self.cfg = cfg
        self.tiny_types = {t: tuple(v) for t, v in tiny_types.items()}
        self.llm_types = {t: tuple(v) for t, v in llm_types.items()}
        self.chunk_in = nn.ModuleDict({t: ChunkIn(*v, cfg) for t, v in self.tiny_types.items()})
        self.chunk_out = nn.ModuleDict({t: ChunkOut(*v, cfg) for t, v in self.llm_types.items()})
        self.type_in = nn.ParameterDict({t: nn.Parameter(0.02 * torch.randn(cfg.d_model)) for t in self.tiny_types})
        self.type_out = nn.ParameterDict({t: nn.Parameter(0.02 * torch.randn(cfg.d_model)) for t in self.llm_types})
        self.depth_in = DepthEncoding(cfg)
        self.depth_out = DepthEncoding(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.route = PositionalRouter(cfg)
        self.encoder = nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.n_enc_layers)])
        self.decoder = nn.ModuleList([DecoderBlock(cfg) for _ in range(cfg.n_dec_layers)])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tiny: dict, tiny_depth: dict, llm_depth: dict) -> dict:
        # 1. one token per (tiny layer, module type): content + where it sits
        content, where = [], []
        for t in self.tiny_types:
            da, b = tiny[t]
            c = self.chunk_in[t](da, b)  # [N, L_t, d], linear in the update
            content.append(c)
            where.append((self.depth_in(tiny_depth[t].to(c)) + self.type_in[t]).expand_as(c[0]))
        content, where = torch.cat(content, dim=1), torch.cat(where, dim=0)
        x = self.drop(content + where)
        # 2. encoder: the tiny layers look at each other
        for block in self.encoder:
            x = block(x)
        memory = x
        # 3. one learned query per (LLM layer, module type)
        queries, sizes = [], []
        for t in self.llm_types:
            q = self.depth_out(llm_depth[t].to(x)) + self.type_out[t]  # [L_u, d]
            queries.append(q)
            sizes.append(q.shape[0])
        q = torch.cat(queries, dim=0)
        # 4. each query starts from a linear read of the tiny tokens, routed by position only
        #    (which tiny layers/types feed which LLM layer/type); the decoder then refines it
        h = q.unsqueeze(0) + self.route(q, where, content)
        # 5. decoder: queries attend to each other and to the tiny update
        for block in self.decoder:
            h = block(h, memory)
        # 6. per-type heads give each LLM module's (dA, B)
        out = {}
        for t, part in zip(self.llm_types, h.split(sizes, dim=1)):
            out[t] = self.chunk_out[t](part)
        return out
