"""A pair set on disk: the folder ``gtapp.shadow`` writes, read back as (TinyLM update, LLM
update) pairs. The format (see gtapp.shadow's module docstring for the folder layout):

    OUT/pairset.json             manifest: format, version, recipe fingerprints, settings, runs
    OUT/recipe.json              the RecipePair the pairs were made with
    OUT/runs/<key>.safetensors   one shard per run: ``{step}.{tiny|llm}.<module>.A`` / ``.B``

``version`` (:func:`set_version`) hashes the recipes, the settings and every shard's sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from gtapp.lora.factors import Factors
from gtapp.lora.recipe import RecipePair

PAIRSET_FORMAT = 1
MANIFEST = "pairset.json"
RECIPE = "recipe.json"


@dataclass
class Pair:
    """One (TinyLM update, LLM update) pair: absolute LoRA factors {module: (A, B)}."""

    pair_id: str
    run_id: str
    tiny: Factors
    llm: Factors
    meta: dict = field(default_factory=dict)


def _factors_from_shard(tensors: dict, step: int, which: str) -> Factors:
    prefix = f"{step}.{which}."
    out: dict[str, list] = {}
    for k, v in tensors.items():
        if k.startswith(prefix):
            module, part = k[len(prefix):].rsplit(".", 1)
            out.setdefault(module, [None, None])[0 if part == "A" else 1] = v
    return {m: (a, b) for m, (a, b) in out.items()}


class PairSet:
    """A pair set folder (see the module doc). Iterating yields :class:`Pair` s."""

    def __init__(self, root: Path, manifest: dict, recipes: RecipePair):
        self.root = Path(root)
        self.manifest = manifest
        self.recipes = recipes
        self._pairs: Optional[list[Pair]] = None

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "PairSet":
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {root} a pair set made by `gtapp shadow`?")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != PAIRSET_FORMAT or manifest.get("kind") != "gtapp.pairset":
            raise ValueError(f"{path}: not a gtapp pair set of format {PAIRSET_FORMAT}")
        ps = cls(root, manifest, RecipePair.load(root / RECIPE))
        if verify:
            for run_id, run in manifest["runs"].items():
                shard = root / run["shard"]
                if not shard.is_file():
                    raise ValueError(f"{root}: shard of run {run_id} is missing ({run['shard']})")
        return ps

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def runs(self) -> dict:
        return self.manifest["runs"]

    @property
    def pairs(self) -> list[Pair]:
        if self._pairs is None:
            self._pairs = []
            for run_id, run in self.manifest["runs"].items():
                self._pairs.extend(self.run_pairs(run_id))
        return self._pairs

    def run_pairs(self, run_id: str) -> list[Pair]:
        run = self.manifest["runs"][run_id]
        shard = self.root / run["shard"]
        data = shard.read_bytes()
        if hashlib.sha256(data).hexdigest() != run["sha256"]:
            raise ValueError(f"{shard}: contents do not match the manifest's sha256 (file changed or corrupt)")
        from safetensors.torch import load as load_bytes

        tensors = load_bytes(data)
        out = []
        for step in run["steps"]:
            meta = {k: run[k] for k in ("task", "subset", "seed", "subset_hash", "indices") if k in run}
            meta.update({"step": step, "task_seed": self.manifest["settings"]["task_seed"],
                         "n_train": self.manifest["settings"]["n_train"], "steps": self.manifest["settings"]["steps"]})
            out.append(Pair(f"{run_id}@{step}", run_id, _factors_from_shard(tensors, step, "tiny"),
                            _factors_from_shard(tensors, step, "llm"), meta))
        return out

    def __len__(self) -> int:
        return sum(len(r["steps"]) for r in self.manifest["runs"].values())

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __getitem__(self, i) -> Pair:
        return self.pairs[i]

    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.manifest["runs"].values()})

    def select(self, tasks: Optional[Sequence[str]] = None, runs: Optional[Sequence[str]] = None,
               max_runs: Optional[int] = None) -> list[Pair]:
        """Pairs of the given tasks / runs (e.g. to hold tasks out, or to measure scaling)."""
        ids = [r for r, v in self.manifest["runs"].items()
               if (tasks is None or v["task"] in tasks) and (runs is None or r in runs)]
        if max_runs is not None:
            ids = ids[:max_runs]
        keep = set(ids)
        return [p for p in self.pairs if p.run_id in keep]

    def summary(self) -> dict:
        m = self.manifest
        return {"version": m["version"], "runs": len(m["runs"]), "pairs": len(self), "tasks": self.tasks(),
                "steps": m["settings"]["steps"], "pair_steps": m["settings"].get("pair_steps"),
                "recipes": m["recipes"], "wall_s": round(sum(r.get("wall_s", 0) for r in m["runs"].values()), 2)}



def set_version(manifest: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"recipes": manifest["recipes"], "settings": manifest["settings"]}, sort_keys=True).encode())
    for run_id in sorted(manifest["runs"]):
        h.update(run_id.encode())
        h.update(manifest["runs"][run_id]["sha256"].encode())
    return h.hexdigest()[:16]
