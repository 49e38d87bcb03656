"""Update vectors: what a fine-tune changed, in factored form.

A LoRA fine-tune starts at the recipe's seeded ``A0`` and ``B0 = 0`` and ends at ``(A, B)``;
its weight update is ``ΔW = scale · B · A`` (``scale = alpha / r``; the ``B0 · A0`` term is
zero). :class:`ModuleUpdate` holds one module's factors, :class:`UpdateVector` a whole model's.

Dense ``ΔW`` matrices are built only when asked for (:meth:`ModuleUpdate.dense`); norms,
inner products, distances and cosines are computed from r×r Gram matrices:

    ‖B1A1 − B2A2‖²_F = tr(B1ᵀB1·A1A1ᵀ) − 2 tr(B1ᵀB2·A2A1ᵀ) + tr(B2ᵀB2·A2A2ᵀ).

Raw factors are not unique (``BA = (BM)(M⁻¹A)``); :meth:`ModuleUpdate.canonical` gives the
gauge-free thin SVD of ``scale · B · A`` (via QR of both factors and an r×r SVD, signs fixed).
With the recipe's shared seeded init the raw ``(ΔA, B)`` coordinates are comparable across
runs, which is what :meth:`UpdateVector.to_flat` exposes to simple mappers.

Files: :meth:`UpdateVector.save` writes ``X.safetensors`` (``<module>.lora_A``, ``<module>.lora_B``
and, only when the initial A is neither the recipe's seeded one nor zero, ``<module>.lora_A0``)
plus an ``X.json`` sidecar (format, recipe fingerprints, per-module shapes/rank/scale/init,
meta). :meth:`UpdateVector.write_peft` writes a stock peft adapter folder
(``gtapp.lora.peft_format``, the one writer).

This is the type the pipeline passes: a TinyLM adapter is read into an ``UpdateVector``
(:meth:`from_adapter`, validated), the mappers take one and return the LLM's, and the
result is written with :meth:`write_peft`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from gtapp.lora.factors import Factors, product_inner
from gtapp.files import atomic_write_text
from gtapp.lora.peft_format import _f32, write_peft_adapter
from gtapp.lora.recipe import (LoraRecipe, init_fingerprint, layer_of, module_sort_key, recipe_fingerprints,
                               seeded_lora_a)
from gtapp.lora.validate import AdapterError, Limits, load_adapter

__all__ = ["ModuleUpdate", "UpdateVector", "FlatSegment", "flat_layout", "AdapterError", "UPDATE_FORMAT"]

UPDATE_FORMAT = "gtapp.update/1"


# ----------------------------------------------------------------------------- one module


@dataclass
class ModuleUpdate:
    """One LoRA module's update: final factors ``a`` (r×in), ``b`` (out×r), initial ``a0``.

    ``B0`` is zero by construction, so ``ΔW = scale · b · a`` and ``delta_b = b``.
    """

    module: str
    a: torch.Tensor
    b: torch.Tensor
    a0: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        self.a, self.b, self.a0 = _f32(self.a), _f32(self.b), _f32(self.a0)
        self.scale = float(self.scale)
        if self.a.ndim != 2 or self.b.ndim != 2:
            raise ValueError(f"{self.module}: A and B must be matrices, got {tuple(self.a.shape)}, {tuple(self.b.shape)}")
        if self.b.shape[1] != self.a.shape[0]:
            raise ValueError(f"{self.module}: B {tuple(self.b.shape)} and A {tuple(self.a.shape)} ranks differ")
        if self.a0.shape != self.a.shape:
            raise ValueError(f"{self.module}: initial A {tuple(self.a0.shape)} differs from A {tuple(self.a.shape)}")
        if not math.isfinite(self.scale):
            raise ValueError(f"{self.module}: scale must be finite")

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features) of the module's weight."""
        return self.b.shape[0], self.a.shape[1]

    @property
    def delta_a(self) -> torch.Tensor:
        return self.a - self.a0

    @property
    def delta_b(self) -> torch.Tensor:
        return self.b

    def dense(self) -> torch.Tensor:
        """``ΔW = scale · B · A`` (out×in, float32). Materialises the full matrix: only on request."""
        return (self.scale * (self.b.double() @ self.a.double())).float()

    # Gram-matrix algebra (float64, r×r) ---------------------------------------------------

    def inner(self, other: "ModuleUpdate") -> float:
        """⟨ΔW1, ΔW2⟩_F = s1·s2·tr(B1ᵀB2 · A2A1ᵀ)."""
        if self.shape != other.shape:
            raise ValueError(f"{self.module}: shapes differ ({self.shape} vs {other.shape})")
        return self.scale * other.scale * float(product_inner(self.a.double(), self.b.double(),
                                                              other.a.double(), other.b.double()))

    def sq_norm(self) -> float:
        return max(0.0, self.inner(self))

    def norm(self) -> float:
        return math.sqrt(self.sq_norm())

    def sq_distance(self, other: "ModuleUpdate") -> float:
        """‖ΔW1 − ΔW2‖²_F as the squared norm of the stacked product [s1·B1, −s2·B2]·[A1; A2]
        (one rank-(r1+r2) Gram: no cancellation between separately computed terms)."""
        if self.shape != other.shape:
            raise ValueError(f"{self.module}: shapes differ ({self.shape} vs {other.shape})")
        b = torch.cat([self.scale * self.b.double(), -other.scale * other.b.double()], dim=1)
        a = torch.cat([self.a.double(), other.a.double()], dim=0)
        return max(0.0, float(product_inner(a, b, a, b)))

    # Gauge-free form ----------------------------------------------------------------------

    def canonical(self, form: str = "factors", rtol: float = 1e-10):
        """The thin SVD of ``scale · B · A``, independent of the factor gauge.

        ``B = Q_b R_b``, ``Aᵀ = Q_a R_a``; ``scale · R_b R_aᵀ = U' S V'ᵀ`` (r×r);
        ``U = Q_b U'``, ``V = Q_a V'``. Signs: the largest-magnitude entry of each column of U
        is made positive (ties: first index). Components with ``S ≤ rtol · S_max`` are zeroed.
        Singular vectors of repeated singular values are only defined up to a rotation.

        ``form="factors"`` returns ``(U√S, √S Vᵀ)`` (out×r, r×in: "B", "A" with
        ``B·A = ΔW``, no separate scale); ``form="svd"`` returns ``(U, S, V)``.
        """
        qb, rb = torch.linalg.qr(self.b.double())
        qa, ra = torch.linalg.qr(self.a.double().T)
        u_, s, vh_ = torch.linalg.svd(self.scale * (rb @ ra.T))
        u, v = qb @ u_, qa @ vh_.T
        keep = s > rtol * (float(s.max()) if s.numel() else 0.0)
        s = torch.where(keep, s, torch.zeros_like(s))
        u, v = u * keep, v * keep
        if u.shape[0]:
            idx = u.abs().argmax(dim=0)
            sign = torch.sign(u[idx, torch.arange(u.shape[1])])
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            u, v = u * sign, v * sign
        if form == "svd":
            return u.float(), s.float(), v.float()
        if form == "factors":
            root = s.sqrt()
            return (u * root).float(), (root[:, None] * v.T).float()
        raise ValueError(f"form must be 'factors' or 'svd', got {form!r}")


