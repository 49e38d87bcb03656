"""How one recipe's LoRA update is laid out as batched tensors, and factored-form maths on it.

A mapper sees an update as ``{module_type: (dA, B)}`` with

    dA  [N, L_t, r, in_t]    A - A0 (A0 = the recipe's seeded initial A of that module)
    B   [N, L_t, out_t, r]   B (B starts at zero)

for N updates and the L_t layers holding a module of type t. The update of a layer's
weight is ``scale * B @ (A0 + dA)`` (peft's LoRA delta). We never materialise that dense
matrix: squared distances and inner products between two such products come from r x r
Gram matrices (``gtapp.lora.factors``).

The flat layout (``to_flat``) is recipe-module order (``recipe.modules()``), each module's
dA then B, row-major -- the same numbers gtapp.update's UpdateVector flattens, (dA, B).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from gtapp.lora.factors import Factors, product_inner, product_sqdist, product_sqnorm
from gtapp.lora.recipe import LoraRecipe, RecipeError, layer_of, module_type, seeded_lora_a

Tensors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module type -> (dA [N,L,r,in], B [N,L,out,r])


class UpdateSpace:
    """The tensor layout of one recipe's updates (types, layers, shapes, seeded A0)."""

    def __init__(self, recipe: LoraRecipe):
        self.recipe = recipe
        self.rank = recipe.rank
        self.scale = recipe.scale
        self.num_layers = max(recipe.num_layers, 1)
        self.modules = recipe.modules()
        self.types: list[str] = []
        self.by_type: dict[str, list[str]] = {}
        self.shape: dict[str, tuple[int, int]] = {}  # type -> (out, in)
        for m in self.modules:
            t = module_type(m)
            if t not in self.by_type:
                self.types.append(t)
                self.by_type[t] = []
                self.shape[t] = tuple(recipe.shapes[m])
            elif tuple(recipe.shapes[m]) != self.shape[t]:
                raise RecipeError(f"module type '{t}' has different shapes across layers "
                                  f"({self.shape[t]} vs {tuple(recipe.shapes[m])} at {m}); not supported")
            self.by_type[t].append(m)
        self.layers = {t: [layer_of(m) for m in ms] for t, ms in self.by_type.items()}
        self._a0: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- description
    def describe(self) -> dict[str, tuple[int, int, int]]:
        """{type: (rank, out, in)} -- all a network needs to size its per-type maps."""
        return {t: (self.rank, *self.shape[t]) for t in self.types}

    def depth(self, t: str) -> torch.Tensor:
        """Relative depth of each layer holding type t: (layer + 0.5) / num_layers, in (0, 1)."""
        return (torch.tensor(self.layers[t], dtype=torch.float32) + 0.5) / self.num_layers

    def a0(self, t: str) -> torch.Tensor:
        """Seeded initial A's of type t, [L_t, r, in]."""
        if t not in self._a0:
            _, in_f = self.shape[t]
            self._a0[t] = torch.stack([seeded_lora_a(self.recipe.init_seed, m, self.rank, in_f)
                                       for m in self.by_type[t]])
        return self._a0[t]

    @property
    def dim(self) -> int:
        """Length of the flat (dA, B) vector."""
        return sum(len(self.by_type[t]) * self.rank * (o + i) for t, (o, i) in self.shape.items())

    # ----------------------------------------------------------------- conversions
    def check(self, factors: Factors, where: str = "update") -> None:
        missing = set(self.modules) - set(factors)
        extra = set(factors) - set(self.modules)
        if missing or extra:
            raise RecipeError(f"{where}: modules do not match the recipe "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})")
        for m in self.modules:
            a, b = factors[m]
            out_f, in_f = self.recipe.shapes[m]
            if tuple(a.shape) != (self.rank, in_f) or tuple(b.shape) != (out_f, self.rank):
                raise RecipeError(f"{where}: {m} has A {tuple(a.shape)}, B {tuple(b.shape)}; the recipe "
                                  f"expects A ({self.rank}, {in_f}), B ({out_f}, {self.rank})")

    def stack(self, updates: Sequence[Factors]) -> Tensors:
        """Batch N factor dicts into {type: (dA [N,L,r,in], B [N,L,out,r])} (float32)."""
        out = {}
        for t in self.types:
            ms = self.by_type[t]
            a = torch.stack([torch.stack([u[m][0].detach().float().cpu() for m in ms]) for u in updates])
            b = torch.stack([torch.stack([u[m][1].detach().float().cpu() for m in ms]) for u in updates])
            out[t] = (a - self.a0(t), b)
        return out

    def unstack(self, tensors: Tensors) -> list[Factors]:
        """Inverse of :meth:`stack`: N factor dicts with absolute A = A0 + dA."""
        n = next(iter(tensors.values()))[0].shape[0]
        out: list[Factors] = [{} for _ in range(n)]
        for t in self.types:
            da, b = tensors[t]
            a = da.detach() + self.a0(t).to(da)
            for i in range(n):
                for j, m in enumerate(self.by_type[t]):
                    out[i][m] = (a[i, j].clone(), b[i, j].detach().clone())
        return out

    def to_flat(self, tensors: Tensors) -> torch.Tensor:
        """[N, dim] in recipe-module order, each module's dA then B."""
        parts = []
        pos = {}
        for t in self.types:
            for j, m in enumerate(self.by_type[t]):
                pos[m] = (t, j)
        for m in self.modules:
            t, j = pos[m]
            da, b = tensors[t]
            parts.append(da[:, j].reshape(da.shape[0], -1))
            parts.append(b[:, j].reshape(b.shape[0], -1))
        return torch.cat(parts, dim=1)

    def from_flat(self, flat: torch.Tensor) -> Tensors:
        n = flat.shape[0]
        per: dict[str, tuple[list, list]] = {t: ([None] * len(ms), [None] * len(ms)) for t, ms in self.by_type.items()}
        pos = {m: (t, j) for t, ms in self.by_type.items() for j, m in enumerate(ms)}
        off = 0
        for m in self.modules:
            t, j = pos[m]
            out_f, in_f = self.shape[t]
            k = self.rank * in_f
            per[t][0][j] = flat[:, off:off + k].reshape(n, self.rank, in_f)
            off += k
            k = out_f * self.rank
            per[t][1][j] = flat[:, off:off + k].reshape(n, out_f, self.rank)
            off += k
        return {t: (torch.stack(a, 1), torch.stack(b, 1)) for t, (a, b) in per.items()}

    def zeros(self, n: int) -> Tensors:
        return {t: (torch.zeros(n, len(self.by_type[t]), self.rank, i), torch.zeros(n, len(self.by_type[t]), o, self.rank))
                for t, (o, i) in self.shape.items()}


