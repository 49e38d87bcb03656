"""Several organisations' TinyLM updates -> one LLM update.

Two organisations of the work:

* ``average_then_map`` (the paper's): combine the TinyLM updates, map the result once.
  One mapper call; the combined update is what the mapper sees, so its OOD score is shown.
* ``map_then_average``: map each organisation's update, combine the LLM updates.
  The mapper sees only real single-organisation updates (the kind it was trained on).

Combination rules, in the recipe's shared seeded basis (raw (dA, B) coordinates):

* ``mean``: weighted mean of (dA, B) (weights normalised to 1);
* ``median``: weighted coordinate-wise median of (dA, B) -- one bad or hostile update (any
  size, any direction) moves it at most to the range of the honest ones;
* ``clip``: each update's flat (dA, B) L2 norm clipped to ``clip_factor`` x the median norm,
  then the weighted mean -- a hostile update keeps its vote but not its size.

Weights default to data size (``examples`` from each adapter's finetune.json), equal when
any size is unknown. The record lists every contributor's weight, norm, OOD score and
privacy spend (ε, δ from its finetune.json when it was trained with DP-SGD). Privacy:
each organisation's guarantee covers its own dataset, and combining and mapping are
post-processing, so they keep it; nothing here adds privacy either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from gtapp import choices
from gtapp.lora.factors import Factors, as_factors
from gtapp.lora.recipe import LoraRecipe
from gtapp.lora.update import UpdateVector
from gtapp.lora.validate import Limits
from gtapp.mapper.space import UpdateSpace
from gtapp.privacy import contributors_privacy

ORGANISATIONS = choices.ORGANISATIONS
METHODS = choices.COMBINE_METHODS
RECORD_LIMIT = 1 << 20  # bytes of finetune.json we are willing to read from an upload


@dataclass
class Contributor:
    """One organisation's TinyLM update and what is known about it."""

    name: str
    update: Factors  # an UpdateVector (read from an adapter), or plain factors
    examples: Optional[int] = None
    epsilon: Optional[float] = None
    delta: Optional[float] = None
    dp: bool = False
    source: str = ""
    weight: Optional[float] = None  # explicit weight (overrides data-size weighting)
    meta: dict = field(default_factory=dict)


def _read_record(folder: Path) -> dict:
    path = folder / "finetune.json"
    if not path.is_file() or path.stat().st_size > RECORD_LIMIT:
        return {}
    try:
        rec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _num(x, kind=float):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = kind(x)
    return x if math.isfinite(x) else None


def contributor_from_adapter(source: str | Path, recipe: LoraRecipe, name: Optional[str] = None,
                             weight: Optional[float] = None, init_known: bool = False) -> Contributor:
    """Validate an (untrusted) adapter against ``recipe`` into an UpdateVector, and read its
    finetune.json if present. ``init_known``: the server's own fine-tune made it from the recipe's
    init, so A need not still correlate with A0 (:class:`gtapp.lora.validate.Limits`)."""
    update = UpdateVector.from_adapter(source, recipe, limits=Limits(init_known=True) if init_known else None)
    folder = Path(source)
    rec = _read_record(folder) if folder.is_dir() else {}
    examples = _num(rec.get("examples"), int)
    eps = _num(rec.get("epsilon"))
    delta = _num(rec.get("delta"))
    return Contributor(name=name or folder.name, update=update, examples=examples, epsilon=eps,
                       delta=delta, dp=bool(rec.get("dp")) and eps is not None, source=str(source), weight=weight,
                       meta={"sha256": update.meta["sha256"]})


def resolve_weights(contributors: Sequence[Contributor], weighting: str = "data_size") -> tuple[list[float], str]:
    """Normalised weights and how they were chosen."""
    n = len(contributors)
    if any(c.weight is not None for c in contributors):
        if not all(c.weight is not None for c in contributors):
            raise ValueError("give a weight for every contributor or for none")
        w = [float(c.weight) for c in contributors]
        how = "explicit"
    elif weighting == "data_size" and all(c.examples for c in contributors):
        w = [float(c.examples) for c in contributors]
        how = "data_size"
    elif weighting in ("data_size", "equal"):
        w = [1.0] * n
        how = "equal" if weighting == "equal" else "equal (data size unknown for some contributors)"
    else:
        raise ValueError(f"weighting must be 'data_size' or 'equal', got {weighting!r}")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    return [x / sum(w) for x in w], how


