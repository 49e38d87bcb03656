"""The mapper interface, the out-of-distribution reference, and mapper *versions* on disk.

Every mapper (Gradient Transformer, ridge, mean) has the same life cycle:

    mapper = GTMapper(recipes, config)        # or RidgeMapper / MeanMapper
    card = mapper.fit(pairs)                  # pairs: a shadow PairSet or a list of Pair
    llm_update = mapper.predict(tiny_update)  # UpdateVector of the LLM (a mapping module -> (A, B))
    mapper.save("mappers/v3")                 # a mapper version folder
    mapper = load_mapper("mappers/v3")

``fit`` splits the pairs by shadow *run* (never by pair: checkpoints of one run are near
copies of each other and would leak), fits on the training runs, reports validation
numbers on the held-out runs (relative Frobenius error and cosine of the whole LLM update,
the mean-of-shadow baseline's numbers beside them), and fits the OOD reference.

A mapper version folder holds:

    weights.safetensors  every tensor (network, normalisers, OOD reference)
    config.json          {"format", "kind", "config"}: enough to rebuild the mapper
    recipe.json          the RecipePair it maps between (the contract uploads are checked against)
    card.json            the model card: kind, config, recipe fingerprints, pair-set version,
                         training and validation numbers, OOD reference summary, version hash
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save_file

from gtapp import __version__
from gtapp.lora.factors import as_factors
from gtapp.lora.update import UpdateVector
from gtapp.mapper.blocks import BlockPCA
from gtapp.mapper.space import Normaliser, Tensors, UpdateSpace, update_metrics
from gtapp.progress import ProgressFn
from gtapp.lora.recipe import RecipeError, RecipePair
from gtapp.ood import OOD_TASK_THRESHOLD, OOD_THRESHOLD, deciding_score

MAPPER_FORMAT = 2  # 2: ridge and the OOD reference per module (gtapp.mapper.blocks)
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
RECIPE = "recipe.json"
CARD = "card.json"


def recipe_fingerprint(recipe) -> str:
    """The recipe's contract digest (:meth:`gtapp.lora.recipe.LoraRecipe.fingerprint`)."""
    return recipe.fingerprint()


