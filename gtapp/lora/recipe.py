"""The recipe: everything a LoRA update depends on, fixed and fingerprinted.

An update vector is only meaningful relative to the exact base weights, the LoRA target
modules, rank, alpha and the LoRA *initialisation* (LoRA's A barely moves in short
fine-tunes, so two runs from different random A's give incomparable updates). A
:class:`LoraRecipe` pins all of that for one model; a :class:`RecipePair` holds the
TinyLM's and the LLM's recipes and is saved as ``recipe.json`` next to the models.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

RECIPE_FORMAT = 1


class RecipeError(ValueError):
    """A recipe file is malformed, or something does not match the recipe."""


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, shape, float32 bytes) of every tensor, in sorted name order.

    Independent of shard layout and of the dtype the checkpoint was loaded in.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def module_seed(init_seed: int, module: str) -> int:
    """A per-module seed derived from the recipe seed and the module's name."""
    digest = hashlib.sha256(f"{init_seed}:{module}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def seeded_lora_a(init_seed: int, module: str, rank: int, in_features: int) -> torch.Tensor:
    """The recipe's initial LoRA A (rank x in_features), float32.

    Same distribution as peft's default (kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(in),
    1/sqrt(in))), but drawn from a generator seeded per module, so a client and the
    provider build bit-identical initial A's without sharing any tensor.
    """
    g = torch.Generator().manual_seed(module_seed(init_seed, module))
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=g, dtype=torch.float32) * 2 - 1) * bound


