"""RidgeMapper: a linear map between PCA-compressed update spaces -- the bar the GT must clear.

    x = normalised TinyLM update (dA, B)   -> z_x = per-module PCA scores of x (gtapp.mapper.blocks)
    y = normalised LLM update (dA, B)      -> z_y = per-module PCA scores of y
    z_y ~ z_x W,  W = (Z_x^T Z_x + alpha I)^-1 Z_x^T Z_y

Each module keeps up to ``max_components`` directions (and at most N - 1), so the map is
between a few thousand numbers per update however large the models are; nothing holds an
[N × full update] matrix.

alpha = lambda * trace(Z_x^T Z_x) / k_x for lambda on a log grid, chosen by the mean
relative Frobenius error of the whole LLM update on the validation runs; then the map is
refitted on all pairs with that alpha.
"""

from __future__ import annotations


import torch

from gtapp.mapper.base import Mapper
from gtapp.mapper.blocks import BlockPCA
from gtapp.mapper.space import Tensors, update_metrics

DEFAULT_LAMBDAS = [10.0 ** e for e in (-4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 2, 3)]


class RidgeMapper(Mapper):
    kind = "ridge"
    refit_on_all = True

    @classmethod
    def default_config(cls) -> dict:
        return {**super().default_config(), "max_components": 16, "lambdas": DEFAULT_LAMBDAS, "lam": None}

    def __init__(self, recipes, config=None):
        super().__init__(recipes, config)
        self.pca_x = BlockPCA(self.tiny, int(self.config["max_components"]))
        self.pca_y = BlockPCA(self.llm, int(self.config["max_components"]))
        self.mz = self.w = None

    # x, y here are normalised tensors; the map is between their per-module scores
    def _solve(self, x: Tensors, y: Tensors, lam: float) -> None:
        self.pca_x.fit(x)
        self.pca_y.fit(y)
        zx, _ = self.pca_x.scores(x)
        zy, _ = self.pca_y.scores(y)
        self.mz = zx.mean(0)
        zx = zx - self.mz
        g = zx.T @ zx
        if g.shape[0] == 0 or zy.shape[1] == 0:  # no variation on one side: predict the mean
            self.w = torch.zeros(zx.shape[1], zy.shape[1], dtype=zx.dtype)
            return
        alpha = lam * float(g.trace()) / g.shape[0]
        self.w = torch.linalg.solve(g + alpha * torch.eye(g.shape[0], dtype=g.dtype), zx.T @ zy)

    def _fit(self, train_x, train_y, val_x, val_y, progress, pairs=()) -> dict:
        x, y = self.norm_in.normalise(train_x), self.norm_out.normalise(train_y)
        lams = [float(self.config["lam"])] if self.config["lam"] is not None else list(self.config["lambdas"])
        scores = {}
        if val_x is not None and len(lams) > 1:
            for lam in lams:
                self._solve(x, y, lam)
                m = update_metrics(self.llm, self.predict_tensors(val_x), val_y)
                scores[lam] = float(m["rel_err"].mean())
            best = min(scores, key=scores.get)
        else:
            best = lams[len(lams) // 2] if self.config["lam"] is None else lams[0]
        self.chosen_lam = best
        self._solve(x, y, best)
        return {"lambda": best, "val_rel_err_by_lambda": {f"{k:g}": v for k, v in scores.items()},
                "components": {"x": self.pca_x.width, "y": self.pca_y.width}}

    def _refit(self, x: Tensors, y: Tensors) -> None:
        self._solve(self.norm_in.normalise(x), self.norm_out.normalise(y), self.chosen_lam)

    def predict_normalised(self, xn: Tensors) -> Tensors:
        """Normalised tiny tensors -> normalised LLM tensors (the map itself; affine)."""
        dev = next(iter(xn.values()))[0].device
        zx, _ = self.pca_x.scores({t: (a.cpu(), b.cpu()) for t, (a, b) in xn.items()})
        y = self.pca_y.reconstruct((zx - self.mz) @ self.w)
        return {t: (a.to(dev), b.to(dev)) for t, (a, b) in y.items()}

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        return self.norm_out.denormalise(self.predict_normalised(self.norm_in.normalise(tiny)))

    def _state(self) -> dict[str, torch.Tensor]:
        return {**self.pca_x.state_dict("ridge.pca_x"), **self.pca_y.state_dict("ridge.pca_y"),
                "ridge.mz": self.mz, "ridge.w": self.w, "ridge.lam": torch.tensor([self.chosen_lam])}

    def _load_state(self, sd) -> None:
        self.pca_x.load_state_dict(sd, "ridge.pca_x")
        self.pca_y.load_state_dict(sd, "ridge.pca_y")
        self.mz, self.w = sd["ridge.mz"].double(), sd["ridge.w"].double()
        self.chosen_lam = float(sd["ridge.lam"][0])
