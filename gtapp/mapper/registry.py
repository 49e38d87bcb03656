"""The mapper kinds by name, and reading a mapper version folder back (which needs every kind):
a module of its own, above base.py and the kinds, so that no kind and base import each other."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Optional, Sequence

from safetensors.torch import load_file

from gtapp.lora.recipe import RecipePair
from gtapp.mapper.base import CARD, CONFIG, MAPPER_FORMAT, RECIPE, WEIGHTS, Mapper
from gtapp.mapper.mean import MeanMapper
from gtapp.mapper.ridge import RidgeMapper
from gtapp.mapper.gt import GTMapper


def mapper_classes() -> dict[str, type]:
    return {"gt": GTMapper, "ridge": RidgeMapper, "mean": MeanMapper}


def make_mapper(kind: str, recipes: RecipePair, config: Optional[dict] = None) -> Mapper:
    classes = mapper_classes()
    if kind not in classes:
        raise ValueError(f"unknown mapper kind '{kind}'; choose one of {sorted(classes)}")
    return classes[kind](recipes, config)


def load_mapper(mapper_dir: str | Path, device: str | None = None) -> Mapper:
    """Load a mapper version folder written by :meth:`Mapper.save`."""
    d = Path(mapper_dir)
    for name in (WEIGHTS, CONFIG, RECIPE):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found: is {d} a mapper version folder?")
    cfg = json.loads((d / CONFIG).read_text())
    if cfg.get("format") != MAPPER_FORMAT:
        raise ValueError(f"{d}: mapper format {cfg.get('format')!r}, expected {MAPPER_FORMAT}")
    recipes = RecipePair.load(d / RECIPE)
    config = dict(cfg.get("config") or {})
    if device is not None and "device" in config:
        config["device"] = device
    mapper = make_mapper(cfg["kind"], recipes, config)
    mapper.load_state_dict(load_file(str(d / WEIGHTS)))
    if (d / CARD).is_file():
        mapper.card = json.loads((d / CARD).read_text())
    return mapper


def learning_curve(kind: str, recipes: RecipePair, train_pairs: Sequence, test_pairs: Sequence,
                   run_counts: Sequence[int], config: Optional[dict] = None, seed: int = 0) -> list[dict]:
    """How a mapper's held-out quality scales with the number of shadow runs (pairs) it sees.

    For each k in ``run_counts``: fit a fresh mapper on the pairs of k training runs (a
    fixed random order of runs, so each k's runs include the previous k's), score it on
    ``test_pairs`` (relative Frobenius error and cosine of the whole LLM update).
    """
    runs = sorted({p.run_id for p in train_pairs})
    random.Random(seed).shuffle(runs)
    rows = []
    for k in run_counts:
        keep = set(runs[:k])
        subset = [p for p in train_pairs if p.run_id in keep]
        if not subset:
            continue
        t0 = time.monotonic()
        mapper = make_mapper(kind, recipes, config)
        card = mapper.fit(subset)
        res = mapper.evaluate(test_pairs)
        rows.append({"kind": kind, "runs": len(keep), "pairs": len(subset), "rel_err_mean": res["rel_err_mean"],
                     "cosine_mean": res["cosine_mean"], "validation_rel_err": card["validation"].get("rel_err_mean"),
                     "fit_s": round(time.monotonic() - t0, 3)})
    return rows