# ----------------------------------------------------------------------------- flat layout


@dataclass(frozen=True)
class FlatSegment:
    module: str
    part: str  # "delta_a" (r×in) or "b" (out×r)
    shape: tuple[int, int]
    start: int
    stop: int


def flat_layout(shapes: Mapping[str, tuple[int, int]], rank: int | Mapping[str, int]) -> list[FlatSegment]:
    """Layout of :meth:`UpdateVector.to_flat`: per module in ``module_sort_key`` order (the
    recipe's ``modules()`` order), ΔA (r×in, row-major) then B (out×r, row-major)."""
    out, pos = [], 0
    for module in sorted(shapes, key=module_sort_key):
        o, i = shapes[module]
        r = rank[module] if isinstance(rank, Mapping) else rank
        for part, shp in (("delta_a", (r, i)), ("b", (o, r))):
            n = shp[0] * shp[1]
            out.append(FlatSegment(module, part, shp, pos, pos + n))
            pos += n
    return out


# ----------------------------------------------------------------------------- whole model


@dataclass(eq=False)
class UpdateVector(Mapping):
    """A model's update: one :class:`ModuleUpdate` per LoRA module, plus where it came from.

    ``recipe_fingerprints`` (see :func:`recipe_fingerprints`) ties it to a recipe; ``meta`` is
    JSON-able provenance (``source`` = adapter | factors | checkpoints | flat | average | mapper ...).
    It is also a read-only mapping ``module -> (A, B)`` (:data:`gtapp.lora.factors.Factors`), so
    whatever takes factors takes an update vector.
    """

    recipe_fingerprints: dict[str, Any]
    modules: dict[str, ModuleUpdate]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modules = {m: self.modules[m] for m in sorted(self.modules, key=module_sort_key)}
        for name, mu in self.modules.items():
            if mu.module != name:
                raise ValueError(f"module update keyed {name!r} is for {mu.module!r}")

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_factors(cls, factors: Factors, recipe: LoraRecipe, meta: Mapping | None = None) -> "UpdateVector":
        """From final LoRA factors ``{module: (A, B)}`` trained from the recipe's init (e.g.
        :func:`gtapp.lora.peft_model.lora_factors`). The initial A is the recipe's seeded one."""
        missing, extra = set(recipe.shapes) - set(factors), set(factors) - set(recipe.shapes)
        if missing or extra:
            raise ValueError(f"factors do not match the recipe's modules (missing {sorted(missing)[:3]}, "
                             f"extra {sorted(extra)[:3]})")
        modules = {}
        for module in recipe.modules():
            a, b = factors[module]
            o, i = recipe.shapes[module]
            if tuple(a.shape) != (recipe.rank, i) or tuple(b.shape) != (o, recipe.rank):
                raise ValueError(f"{module}: A {tuple(a.shape)} / B {tuple(b.shape)}, recipe expects "
                                 f"{(recipe.rank, i)} / {(o, recipe.rank)}")
            a0 = seeded_lora_a(recipe.init_seed, module, recipe.rank, i)
            modules[module] = ModuleUpdate(module, a, b, a0, recipe.scale)
        return cls(recipe_fingerprints(recipe), modules, {"source": "factors", **dict(meta or {})})

    @classmethod
    def from_adapter(cls, adapter: str | Path | Sequence[str | Path], recipe: LoraRecipe, *,
                     limits: Limits | None = None, workdir: str | Path | None = None) -> "UpdateVector":
        """From an (untrusted) peft adapter: validated by :func:`gtapp.lora.validate.load_adapter` first."""
        checked = load_adapter(adapter, recipe, limits=limits, workdir=workdir)
        s = checked.summary
        meta = {"source": "adapter", "sha256": s.sha256, "dtype": s.dtype, "file_sizes": s.file_sizes,
                "base_model_name_or_path": s.base_model_name_or_path, "peft_version": s.peft_version}
        uv = cls.from_factors(checked.factors, recipe)
        uv.meta = meta
        return uv

    @classmethod
    def from_flat(cls, flat: Any, recipe: LoraRecipe, meta: Mapping | None = None) -> "UpdateVector":
        """Inverse of :meth:`to_flat` for the recipe's modules and rank (initial A: the recipe's)."""
        flat = torch.as_tensor(flat).detach().to("cpu", torch.float32).reshape(-1)
        layout = flat_layout(recipe.shapes, recipe.rank)
        if flat.numel() != layout[-1].stop:
            raise ValueError(f"flat vector has {flat.numel()} numbers, the recipe's layout {layout[-1].stop}")
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for seg in layout:
            parts.setdefault(seg.module, {})[seg.part] = flat[seg.start:seg.stop].reshape(seg.shape)
        modules = {}
        for module, p in parts.items():
            a0 = seeded_lora_a(recipe.init_seed, module, recipe.rank, recipe.shapes[module][1])
            modules[module] = ModuleUpdate(module, a0 + p["delta_a"], p["b"], a0, recipe.scale)
        return cls(recipe_fingerprints(recipe), modules, {"source": "flat", **dict(meta or {})})

    # views --------------------------------------------------------------------------------

    def __getitem__(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.modules[module]
        return mu.a, mu.b

    def __iter__(self):
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    __eq__ = object.__eq__  # identity: tensors have no single truth value
    __hash__ = object.__hash__

    def module_names(self) -> list[str]:
        return list(self.modules)

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {m: mu.shape for m, mu in self.modules.items()}

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (A, B)}`` (final factors; the module's scale is not folded in)."""
        return {m: (mu.a.clone(), mu.b.clone()) for m, mu in self.modules.items()}

    def scaled_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """``{module: (A, B, scale)}``: what :func:`gtapp.lora.peft_format.write_peft_adapter` writes."""
        return {m: (mu.a, mu.b, mu.scale) for m, mu in self.modules.items()}

    def write_peft(self, recipe: LoraRecipe, out_dir: str | Path, base_model_name_or_path: str | None = None) -> Path:
        """This update as a stock peft adapter folder for ``recipe``."""
        return write_peft_adapter(self, recipe, out_dir, base_model_name_or_path)

    def dense(self, module: str) -> torch.Tensor:
        """``ΔW`` of one module (out×in). Materialises it: use only where a dense matrix is needed."""
        return self.modules[module].dense()

    def canonical(self, form: str = "factors") -> dict[str, tuple[torch.Tensor, ...]]:
        return {m: mu.canonical(form) for m, mu in self.modules.items()}

    def to_flat(self) -> torch.Tensor:
        """(ΔA, B) of every module, flattened per :func:`flat_layout` (float32, 1-D)."""
        if not self.modules:
            return torch.zeros(0)
        return torch.cat([t.reshape(-1) for mu in self.modules.values() for t in (mu.delta_a, mu.b)])

    def flat_layout(self) -> list[FlatSegment]:
        return flat_layout(self.shapes, {m: mu.rank for m, mu in self.modules.items()})

    # algebra ------------------------------------------------------------------------------

    def _check_compatible(self, other: "UpdateVector") -> None:
        if set(self.modules) != set(other.modules):
            diff = sorted(set(self.modules) ^ set(other.modules))
            raise ValueError(f"updates cover different modules (e.g. {diff[:3]})")
        for m, mu in self.modules.items():
            if mu.shape != other.modules[m].shape:
                raise ValueError(f"{m}: shapes differ ({mu.shape} vs {other.modules[m].shape})")

    def module_norms(self) -> dict[str, float]:
        return {m: mu.norm() for m, mu in self.modules.items()}

    def layer_norms(self) -> dict[int, float]:
        sq: dict[int, float] = {}
        for m, mu in self.modules.items():
            sq[layer_of(m)] = sq.get(layer_of(m), 0.0) + mu.sq_norm()
        return {k: math.sqrt(v) for k, v in sorted(sq.items())}

    def frobenius_norm(self) -> float:
        """‖ΔW‖_F over all modules (from r×r Grams)."""
        return math.sqrt(sum(mu.sq_norm() for mu in self.modules.values()))

    def inner(self, other: "UpdateVector") -> float:
        self._check_compatible(other)
        return sum(mu.inner(other.modules[m]) for m, mu in self.modules.items())

    def distance(self, other: "UpdateVector") -> float:
        """‖ΔW_self − ΔW_other‖_F over all modules (from Gram matrices, no dense ΔW)."""
        self._check_compatible(other)
        return math.sqrt(sum(mu.sq_distance(other.modules[m]) for m, mu in self.modules.items()))

    def cosine(self, other: "UpdateVector") -> float:
        """⟨ΔW1, ΔW2⟩ / (‖ΔW1‖‖ΔW2‖) over all modules; 0.0 when either update is zero."""
        denom = self.frobenius_norm() * other.frobenius_norm()
        return self.inner(other) / denom if denom > 0 else 0.0

    def scale_by(self, c: float) -> "UpdateVector":
        """The update whose ΔW is ``c · ΔW`` (B scaled by c; A, and so ΔA, unchanged)."""
        c = float(c)
        mods = {m: ModuleUpdate(m, mu.a, c * mu.b, mu.a0, mu.scale) for m, mu in self.modules.items()}
        return UpdateVector(dict(self.recipe_fingerprints), mods, {**self.meta, "scaled_by": c})

    @staticmethod
    def average(updates: Sequence["UpdateVector"], weights: Sequence[float] | None = None) -> "UpdateVector":
        """Weighted mean of raw update vectors: ``ΔA`` and ``B`` averaged separately (as the
        paper averages clients' updates; note this is not the mean of the ΔW's).
        ``weights`` are normalised to sum to 1 (default: equal)."""
        if not updates:
            raise ValueError("average of no updates")
        w = [1.0] * len(updates) if weights is None else [float(x) for x in weights]
        if len(w) != len(updates) or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be {len(updates)} non-negative numbers with a positive sum, got {w}")
        w = [x / sum(w) for x in w]
        first = updates[0]
        for u in updates[1:]:
            first._check_compatible(u)
            if u.recipe_fingerprints != first.recipe_fingerprints:
                raise ValueError("updates were made for different recipes; average only updates of one recipe")
        mods = {}
        for m, mu in first.modules.items():
            for u in updates[1:]:
                o = u.modules[m]
                if o.scale != mu.scale or o.rank != mu.rank or not torch.equal(o.a0, mu.a0):
                    raise ValueError(f"{m}: updates differ in scale, rank or initial A; they cannot be averaged")
            da = sum(wi * u.modules[m].delta_a.double() for wi, u in zip(w, updates))
            b = sum(wi * u.modules[m].b.double() for wi, u in zip(w, updates))
            mods[m] = ModuleUpdate(m, mu.a0.double() + da, b, mu.a0, mu.scale)
        return UpdateVector(dict(first.recipe_fingerprints), mods,
                            {"source": "average", "weights": w, "n": len(updates),
                             "inputs": [u.meta.get("source") for u in updates]})

    # files --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors) and its ``.json`` sidecar; returns the safetensors path."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        init_seed = self.recipe_fingerprints.get("init_seed")
        tensors, mods = {}, {}
        for m, mu in self.modules.items():
            tensors[f"{m}.lora_A"] = mu.a
            tensors[f"{m}.lora_B"] = mu.b
            if not torch.any(mu.a0):
                init = "zeros"
            elif isinstance(init_seed, int) and torch.equal(mu.a0, seeded_lora_a(init_seed, m, mu.rank, mu.shape[1])):
                init = "seeded"
            else:
                init, tensors[f"{m}.lora_A0"] = "stored", mu.a0
            mods[m] = {"shape": list(mu.shape), "rank": mu.rank, "scale": mu.scale, "init": init}
        sidecar = {"format": UPDATE_FORMAT, "recipe_fingerprints": self.recipe_fingerprints, "modules": mods,
                   "meta": self.meta}
        try:
            text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"update meta must be JSON-serialisable: {e}") from None
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": UPDATE_FORMAT})
        os.replace(tmp, path)
        atomic_write_text(sidecar_path(path), text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "UpdateVector":
        """Read a file written by :meth:`save` (the safetensors path or its ``.json`` sidecar)."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        side = sidecar_path(path)
        try:
            info = json.loads(side.read_text())
        except FileNotFoundError:
            raise ValueError(f"{side}: sidecar not found; an update file is X.safetensors plus X.json") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{side}: not valid JSON ({e})") from None
        if not isinstance(info, dict) or info.get("format") != UPDATE_FORMAT:
            raise ValueError(f"{side}: not a gtapp update (expected format {UPDATE_FORMAT!r})")
        try:
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise ValueError(f"{path}: not found") from None
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
        try:
            return cls._from_loaded(path, info, tensors)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{side}: malformed update sidecar ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_loaded(cls, path: Path, info: dict, tensors: dict[str, torch.Tensor]) -> "UpdateVector":
        fps = info.get("recipe_fingerprints") or {}
        init_seed = fps.get("init_seed")
        mods, expected = {}, set()
        for m, d in info["modules"].items():
            a, b = tensors.get(f"{m}.lora_A"), tensors.get(f"{m}.lora_B")
            if a is None or b is None:
                raise ValueError(f"{path}: tensors of {m} missing")
            expected |= {f"{m}.lora_A", f"{m}.lora_B"}
            init = d.get("init")
            if init == "zeros":
                a0 = torch.zeros_like(a)
            elif init == "seeded" and isinstance(init_seed, int):
                a0 = seeded_lora_a(init_seed, m, a.shape[0], a.shape[1])
            elif init == "stored" and f"{m}.lora_A0" in tensors:
                a0 = tensors[f"{m}.lora_A0"]
                expected.add(f"{m}.lora_A0")
            else:
                raise ValueError(f"{path}: initial A of {m} cannot be reconstructed (init {init!r})")
            mu = ModuleUpdate(m, a, b, a0, d["scale"])
            if list(mu.shape) != list(d["shape"]) or mu.rank != d["rank"]:
                raise ValueError(f"{path}: {m} has shape {mu.shape} rank {mu.rank}, sidecar says {d}")
            mods[m] = mu
        if set(tensors) != expected:
            raise ValueError(f"{path}: unexpected tensors {sorted(set(tensors) - expected)[:3]}")
        seeded = {m: mu.shape for m, mu in mods.items() if info["modules"][m]["init"] == "seeded"}
        if seeded and len(seeded) == len(mods) and "init_fingerprint" in fps:
            rank = next(iter(mods.values())).rank
            if init_fingerprint(init_seed, rank, seeded) != fps["init_fingerprint"]:
                raise ValueError(f"{path}: the seeded initial A's do not reproduce the recipe's init_fingerprint")
        return cls(fps, mods, info.get("meta") or {})

    def check_recipe(self, recipe: LoraRecipe) -> None:
        """Raise ValueError unless this update was made for ``recipe``."""
        want = recipe_fingerprints(recipe)
        for key in ("recipe", "base_fingerprint", "init_fingerprint"):
            if self.recipe_fingerprints.get(key) != want[key]:
                raise ValueError(f"update's {key} {str(self.recipe_fingerprints.get(key))[:12]} is not the "
                                 f"recipe's {want[key][:12]}")

    def summary(self) -> dict[str, Any]:
        return {
            "modules": len(self.modules),
            "ranks": sorted({mu.rank for mu in self.modules.values()}),
            "parameters": sum(mu.a.numel() + mu.b.numel() for mu in self.modules.values()),
            "frobenius_norm": self.frobenius_norm(),
            "layer_norms": {str(k): v for k, v in self.layer_norms().items()},
            "recipe_fingerprints": self.recipe_fingerprints,
            "meta": self.meta,
        }


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an update file ``X.safetensors``: ``X.json``."""
    return Path(path).with_suffix(".json")
