"""Updates module by module: a per-module PCA, so that nothing holds an [N pairs × full update]
matrix (which, for Qwen2.5-3B -> 7B with LoRA r16 on every projection, is 30M / 40M numbers
per update: 360 / 480 GB for 3,000 pairs).

A *block* is one LoRA module's normalised (dA, B) of N updates, flattened: [N, r·(in+out)].
:class:`BlockPCA` keeps, per module, the block mean and its top ``k`` principal directions,
and turns a batch of updates into *scores*: the concatenation over modules of each module's
k coordinates, [N, Σ_m k_m] (a few thousand numbers for a 7B model), plus each module's
squared residual off its k directions. Ridge maps between such scores, and the OOD reference
measures distances in them (the residuals keep those distances exact).

Memory: one block at a time (N × D_m), plus the directions (k × D_total floats). PCA of a
block is exact (through the N × N Gram matrix, or the D × D covariance) when the block is
small, and randomized (``torch.svd_lowrank``: cost N·D_m·(k + 8)) when both N and D_m are large.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from gtapp.mapper.space import Tensors, UpdateSpace

EXACT_LIMIT = 2048  # both sides of a block above this: randomized PCA


def module_blocks(space: UpdateSpace, tensors: Tensors) -> Iterator[tuple[str, int, torch.Tensor]]:
    """(module type, index within the type, block [N, r·in + out·r]) for every module, in the
    space's order: dA then B, row-major (the same numbers ``UpdateSpace.to_flat`` holds)."""
    for t in space.types:
        da, b = tensors[t]
        for j in range(da.shape[1]):
            yield t, j, torch.cat([da[:, j].reshape(da.shape[0], -1), b[:, j].reshape(b.shape[0], -1)], dim=1)


def _pca_block(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], components [k', D] orthonormal rows) of a block; float64."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    k = min(k, max(n - 1, 0), d)
    if k == 0:
        return mean, torch.zeros(0, d, dtype=torch.float64)
    if min(n, d) > EXACT_LIMIT:
        _, s, v = torch.svd_lowrank(xc, q=min(k + 8, n, d), niter=2)
        comps = v[:, :k].T
        s = s[:k]
    elif n < d:
        evals, evecs = torch.linalg.eigh(xc @ xc.T)
        order = evals.argsort(descending=True)[:k]
        s = evals[order].clamp_min(0).sqrt()
        comps = (evecs[:, order].T @ xc) / s.clamp_min(1e-300)[:, None]
    else:
        evals, evecs = torch.linalg.eigh(xc.T @ xc)
        order = evals.argsort(descending=True)[:k]
        s = evals[order].clamp_min(0).sqrt()
        comps = evecs[:, order].T
    keep = s > (s[0] if s.numel() else 0) * 1e-8  # drop directions with no variance
    return mean, comps[keep].contiguous()


class BlockPCA:
    """Per-module PCA of one recipe's updates (see the module docstring)."""

    def __init__(self, space: UpdateSpace, k: int = 8):
        self.space, self.k = space, int(k)
        self.mean: dict[tuple[str, int], torch.Tensor] = {}
        self.comps: dict[tuple[str, int], torch.Tensor] = {}

    def fit(self, tensors: Tensors) -> "BlockPCA":
        for t, j, block in module_blocks(self.space, tensors):
            self.mean[(t, j)], self.comps[(t, j)] = _pca_block(block, self.k)
        return self

    @property
    def width(self) -> int:
        return sum(c.shape[0] for c in self.comps.values())

    def scores(self, tensors: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [N, width], squared residuals off the kept directions [N]) of a batch."""
        parts, resid = [], None
        for t, j, block in module_blocks(self.space, tensors):
            xc = block.double() - self.mean[(t, j)]
            z = xc @ self.comps[(t, j)].T
            r2 = (xc.pow(2).sum(1) - z.pow(2).sum(1)).clamp_min(0)
            resid = r2 if resid is None else resid + r2
            parts.append(z)
        return torch.cat(parts, dim=1), resid

    def reconstruct(self, z: torch.Tensor) -> Tensors:
        """Tensors {type: (dA, B)} whose every module is its mean plus its directions times ``z``'s
        coordinates of it: the inverse of :meth:`scores` on the kept subspace."""
        n = z.shape[0]
        out, pos = {}, 0
        for t in self.space.types:
            r = self.space.rank
            o, i = self.space.shape[t]
            das, bs = [], []
            for j in range(len(self.space.by_type[t])):
                c = self.comps[(t, j)]
                flat = self.mean[(t, j)] + z[:, pos:pos + c.shape[0]] @ c
                pos += c.shape[0]
                das.append(flat[:, :r * i].reshape(n, r, i))
                bs.append(flat[:, r * i:].reshape(n, o, r))
            out[t] = (torch.stack(das, 1).float(), torch.stack(bs, 1).float())
        return out

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        sd = {}
        for (t, j), m in self.mean.items():
            sd[f"{prefix}.{t}.{j}.mean"] = m.float()
            sd[f"{prefix}.{t}.{j}.comps"] = self.comps[(t, j)].float()
        return sd

    def load_state_dict(self, sd, prefix: str) -> "BlockPCA":
        for t in self.space.types:
            for j in range(len(self.space.by_type[t])):
                self.mean[(t, j)] = sd[f"{prefix}.{t}.{j}.mean"].double()
                self.comps[(t, j)] = sd[f"{prefix}.{t}.{j}.comps"].double()
        return self

    @staticmethod
    def stored(sd, prefix: str) -> Optional[bool]:
        return any(k.startswith(prefix + ".") for k in sd)
