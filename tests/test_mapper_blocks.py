"""Per-module PCA (gtapp.mapper.blocks): ridge and the OOD reference never build an [N × full
update] matrix, and lose nothing the per-module directions keep."""

from __future__ import annotations

import torch

from gtapp.mapper import RidgeMapper
from gtapp.mapper.blocks import BlockPCA, _pca_block, module_blocks
from gtapp.mapper.space import UpdateSpace
from testkit.synthetic import linear_pairs, random_factors, small_recipes


def _batch(space, recipe, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return space.stack([random_factors(recipe, generator=g) for _ in range(n)])


def test_blocks_are_the_flat_update_module_by_module():
    rec = small_recipes().tiny
    space = UpdateSpace(rec)
    x = _batch(space, rec, 5)
    flat = space.to_flat(x)
    blocks = torch.cat([b for _, _, b in module_blocks(space, x)], dim=1)
    # the same numbers, grouped by module type instead of recipe order: same norms per row
    assert blocks.shape == flat.shape
    assert torch.allclose(blocks.pow(2).sum(1), flat.pow(2).sum(1))


def test_scores_and_residuals_keep_distances_exact():
    rec = small_recipes().tiny
    space = UpdateSpace(rec)
    x = _batch(space, rec, 12)
    pca = BlockPCA(space, k=3).fit(x)
    z, r2 = pca.scores(x)
    assert z.shape == (12, pca.width) and pca.width <= 3 * len(space.modules)
    # a row's squared norm around the means = its scores' squared norm + its residual
    centred = sum((b.double() - pca.mean[(t, j)]).pow(2).sum(1) for t, j, b in module_blocks(space, x))
    assert torch.allclose(z.pow(2).sum(1) + r2, centred, rtol=1e-9)
    # with k >= N - 1 each module's directions span its centred data: reconstruction is exact
    full = BlockPCA(space, k=11).fit(x)
    back = full.reconstruct(full.scores(x)[0])
    for t in space.types:
        assert torch.allclose(back[t][0], x[t][0], atol=1e-5) and torch.allclose(back[t][1], x[t][1], atol=1e-5)


def test_randomized_pca_of_a_large_block_matches_the_exact_one():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(3000, 5, generator=g, dtype=torch.float64))[0].T
    x = torch.randn(2100, 5, generator=g, dtype=torch.float64) * torch.tensor([9., 7, 5, 3, 1]) @ basis
    _, comps = _pca_block(x, 5)  # both sides > EXACT_LIMIT: randomized
    assert comps.shape == (5, 3000)
    overlap = comps @ basis.T  # the same subspace: its 5 principal cosines are 1
    assert torch.allclose(torch.linalg.svdvals(overlap), torch.ones(5, dtype=torch.float64), atol=1e-6)


def test_ridge_per_module_recovers_a_linear_relation():
    rec = small_recipes()
    pairs = linear_pairs(rec, n_runs=12, seed=2)
    m = RidgeMapper(rec, {"max_components": 16})
    card = m.fit(pairs)
    assert card["validation"]["rel_err_mean"] < 0.5 * card["validation_mean_baseline"]["rel_err_mean"]
    assert card["fit"]["components"]["x"] == m.pca_x.width and m.pca_x.width <= 16 * len(m.tiny.modules)
