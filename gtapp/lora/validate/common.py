"""What every check of an untrusted adapter shares: the error, the limits, strict JSON and
bounded reads."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gtapp.lora.peft_format import expected_numel
from gtapp.lora.recipe import LoraRecipe

#: Lowest cosine between an adapter's A's and the recipe's seeded A0's taken as "trained from A0".
INIT_MIN_COSINE = 0.2
#: ... and the z-score that cosine must also reach (a foreign init gives cosine ~ N(0, 1/sqrt(N))).
INIT_Z = 6.0


class AdapterError(ValueError):
    """An uploaded adapter was refused; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class Limits:
    """Bounds applied to an upload. ``None`` means "derived from the recipe".

    The derived weights bound is the largest file a valid adapter for the recipe can be
    (every parameter as float32 plus the largest allowed header), so it is exact, not a guess.
    """

    max_weights_bytes: int | None = None  # adapter_model.safetensors
    max_header_bytes: int = 1 << 20  # safetensors JSON header
    max_keys: int | None = None  # tensors in the header; None: 2 * modules + 64
    max_config_bytes: int = 64 * 1024  # adapter_config.json
    max_sidecar_bytes: int = 64 * 1024  # gtapp_recipe.json
    max_zip_bytes: int | None = None  # the .zip itself; None: weights bound + 1 MiB
    max_zip_entries: int = 16
    max_zip_uncompressed: int | None = None  # sum over entries; None: weights bound + 1 MiB
    max_compression_ratio: float = 100.0
    absolute_max_bytes: int = 8 << 30  # cap on any derived bound
    init_min_cosine: float = INIT_MIN_COSINE
    init_z: float = INIT_Z
    # The server's own fine-tune wrote the adapter from the recipe's init (origin "produced"), so
    # A's start is known and the init check (which guards against a foreign init) is recorded
    # but not enforced: a long fine-tune moves A far from A0 without making the update wrong.
    init_known: bool = False

    def weights_bytes(self, recipe: LoraRecipe) -> int:
        if self.max_weights_bytes is not None:
            return int(self.max_weights_bytes)
        return min(self.absolute_max_bytes, 8 + self.max_header_bytes + 4 * expected_numel(recipe))

    def keys(self, recipe: LoraRecipe) -> int:
        return int(self.max_keys) if self.max_keys is not None else 2 * len(recipe.shapes) + 64

    def zip_bytes(self, recipe: LoraRecipe) -> int:
        if self.max_zip_bytes is not None:
            return int(self.max_zip_bytes)
        return min(self.absolute_max_bytes, self.weights_bytes(recipe) + (1 << 20))

    def zip_uncompressed(self, recipe: LoraRecipe) -> int:
        if self.max_zip_uncompressed is not None:
            return int(self.max_zip_uncompressed)
        return min(self.absolute_max_bytes, self.weights_bytes(recipe) + (1 << 20))


def _short(s: Any, n: int = 12) -> str:
    s = str(s)
    return s if len(s) <= n else s[:n] + "…"


def _list_preview(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(repr(x) for x in items[:n]) + more


def _strict_json(data: bytes, what: str, fix: str) -> Any:
    """Parse JSON refusing duplicate keys and NaN/Infinity, mapping every failure to AdapterError."""

    def pairs(kv):
        d = {}
        for k, v in kv:
            if k in d:
                raise AdapterError(f"{what}: duplicate key {k!r} in JSON; {fix}")
            d[k] = v
        return d

    def bad_constant(name):
        raise AdapterError(f"{what}: JSON constant {name} is not allowed; {fix}")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AdapterError(f"{what}: not UTF-8 text ({e.reason} at byte {e.start}); {fix}") from None
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=bad_constant)
    except AdapterError:
        raise
    except RecursionError:
        raise AdapterError(f"{what}: JSON nested too deeply; {fix}") from None
    except ValueError as e:  # JSONDecodeError, and int() digit-limit errors
        raise AdapterError(f"{what}: not valid JSON ({_short(e, 120)}); {fix}") from None


def _read_bounded(path: Path, limit: int, what: str, fix: str) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise AdapterError(f"{what}: file is {size} bytes, more than the {limit}-byte limit; {fix}")
            data = f.read(limit + 1)
    except OSError as e:
        raise AdapterError(f"{what}: cannot be read ({e.strerror or e}); upload the file again") from None
    if len(data) > limit:
        raise AdapterError(f"{what}: file is more than the {limit}-byte limit; {fix}")
    return data


def _as_float(v: Any) -> float | None:
    """A JSON number as a finite float, or None (bools, huge ints, NaN/Inf, non-numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None