def split_by_run(pairs: Sequence, val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split pairs into (train, val) by whole shadow runs. With fewer than 2 runs, val is empty."""
    runs = sorted({p.run_id for p in pairs})
    if len(runs) < 2 or val_fraction <= 0:
        return list(pairs), []
    rng = random.Random(seed)
    rng.shuffle(runs)
    n_val = min(len(runs) - 1, max(1, round(val_fraction * len(runs))))
    val_runs = set(runs[:n_val])
    return [p for p in pairs if p.run_id not in val_runs], [p for p in pairs if p.run_id in val_runs]


def summarise(metrics: dict[str, torch.Tensor]) -> dict:
    if not metrics or metrics["rel_err"].numel() == 0:
        return {"n": 0}
    r, c = metrics["rel_err"].double(), metrics["cosine"].double()
    return {"n": int(r.numel()), "rel_err_mean": float(r.mean()), "rel_err_median": float(r.median()),
            "cosine_mean": float(c.mean()), "cosine_median": float(c.median())}


# ----------------------------------------------------------------------------- PCA / OOD

def pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [D], components [k', D] orthonormal rows, scores [N, k']) of the rows of x.

    Through the N x N Gram matrix when N < D (shadow sets have far fewer updates than
    coordinates), in float64. Components with ~zero variance are dropped (k' <= k).
    """
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    if n < d:
        evals, evecs = torch.linalg.eigh(xc @ xc.T)
        order = evals.argsort(descending=True)
        evals, evecs = evals[order], evecs[:, order]
        keep = evals > evals[0].clamp_min(1e-300) * 1e-10 if n else evals > 0
        k = min(k, int(keep.sum()))
        s = evals[:k].clamp_min(1e-300).sqrt()
        comps = (evecs[:, :k].T @ xc) / s[:, None]
    else:
        evals, evecs = torch.linalg.eigh(xc.T @ xc)
        order = evals.argsort(descending=True)
        evals, evecs = evals[order], evecs[:, order]
        keep = evals > evals[0].clamp_min(1e-300) * 1e-10
        k = min(k, int(keep.sum()))
        comps = evecs[:, :k].T
    return mean, comps, xc @ comps.T


class OodReference:
    """Where the shadow TinyLM updates lie, to tell how far a new input is from them.

    In the mapper's normalised tiny space, module by module (:class:`gtapp.mapper.blocks.BlockPCA`:
    never an [N × full update] matrix): each shadow update's per-module PCA scores and its
    squared residual off them, and the *typical* nearest-neighbour distance (median over shadow
    updates of the distance to the nearest update of *another* run; same-run checkpoints are
    near copies and would make every distance look large). Score of an input = distance to its
    nearest shadow update / that typical distance: about 1 for inputs like the shadow set.

    With the shadow runs' tasks, also the typical distance from a shadow update to the nearest
    update of *another task* (``task_reference``): ``task_score`` = distance / that, about 1 for an
    update as far from the shadow set as a task the mapper never saw typically is. Both distances
    shrink as the pair set grows denser, so this ratio, unlike ``score``, means the same for a
    15-task and a 51-task pair set.

    ``ood`` (the warning) compares the task score with :data:`OOD_TASK_THRESHOLD` where there is
    one, else the run-relative score with :data:`OOD_THRESHOLD`; ``measure`` and ``threshold`` say
    which.
    """

    def __init__(self, space: UpdateSpace, k: int = 16):
        self.pca = BlockPCA(space, k)
        self.points = self.resid2 = None
        self.reference = self.p90 = self.task_reference = float("nan")

    @staticmethod
    def _typical_nn(d2: torch.Tensor, groups: Sequence[str]) -> torch.Tensor:
        """Each point's distance to its nearest point of another group (inf-free)."""
        ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        code = torch.tensor([ids[g] for g in groups])
        same = code[:, None] == code[None, :]
        if same.all():  # a single group: fall back to any other point
            same = torch.eye(d2.shape[0], dtype=torch.bool)
        nn = d2.masked_fill(same, float("inf")).min(1).values.sqrt()
        return nn[torch.isfinite(nn)]

    def fit(self, normalised: Tensors, run_ids: Sequence[str],
            task_ids: Optional[Sequence[Optional[str]]] = None) -> "OodReference":
        self.pca.fit(normalised)
        self.points, self.resid2 = self.pca.scores(normalised)
        n = self.points.shape[0]
        self.reference = self.p90 = self.task_reference = float("nan")
        if n < 2:
            return self
        d2 = torch.cdist(self.points, self.points).pow(2) + self.resid2[:, None] + self.resid2[None, :]
        nn = self._typical_nn(d2, run_ids)
        self.reference = float(nn.median()) if nn.numel() else float("nan")
        self.p90 = float(nn.quantile(0.9)) if nn.numel() else float("nan")
        if task_ids is not None and None not in task_ids and len(set(task_ids)) > 1:
            nn_task = self._typical_nn(d2, task_ids)
            self.task_reference = float(nn_task.median()) if nn_task.numel() else float("nan")
        return self

    def score(self, normalised: Tensors) -> dict:
        """{"nn_distance", "reference", "score", "ood", ...} for one normalised update (a batch of 1)."""
        z, r2 = self.pca.scores(normalised)
        d2 = (self.points - z[0]).pow(2).sum(1) + r2[0] + self.resid2
        nn = float(d2.min().sqrt())
        ref = self.reference
        score = nn / ref if ref and math.isfinite(ref) and ref > 0 else float("nan")
        tref = self.task_reference
        task_score = nn / tref if tref and math.isfinite(tref) and tref > 0 else float("nan")
        total = z[0].pow(2).sum() + r2[0]
        rec = {"nn_distance": nn, "reference": ref, "reference_p90": self.p90, "score": score,
               "task_reference": tref, "task_score": task_score,
               "outside_subspace_fraction": float((r2[0] / total.clamp_min(1e-300)).sqrt())}
        measure, value = deciding_score(rec) or ("score", float("nan"))
        threshold = OOD_TASK_THRESHOLD if measure == "task_score" else OOD_THRESHOLD
        return rec | {"measure": measure, "threshold": threshold, "ood": bool(value > threshold)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.pca.state_dict("ood.pca"), "ood.points": self.points.float(), "ood.resid2": self.resid2.float(),
                "ood.reference": torch.tensor([self.reference, self.p90, self.task_reference])}

    def load_state_dict(self, sd) -> "OodReference":
        self.pca.load_state_dict(sd, "ood.pca")
        self.points, self.resid2 = sd["ood.points"].double(), sd["ood.resid2"].double()
        ref = [float(x) for x in sd["ood.reference"]] + [float("nan")]  # versions before task_reference: 2 values
        self.reference, self.p90, self.task_reference = ref[:3]
        return self


# ----------------------------------------------------------------------------- the interface

class Mapper:
    """Maps a TinyLM update to LLM LoRA factors. Subclasses implement ``_fit``,
    ``predict_tensors`` and (for their own tensors) ``_state``/``_load_state``."""

    kind = "base"
    refit_on_all = False  # after choosing hyperparameters on validation runs, refit on all pairs

    def __init__(self, recipes: RecipePair, config: Optional[dict] = None):
        self.recipes = recipes
        self.tiny = UpdateSpace(recipes.tiny)
        self.llm = UpdateSpace(recipes.llm)
        unknown = set(config or {}) - set(self.default_config())
        if unknown:
            raise ValueError(f"{self.kind} mapper: unknown config keys {sorted(unknown)}; "
                             f"known: {sorted(self.default_config())}")
        self.config = {**self.default_config(), **(config or {})}
        self.norm_in = Normaliser(self.tiny)
        self.norm_out = Normaliser(self.llm)
        self.ood: Optional[OodReference] = None
        self.card: dict = {}

    @classmethod
    def default_config(cls) -> dict:
        return {"val_fraction": 0.2, "split_seed": 0}

    # ----------------------------------------------------------------- to implement
    def _fit(self, train_x: Tensors, train_y: Tensors, val_x: Optional[Tensors], val_y: Optional[Tensors],
             progress: Optional[ProgressFn], pairs: Sequence = ()) -> dict:
        raise NotImplementedError

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        """Batched raw tiny tensors {type: (dA, B)} -> raw LLM tensors."""
        raise NotImplementedError

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_state(self, sd: dict[str, torch.Tensor]) -> None:
        return None

    # ----------------------------------------------------------------- fit / predict
    def fit(self, pairs, val_pairs: Optional[Sequence] = None, progress: Optional[ProgressFn] = None) -> dict:
        """Fit on ``pairs`` (PairSet or list of Pair); returns the model card."""
        t0 = time.monotonic()
        set_info = {}
        if hasattr(pairs, "manifest"):
            set_info = {"version": pairs.version, "path": str(getattr(pairs, "root", "")),
                        "n_pairs": len(pairs), "n_runs": len({p.run_id for p in pairs})}
            self._check_set_recipes(pairs)
        pairs = list(pairs)
        if not pairs:
            raise ValueError("no pairs to fit on")
        if val_pairs is None:
            train, val = split_by_run(pairs, self.config["val_fraction"], self.config["split_seed"])
        else:
            train, val = pairs, list(val_pairs)
            overlap = {p.run_id for p in train} & {p.run_id for p in val}
            if overlap:
                raise ValueError(f"validation pairs share shadow runs with training pairs: {sorted(overlap)[:3]}")
        tx, ty = self._stack(train)
        vx, vy = self._stack(val) if val else (None, None)
        self.norm_in.fit(tx)
        self.norm_out.fit(ty)
        report = self._fit(tx, ty, vx, vy, progress, train) or {}
        train_m = summarise(self._metrics(tx, ty))
        val_m = summarise(self._metrics(vx, vy)) if val else {"n": 0}
        val_mean = summarise(self._mean_metrics(vx, vy)) if val else {"n": 0}
        refit = bool(self.refit_on_all and val)
        if refit:
            ox, oy = self._stack(train + val)
            self.norm_in.fit(ox)
            self.norm_out.fit(oy)
            self._refit(ox, oy)
            ood_pairs = train + val
        else:
            ox, ood_pairs = tx, train
        self.ood = OodReference(self.tiny).fit(self.norm_in.normalise(ox), [p.run_id for p in ood_pairs],
                                               [(p.meta or {}).get("task") for p in ood_pairs])
        self.card = {
            "kind": self.kind,
            "config": self.config,
            "recipes": {"tiny": recipe_fingerprint(self.recipes.tiny), "llm": recipe_fingerprint(self.recipes.llm)},
            "pair_set": set_info,
            "split": {"train_runs": len({p.run_id for p in train}), "val_runs": len({p.run_id for p in val}),
                      "train_pairs": len(train), "val_pairs": len(val),
                      "val_run_ids": sorted({p.run_id for p in val}),
                      "refit_on_all": refit},
            "train": {**train_m, **report.pop("train", {})},
            "validation": val_m,
            "validation_mean_baseline": val_mean,
            "fit": report,
            "ood": {"reference_nn_distance": self.ood.reference, "p90_nn_distance": self.ood.p90,
                    "task_reference_nn_distance": self.ood.task_reference,
                    "threshold": OOD_THRESHOLD, "task_threshold": OOD_TASK_THRESHOLD,
                    "shadow_tasks": len({(p.meta or {}).get("task") for p in ood_pairs} - {None}),
                    "components": int(self.ood.pca.width)},
            "fit_wall_s": round(time.monotonic() - t0, 3),
            "gtapp_version": __version__,
        }
        return self.card

    def _refit(self, x: Tensors, y: Tensors) -> None:
        raise NotImplementedError

    def _check_set_recipes(self, pair_set) -> None:
        r = pair_set.recipes
        for which in ("tiny", "llm"):
            a, b = getattr(r, which), getattr(self.recipes, which)
            if recipe_fingerprint(a) != recipe_fingerprint(b):
                raise RecipeError(f"the pair set's {which} recipe differs from the mapper's "
                                  f"({recipe_fingerprint(a)[:12]} vs {recipe_fingerprint(b)[:12]})")

    def _stack(self, pairs: Sequence) -> tuple[Tensors, Tensors]:
        for p in pairs:
            self.tiny.check(p.tiny, f"pair {p.pair_id} (tiny)")
            self.llm.check(p.llm, f"pair {p.pair_id} (llm)")
        return self.tiny.stack([p.tiny for p in pairs]), self.llm.stack([p.llm for p in pairs])

    def _metrics(self, x: Optional[Tensors], y: Optional[Tensors]) -> dict:
        if x is None:
            return {}
        with torch.no_grad():
            return update_metrics(self.llm, self.predict_tensors(x), y)

    def _mean_metrics(self, x: Optional[Tensors], y: Optional[Tensors]) -> dict:
        """The mean-of-shadow-updates baseline (training-split mean) on the same pairs."""
        if x is None:
            return {}
        n = next(iter(y.values()))[0].shape[0]
        mean = {t: (ma.expand(n, *ma.shape), mb.expand(n, *mb.shape)) for t, (ma, mb) in self.norm_out.mean.items()}
        return update_metrics(self.llm, mean, y)

    def predict(self, tiny_update) -> UpdateVector:
        """The LLM's update for a TinyLM update (an UpdateVector, or factors {module: (A, B)});
        its A = A0 + dA in the LLM recipe's seeded basis."""
        return self.predict_many([tiny_update])[0]

    def predict_many(self, tiny_updates: Sequence) -> list[UpdateVector]:
        fs = [as_factors(u) for u in tiny_updates]
        for f in fs:
            self.tiny.check(f, "TinyLM update")
        with torch.no_grad():
            out = self.llm.unstack(self.predict_tensors(self.tiny.stack(fs)))
        return [UpdateVector.from_factors(f, self.recipes.llm, {"source": "mapper", "mapper": self.kind}) for f in out]

    def mean_update(self) -> UpdateVector:
        """The provider-only baseline: the mean LLM update of the shadow pairs this mapper was
        fitted on (what the ``mean`` mapper predicts for any input)."""
        stacked = {t: (ma.unsqueeze(0), mb.unsqueeze(0)) for t, (ma, mb) in self.norm_out.mean.items()}
        (factors,) = self.llm.unstack(stacked)
        return UpdateVector.from_factors(factors, self.recipes.llm, {"source": "mapper", "mapper": "mean"})

    def evaluate(self, pairs: Sequence) -> dict:
        """Relative Frobenius error and cosine of predicted vs true LLM updates, per pair and summarised."""
        pairs = list(pairs)
        x, y = self._stack(pairs)
        m = self._metrics(x, y)
        return {**summarise(m), "per_pair": {p.pair_id: {"rel_err": float(m["rel_err"][i]), "cosine": float(m["cosine"][i])}
                                             for i, p in enumerate(pairs)}}

    def ood_score(self, tiny_update) -> dict:
        if self.ood is None:
            raise RuntimeError("mapper is not fitted")
        f = as_factors(tiny_update)
        self.tiny.check(f, "TinyLM update")
        return self.ood.score(self.norm_in.normalise(self.tiny.stack([f])))

    # ----------------------------------------------------------------- save / load
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {**self.norm_in.state_dict("norm_in"), **self.norm_out.state_dict("norm_out")}
        if self.ood is not None:
            sd.update(self.ood.state_dict())
        sd.update(self._state())
        return {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> "Mapper":
        self.norm_in.load_state_dict(sd, "norm_in")
        self.norm_out.load_state_dict(sd, "norm_out")
        if "ood.points" in sd:
            self.ood = OodReference(self.tiny).load_state_dict(sd)
        self._load_state(sd)
        return self

    def save(self, out_dir: str | Path) -> Path:
        """Write a mapper version folder (atomically: a temp folder renamed into place)."""
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            save_file(self.state_dict(), str(tmp / WEIGHTS), metadata={"format": str(MAPPER_FORMAT), "kind": self.kind})
            version = hashlib.sha256((tmp / WEIGHTS).read_bytes()).hexdigest()[:16]
            (tmp / CONFIG).write_text(json.dumps({"format": MAPPER_FORMAT, "kind": self.kind, "config": self.config},
                                                 indent=2))
            self.recipes.save(tmp / RECIPE)
            card = {**self.card, "version": version, "kind": self.kind, "config": self.config,
                    "recipes": {"tiny": recipe_fingerprint(self.recipes.tiny),
                                "llm": recipe_fingerprint(self.recipes.llm)},
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / CARD).write_text(json.dumps(card, indent=2, default=_json_default))
            self.card = card
            if out.exists():
                shutil.rmtree(out)
            tmp.replace(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _json_default(o):
    if isinstance(o, (torch.Tensor,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def read_card(mapper_dir: str | Path) -> dict:
    path = Path(mapper_dir) / CARD
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {mapper_dir} a mapper version folder?")
    return json.loads(path.read_text())
