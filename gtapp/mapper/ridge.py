"""RidgeMapper: a linear map between PCA-compressed update spaces -- the bar the GT must clear.

    x = normalised flat TinyLM update (dA, B)   -> z_x = PCA_x(x)   (k_x <= n-1 components)
    y = normalised flat LLM update (dA, B)      -> z_y = PCA_y(y)
    z_y ~ z_x W,  W = (Z_x^T Z_x + alpha I)^-1 Z_x^T Z_y

alpha = lambda * trace(Z_x^T Z_x) / k_x for lambda on a log grid, chosen by the mean
relative Frobenius error of the whole LLM update on the validation runs; then the map is
refitted on all pairs with that alpha.
"""

from __future__ import annotations


import torch

from gtapp.mapper.base import Mapper, pca
from gtapp.mapper.space import Tensors, update_metrics

DEFAULT_LAMBDAS = [10.0 ** e for e in (-4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 2, 3)]


class RidgeMapper(Mapper):
    kind = "ridge"
    refit_on_all = True

    @classmethod
    def default_config(cls) -> dict:
        return {**super().default_config(), "max_components": 64, "lambdas": DEFAULT_LAMBDAS, "lam": None}

    def __init__(self, recipes, config=None):
        super().__init__(recipes, config)
        self.mx = self.vx = self.my = self.vy = self.w = None

    # x, y here are normalised flat [N, D] float64
    def _solve(self, x: torch.Tensor, y: torch.Tensor, lam: float) -> None:
        k = int(self.config["max_components"])
        self.mx, self.vx, zx = pca(x, min(k, max(x.shape[0] - 1, 1)))
        self.my, self.vy, zy = pca(y, min(k, max(y.shape[0] - 1, 1)))
        g = zx.T @ zx
        if g.shape[0] == 0 or zy.shape[1] == 0:  # no variation on one side: predict the mean
            self.w = torch.zeros(zx.shape[1], zy.shape[1], dtype=zx.dtype)
            return
        alpha = lam * float(g.trace()) / g.shape[0]
        self.w = torch.linalg.solve(g + alpha * torch.eye(g.shape[0], dtype=g.dtype), zx.T @ zy)

    def _flat_in(self, x: Tensors) -> torch.Tensor:
        return self.tiny.to_flat(self.norm_in.normalise(x)).double()

    def _flat_out(self, y: Tensors) -> torch.Tensor:
        return self.llm.to_flat(self.norm_out.normalise(y)).double()

    def _fit(self, train_x, train_y, val_x, val_y, progress, pairs=()) -> dict:
        x, y = self._flat_in(train_x), self._flat_out(train_y)
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
                "components": {"x": int(self.vx.shape[0]), "y": int(self.vy.shape[0])}}

    def _refit(self, x: Tensors, y: Tensors) -> None:
        self._solve(self._flat_in(x), self._flat_out(y), self.chosen_lam)

    def _flat_pred(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised flat tiny [N, Dt] -> normalised flat LLM [N, Dl] (float64)."""
        return ((x - self.mx) @ self.vx.T @ self.w) @ self.vy + self.my

    def predict_normalised(self, xn: Tensors) -> Tensors:
        """Normalised tiny tensors -> normalised LLM tensors (the map itself; affine)."""
        dev = next(iter(xn.values()))[0].device
        x = self.tiny.to_flat({t: (a.cpu(), b.cpu()) for t, (a, b) in xn.items()}).double()
        y = self._flat_pred(x)
        return {t: (a.to(dev), b.to(dev)) for t, (a, b) in self.llm.from_flat(y.float()).items()}

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        return self.norm_out.denormalise(self.predict_normalised(self.norm_in.normalise(tiny)))

    def _state(self) -> dict[str, torch.Tensor]:
        return {"ridge.mx": self.mx, "ridge.vx": self.vx, "ridge.my": self.my, "ridge.vy": self.vy,
                "ridge.w": self.w, "ridge.lam": torch.tensor([self.chosen_lam])}

    def _load_state(self, sd) -> None:
        self.mx, self.vx = sd["ridge.mx"].double(), sd["ridge.vx"].double()
        self.my, self.vy = sd["ridge.my"].double(), sd["ridge.vy"].double()
        self.w = sd["ridge.w"].double()
        self.chosen_lam = float(sd["ridge.lam"][0])