def weighted_median(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise weighted median of the rows of x [K, D] with weights w [K] (sum 1).

    The smallest value whose cumulative weight reaches 1/2; where the cumulative weight
    hits exactly 1/2, the midpoint with the next value (so equal weights give the usual median).
    """
    vals, order = x.double().sort(dim=0)
    cw = w.double()[order].cumsum(0)
    k = (cw >= 0.5 - 1e-12).double().argmax(0)  # first index reaching one half
    lo = vals.gather(0, k[None]).squeeze(0)
    hit_half = (cw.gather(0, k[None]).squeeze(0) - 0.5).abs() < 1e-12
    nxt = vals.gather(0, (k + 1).clamp(max=x.shape[0] - 1)[None]).squeeze(0)
    return torch.where(hit_half & (k + 1 < x.shape[0]), (lo + nxt) / 2, lo).to(x.dtype)


def combine_factors(updates: Sequence, recipe: LoraRecipe, weights: Optional[Sequence[float]] = None,
                    method: str = "mean", clip_factor: float = 1.0) -> tuple[UpdateVector, dict]:
    """Combine updates of one recipe by ``method``; returns (the combined update, details)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not updates:
        raise ValueError("nothing to combine")
    space = UpdateSpace(recipe)
    fs = [as_factors(u) for u in updates]
    for i, f in enumerate(fs):
        space.check(f, f"update {i}")
    k = len(fs)
    w = torch.tensor([1.0 / k] * k if weights is None else [float(x) for x in weights], dtype=torch.float64)
    w = w / w.sum()
    flat = space.to_flat(space.stack(fs)).double()  # [K, D] of (dA, B)
    norms = flat.norm(dim=1)
    details = {"method": method, "norms": [float(x) for x in norms]}
    if method == "mean":
        out = (w[:, None] * flat).sum(0)
    elif method == "median":
        out = weighted_median(flat, w)
    else:
        tau = clip_factor * float(norms.median())
        factor = torch.clamp(tau / norms.clamp_min(1e-30), max=1.0)
        out = (w[:, None] * flat * factor[:, None]).sum(0)
        details.update({"clip_norm": tau, "clip_factor": clip_factor, "scaled_by": [float(x) for x in factor]})
    combined = space.unstack(space.from_flat(out[None].float()))[0]
    return UpdateVector.from_factors(combined, recipe, {"source": "combined", "method": method}), details


@dataclass
class CombineResult:
    update: UpdateVector  # the LLM's
    record: dict


def combine_and_map(mapper, contributors: Sequence[Contributor], organisation: str = "average_then_map",
                    method: str = "mean", weighting: str = "data_size", clip_factor: float = 1.0) -> CombineResult:
    """Combine several organisations' TinyLM updates into one LLM update with ``mapper``."""
    if organisation not in ORGANISATIONS:
        raise ValueError(f"organisation must be one of {ORGANISATIONS}, got {organisation!r}")
    if not contributors:
        raise ValueError("no contributors")
    names = [c.name for c in contributors]
    if len(set(names)) != len(names):
        raise ValueError(f"contributor names must be unique, got {names}")
    w, how = resolve_weights(contributors, weighting)
    tiny_recipe = mapper.recipes.tiny
    ood = [mapper.ood_score(c.update) if mapper.ood is not None else None for c in contributors]
    if organisation == "average_then_map":
        tiny, details = combine_factors([c.update for c in contributors], tiny_recipe, w, method, clip_factor)
        llm = mapper.predict(tiny)
        combined_ood = mapper.ood_score(tiny) if mapper.ood is not None else None
    else:
        mapped = mapper.predict_many([c.update for c in contributors])
        llm, details = combine_factors(mapped, mapper.recipes.llm, w, method, clip_factor)
        combined_ood = None
    rows = []
    for i, c in enumerate(contributors):
        row = {"name": c.name, "weight": w[i], "examples": c.examples, "dp": c.dp,
               "epsilon": c.epsilon, "delta": c.delta, "source": c.source,
               "update_norm": details["norms"][i] if organisation == "average_then_map" else None,
               "ood": ood[i]}
        if "scaled_by" in details:
            row["clipped_by"] = details["scaled_by"][i]
        if organisation == "map_then_average":
            row["mapped_update_norm"] = details["norms"][i]
        rows.append(row)
    record = {
        "organisation": organisation, "method": method, "weighting": how, "contributors": rows,
        "combined_ood": combined_ood, "details": {k: v for k, v in details.items() if k not in ("norms", "scaled_by")},
        "privacy": contributors_privacy([{"name": c.name, "epsilon": c.epsilon if c.dp else None, "delta": c.delta}
                                         for c in contributors]),
    }
    return CombineResult(llm, record)