def init_fingerprint(init_seed: int, rank: int, shapes: Mapping[str, tuple[int, int]]) -> str:
    """sha256 of the initial A's of every LoRA module (B starts at zero)."""
    h = hashlib.sha256()
    for module in sorted(shapes):
        _, in_features = shapes[module]
        h.update(module.encode())
        h.update(seeded_lora_a(init_seed, module, rank, in_features).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class LoraRecipe:
    """How to build and interpret one model's LoRA adapter.

    ``shapes`` maps each LoRA-wrapped module's name (e.g. ``model.layers.0.self_attn.q_proj``)
    to its weight shape ``(out_features, in_features)``; it lets an upload be validated
    without loading the base model.
    """

    base_model: str  # path or hub id the recipe was made from (informational)
    base_fingerprint: str  # weights_fingerprint of the base checkpoint
    architecture: str  # e.g. "LlamaForCausalLM"
    num_layers: int
    target_modules: tuple[str, ...]
    rank: int
    alpha: float
    dropout: float
    init_seed: int
    init_fingerprint: str
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """LoRA scaling applied to B @ A (alpha / rank, peft's default)."""
        return self.alpha / self.rank

    def modules(self) -> list[str]:
        return sorted(self.shapes, key=module_sort_key)

    def fingerprint(self) -> str:
        """sha256 of the recipe's contract: every field but the informational ``base_model`` path
        (which differs between machines). Two recipes with equal fingerprints make comparable updates."""
        d = self.to_dict()
        d.pop("base_model", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "recipe") -> "LoraRecipe":
        required = {
            "base_model": str, "base_fingerprint": str, "architecture": str, "num_layers": int,
            "target_modules": list, "rank": int, "alpha": (int, float), "dropout": (int, float),
            "init_seed": int, "init_fingerprint": str, "shapes": dict,
        }
        if not isinstance(d, Mapping):
            raise RecipeError(f"{where}: expected a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(required)
        if unknown:
            raise RecipeError(f"{where}: unknown keys {sorted(unknown)}; expected only {sorted(required)}")
        for key, typ in required.items():
            if key not in d:
                raise RecipeError(f"{where}: missing key '{key}'")
            if not isinstance(d[key], typ) or isinstance(d[key], bool):
                raise RecipeError(f"{where}: '{key}' should be {typ}, got {d[key]!r}")
        if d["rank"] < 1 or d["rank"] > 4096:
            raise RecipeError(f"{where}: rank must be in 1..4096, got {d['rank']}")
        if not 0 <= d["dropout"] < 1:
            raise RecipeError(f"{where}: dropout must be in [0, 1), got {d['dropout']}")
        shapes = {}
        for name, shp in d["shapes"].items():
            if (not isinstance(shp, list) or len(shp) != 2
                    or not all(isinstance(x, int) and x > 0 for x in shp)):
                raise RecipeError(f"{where}: shape of '{name}' must be [out, in] positive ints, got {shp!r}")
            shapes[name] = (shp[0], shp[1])
        recipe = cls(
            base_model=d["base_model"], base_fingerprint=d["base_fingerprint"],
            architecture=d["architecture"], num_layers=d["num_layers"],
            target_modules=tuple(d["target_modules"]), rank=d["rank"], alpha=float(d["alpha"]),
            dropout=float(d["dropout"]), init_seed=d["init_seed"],
            init_fingerprint=d["init_fingerprint"], shapes=shapes,
        )
        expected = init_fingerprint(recipe.init_seed, recipe.rank, recipe.shapes)
        if expected != recipe.init_fingerprint:
            raise RecipeError(f"{where}: init_fingerprint does not match init_seed/rank/shapes "
                              f"(file says {recipe.init_fingerprint[:12]}, computed {expected[:12]})")
        return recipe


@dataclass(frozen=True)
class RecipePair:
    """The TinyLM's and the LLM's recipes; what a mapper is trained for."""

    tiny: LoraRecipe
    llm: LoraRecipe

    def to_dict(self) -> dict:
        return {"format": RECIPE_FORMAT, "tiny": self.tiny.to_dict(), "llm": self.llm.to_dict()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RecipePair":
        path = Path(path)
        if path.is_dir():
            path = path / "recipe.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise RecipeError(f"{path}: recipe file not found") from None
        except json.JSONDecodeError as e:
            raise RecipeError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != RECIPE_FORMAT:
            raise RecipeError(f"{path}: expected a recipe with format {RECIPE_FORMAT}")
        for key in ("tiny", "llm"):
            if key not in d:
                raise RecipeError(f"{path}: missing '{key}' recipe")
        return cls(LoraRecipe.from_dict(d["tiny"], f"{path}:tiny"),
                   LoraRecipe.from_dict(d["llm"], f"{path}:llm"))


def module_sort_key(module: str) -> tuple:
    """Sort module names by layer index, then name (so layer 10 follows layer 9)."""
    parts = module.split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def layer_of(module: str) -> int:
    """The transformer layer index in a module name like model.layers.3.self_attn.q_proj."""
    parts = module.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    raise RecipeError(f"no layer index in module name '{module}'")


def module_type(module: str) -> str:
    """The module's kind, the last name component (q_proj, v_proj, ...)."""
    return module.rsplit(".", 1)[-1]


def target_shapes(model: torch.nn.Module, target_modules: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Shapes of the Linear modules in ``model`` whose last name component is a target."""
    targets = set(target_modules)
    shapes = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets and ".layers." in f".{name}":
            shapes[name] = (mod.out_features, mod.in_features)
    if not shapes:
        raise RecipeError(f"no Linear modules named {sorted(targets)} found in the model's layers")
    return shapes


def make_recipe(model: torch.nn.Module, base_model: str, target_modules: Iterable[str] = ("q_proj", "v_proj"),
                rank: int = 2, alpha: float = 32.0, dropout: float = 0.0, init_seed: int = 0) -> LoraRecipe:
    """Build the recipe for ``model`` (a loaded transformers causal LM)."""
    targets = tuple(sorted(set(target_modules)))
    shapes = target_shapes(model, targets)
    config = getattr(model, "config", None)
    arch = (config.architectures or [type(model).__name__])[0] if config is not None and getattr(config, "architectures", None) else type(model).__name__
    num_layers = int(getattr(config, "num_hidden_layers", 0)) or (max(layer_of(m) for m in shapes) + 1)
    return LoraRecipe(
        base_model=str(base_model), base_fingerprint=weights_fingerprint(model.state_dict()),
        architecture=arch, num_layers=num_layers, target_modules=targets, rank=int(rank),
        alpha=float(alpha), dropout=float(dropout), init_seed=int(init_seed),
        init_fingerprint=init_fingerprint(init_seed, rank, shapes), shapes=shapes,
    )


def recipe_fingerprints(recipe: LoraRecipe) -> dict[str, Any]:
    """What identifies a recipe, JSON-able. ``recipe`` hashes everything but the informational
    ``base_model`` path (which differs between machines)."""
    return {
        "recipe": recipe.fingerprint(),
        "architecture": recipe.architecture,
        "base_fingerprint": recipe.base_fingerprint,
        "init_fingerprint": recipe.init_fingerprint,
        "init_seed": recipe.init_seed,
        "rank": recipe.rank,
        "alpha": recipe.alpha,
        "target_modules": sorted(recipe.target_modules),
    }
