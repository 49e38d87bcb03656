"""MeanMapper: the mean of the shadow LLM updates, whatever the input.

The provider-only baseline: it uses no private information at all, so anything that does
not beat it has learned nothing from the organisation's TinyLM update. The mean is taken
over factors (dA, B) in the LLM recipe's shared seeded basis -- with A barely moving,
``B A0`` is linear in B, so this is (nearly) the mean of the dense updates too.
"""

from __future__ import annotations

from gtapp.mapper.base import Mapper
from gtapp.mapper.space import Tensors


class MeanMapper(Mapper):
    kind = "mean"
    refit_on_all = True  # no hyperparameters: the final mean is over every pair

    def _fit(self, train_x, train_y, val_x, val_y, progress, pairs=()) -> dict:
        return {"note": "predicts the mean shadow LLM update; ignores its input"}

    def _refit(self, x: Tensors, y: Tensors) -> None:
        return None  # the normaliser's mean, refitted on all pairs, is the prediction

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        n = next(iter(tiny.values()))[0].shape[0]
        return {t: (ma.expand(n, *ma.shape).clone(), mb.expand(n, *mb.shape).clone())
                for t, (ma, mb) in self.norm_out.mean.items()}