# --------------------------------------------------------------------- factored maths

def absolute(space: UpdateSpace, tensors: Tensors) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{type: (A = A0 + dA, B)}."""
    return {t: (da + space.a0(t).to(da), b) for t, (da, b) in tensors.items()}


def update_metrics(space: UpdateSpace, pred: Tensors, true: Tensors) -> dict[str, torch.Tensor]:
    """Per-update relative Frobenius error and cosine of the whole LLM update (all modules).

    With W_m = scale * B_m A_m: rel_err = sqrt(sum ||W^_m - W*_m||^2 / sum ||W*_m||^2),
    cosine = sum <W^_m, W*_m> / (||W^|| ||W*||). Computed in float64 from Gram matrices.
    """
    p = absolute(space, {t: (a.double(), b.double()) for t, (a, b) in pred.items()})
    q = absolute(space, {t: (a.double(), b.double()) for t, (a, b) in true.items()})
    err = nt = npred = inner = 0
    for t in space.types:
        (pa, pb), (qa, qb) = p[t], q[t]
        err = err + product_sqdist(pa, pb, qa, qb).sum(-1)
        nt = nt + product_sqnorm(qa, qb).sum(-1)
        npred = npred + product_sqnorm(pa, pb).sum(-1)
        inner = inner + product_inner(pa, pb, qa, qb).sum(-1)
    s2 = space.scale ** 2
    return {
        "rel_err": (err / nt.clamp_min(1e-300)).sqrt(),
        "cosine": inner / (npred.sqrt() * nt.sqrt()).clamp_min(1e-300),
        "norm_true": (nt * s2).sqrt(),
        "norm_pred": (npred * s2).sqrt(),
    }


# --------------------------------------------------------------------- normalisation

class Normaliser:
    """Per-coordinate mean and per-module scale of (dA, B), so a mapper works in a
    well-conditioned space: ``z = (x - mean) / s_module`` separately for dA and B.

    Also keeps each module's mean squared product norm ``E||B A||^2`` of the data it was
    fitted on (the weights of the factored loss, so every module counts alike).
    """

    def __init__(self, space: UpdateSpace):
        self.space = space
        self.mean: Tensors = {}
        self.s_a: dict[str, torch.Tensor] = {}
        self.s_b: dict[str, torch.Tensor] = {}
        self.prod2: dict[str, torch.Tensor] = {}

    def fit(self, tensors: Tensors) -> "Normaliser":
        for t, (da, b) in tensors.items():
            ma, mb = da.mean(0), b.mean(0)
            self.mean[t] = (ma, mb)
            sa = (da - ma).pow(2).mean((0, 2, 3)).sqrt()
            sb = (b - mb).pow(2).mean((0, 2, 3)).sqrt()
            # A module that never varies keeps scale 1 (its normalised value is just 0).
            self.s_a[t] = torch.where(sa > 1e-12, sa, torch.ones_like(sa))
            self.s_b[t] = torch.where(sb > 1e-12, sb, torch.ones_like(sb))
            a = da + self.space.a0(t)
            p2 = product_sqnorm(a.double(), b.double()).mean(0).float()
            self.prod2[t] = torch.where(p2 > 1e-30, p2, torch.ones_like(p2))
        return self

    def normalise(self, tensors: Tensors) -> Tensors:
        out = {}
        for t, (da, b) in tensors.items():
            ma, mb = self.mean[t]
            out[t] = ((da - ma.to(da)) / self.s_a[t].to(da)[:, None, None],
                      (b - mb.to(b)) / self.s_b[t].to(b)[:, None, None])
        return out

    def denormalise(self, tensors: Tensors) -> Tensors:
        out = {}
        for t, (za, zb) in tensors.items():
            ma, mb = self.mean[t]
            out[t] = (za * self.s_a[t].to(za)[:, None, None] + ma.to(za),
                      zb * self.s_b[t].to(zb)[:, None, None] + mb.to(zb))
        return out

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        sd = {}
        for t in self.mean:
            sd[f"{prefix}.{t}.mean_a"], sd[f"{prefix}.{t}.mean_b"] = self.mean[t]
            sd[f"{prefix}.{t}.s_a"] = self.s_a[t]
            sd[f"{prefix}.{t}.s_b"] = self.s_b[t]
            sd[f"{prefix}.{t}.prod2"] = self.prod2[t]
        return sd

    def load_state_dict(self, sd: Mapping[str, torch.Tensor], prefix: str) -> "Normaliser":
        for t in self.space.types:
            self.mean[t] = (sd[f"{prefix}.{t}.mean_a"].float(), sd[f"{prefix}.{t}.mean_b"].float())
            self.s_a[t] = sd[f"{prefix}.{t}.s_a"].float()
            self.s_b[t] = sd[f"{prefix}.{t}.s_b"].float()
            self.prod2[t] = sd[f"{prefix}.{t}.prod2"].float()
        return self


def index(tensors: Tensors, idx) -> Tensors:
    """Select updates ``idx`` (a tensor, list or slice) from a batch."""
    return {t: (a[idx], b[idx]) for t, (a, b) in tensors.items()}


def cat(batches: Iterable[Tensors]) -> Tensors:
    batches = list(batches)
    return {t: (torch.cat([x[t][0] for x in batches]), torch.cat([x[t][1] for x in batches])) for t in batches[0]}
