"""Validation of an untrusted, uploaded LoRA adapter against a recipe.

An adapter arrives from outside (a browser upload, a file someone hands the CLI). Nothing in
it is used until it has passed, in this order:

1. **Container.** A folder, a ``.zip``, or the two peft files (``adapter_config.json`` and
   ``adapter_model.safetensors``, plus the optional ``gtapp_recipe.json`` sidecar). Pickle-based
   formats (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``, ...) are refused by name, and any
   file whose bytes start with pickle or zip (``torch.save``) magic is refused even when it is
   named ``.safetensors``. A zip's entries may not contain ``..``, absolute paths, symlinks or
   other special files, nest deeper than one folder, be too many, or decompress to too much
   (or at too high a ratio); only the expected files are extracted, under fixed names, into a
   fresh folder created below the destination given.
2. **Config.** ``adapter_config.json`` is read with a size bound and checked: peft_type LORA,
   ``r`` and ``lora_alpha`` equal to the recipe's, ``target_modules`` equal to the recipe's,
   no DoRA / rsLoRA / bias / modules_to_save / rank or alpha patterns / layer selection, and
   no keys that peft's LoraConfig does not know. ``gtapp_recipe.json``, if present, must carry
   the recipe's fingerprints.
3. **Header.** The safetensors header (8-byte little-endian length, then JSON) is parsed here,
   with a bounded length, before any tensor is read: the keys must be exactly the recipe's
   ``lora_A``/``lora_B`` keys (missing and extra ones are named), dtypes float32 / float16 /
   bfloat16, shapes the recipe's, and the byte ranges must tile the data exactly.
4. **Tensors.** Only then are tensors read (by this module, from the validated byte ranges),
   and NaN / Inf are refused.
5. **Init.** A fine-tune moves A away from its start but keeps it correlated with it, so an
   adapter's A must still correlate with the recipe's seeded initial A: the cosine between all
   of the adapter's A's and all of the seeded A0's (one number over every module) must be at
   least ``max(Limits.init_min_cosine, Limits.init_z / sqrt(N))`` (N = number of A entries).
   An A drawn from another random init has cosine ~ N(0, 1/sqrt(N)) — about 0.01 for a real
   model — while A = A0 + drift keeps cosine ‖A0‖/‖A‖ (0.5 even when the drift is as large as
   A0 itself, as seen at learning rate 1e-2). A per-module relative distance ‖A − A0‖/‖A0‖
   is reported too.

Every failure raises :class:`AdapterError` (a ``ValueError``) whose message says what was
wrong and what to do about it. On success :func:`validate_adapter` returns an
:class:`AdapterSummary` the dashboard can show; :func:`load_adapter` also returns the factors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from gtapp.recipe import LoraRecipe, layer_of, seeded_lora_a

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SIDECAR_NAME = "gtapp_recipe.json"
PEFT_PREFIX = "base_model.model."  # same as gtapp.models.PEFT_PREFIX (not imported: keeps this module light)

#: Lowest cosine between an adapter's A's and the recipe's seeded A0's taken as "trained from A0".
INIT_MIN_COSINE = 0.2
#: ... and the z-score that cosine must also reach (a foreign init gives cosine ~ N(0, 1/sqrt(N))).
INIT_Z = 6.0

#: File suffixes of pickle-based (code-executing) or otherwise refused tensor formats.
FORBIDDEN_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib",
                                ".npy", ".npz", ".dill", ".mar"})

#: safetensors dtype code -> (torch dtype, bytes per element). Only these are accepted.
ALLOWED_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
}
DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

_PICKLE_MAGIC = re.compile(rb"\A\x80[\x01-\x05]")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_RATIO_CHECK_MIN_BYTES = 16 * 1024  # entries smaller than this cannot hurt whatever their ratio


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


# ----------------------------------------------------------------------------- helpers


def expected_numel(recipe: LoraRecipe) -> int:
    r = recipe.rank
    return sum(r * (o + i) for o, i in recipe.shapes.values())


def adapter_key(module: str, part: str) -> str:
    """The stock peft key of a module's ``lora_A`` / ``lora_B`` weight."""
    return f"{PEFT_PREFIX}{module}.{part}.weight"


def expected_keys(recipe: LoraRecipe) -> dict[str, tuple[str, str, tuple[int, int]]]:
    """key -> (module, "lora_A"|"lora_B", shape) for every tensor the recipe's adapter holds."""
    out = {}
    for module in recipe.modules():
        o, i = recipe.shapes[module]
        out[adapter_key(module, "lora_A")] = (module, "lora_A", (recipe.rank, i))
        out[adapter_key(module, "lora_B")] = (module, "lora_B", (o, recipe.rank))
    return out


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


def _sniff_pickle(head: bytes) -> str | None:
    if _PICKLE_MAGIC.match(head):
        return "a Python pickle (torch.save / pickle.dump)"
    if head.startswith(_ZIP_MAGICS):
        return "a zip archive (torch.save's default format)"
    return None


# ----------------------------------------------------------------------------- summary


@dataclass
class AdapterSummary:
    """What the dashboard shows about an accepted adapter."""

    modules: list[str]
    rank: int
    alpha: float
    scale: float
    dtype: str  # "float32", or e.g. "mixed (bfloat16, float32)"
    num_parameters: int
    total_norm: float  # ‖ΔW‖_F over all modules, ΔW = scale · B · A
    module_norms: dict[str, float]
    layer_norms: dict[int, float]
    init_distance: dict[str, float]  # ‖A − A0‖_F / ‖A0‖_F per module
    file_sizes: dict[str, int]
    sha256: str  # of adapter_model.safetensors
    source_kind: str  # "folder" | "zip" | "files"
    base_model_name_or_path: str | None = None
    peft_version: str | None = None
    recipe_fingerprints: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    init_cosine: float = 1.0  # cosine between all of A and the recipe's seeded A0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_norms"] = {str(k): v for k, v in self.layer_norms.items()}
        return d

    def format(self) -> str:
        lines = [
            f"adapter OK: {len(self.modules)} LoRA modules, rank {self.rank}, alpha {self.alpha:g} "
            f"(scale {self.scale:g}), {self.dtype}, {self.num_parameters} parameters",
            f"  files: " + ", ".join(f"{k} {v} B" for k, v in self.file_sizes.items()),
            f"  sha256({WEIGHTS_NAME}) = {self.sha256}",
            f"  ‖ΔW‖_F = {self.total_norm:.6g}; cosine(A, seeded A0) = {self.init_cosine:.4g}; "
            f"max ‖A−A0‖/‖A0‖ = {max(self.init_distance.values(), default=0.0):.4g}",
            "  per layer ‖ΔW‖_F: " + ", ".join(f"{k}: {v:.4g}" for k, v in sorted(self.layer_norms.items())),
        ]
        if self.base_model_name_or_path:
            lines.append(f"  base_model_name_or_path (informational): {self.base_model_name_or_path}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


@dataclass
class ValidatedAdapter:
    """An accepted adapter: its summary, its config and its factors (float32, CPU)."""

    summary: AdapterSummary
    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A r×in, B out×r)
    files: "AdapterFiles | None" = None  # where the checked files are (gone if extracted to a temp folder)


# ----------------------------------------------------------------------------- config


def _peft_lora_fields() -> set[str]:
    try:
        from peft import LoraConfig

        return {f.name for f in dataclasses.fields(LoraConfig)}
    except Exception:  # pragma: no cover - peft always installed with gtapp
        return set()


def _neutral(v: Any) -> bool:
    return v is None or v is False or v == {} or v == [] or v == ""


# Keys handled explicitly: name -> (predicate on the value, what is required, why / what to do).
_CONFIG_RULES: dict[str, tuple[Any, str]] = {
    "bias": (lambda v: v in ("none", None), "'none' (LoRA biases are not part of the update)"),
    "use_dora": (lambda v: v in (False, None), "false (DoRA is not plain LoRA)"),
    "use_rslora": (lambda v: v in (False, None), "false (rsLoRA changes the scaling alpha/r)"),
    "modules_to_save": (lambda v: v in (None, []), "null (fully trained extra modules are not a LoRA update)"),
    "lora_bias": (lambda v: v in (False, None), "false"),
    "rank_pattern": (lambda v: v in ({}, None), "{} (one rank for every module)"),
    "alpha_pattern": (lambda v: v in ({}, None), "{} (one alpha for every module)"),
    "fan_in_fan_out": (lambda v: v in (False, None), "false"),
    "layers_to_transform": (lambda v: v is None, "null (every layer carries LoRA)"),
    "layers_pattern": (lambda v: v in (None, [], ""), "null"),
    "layer_replication": (lambda v: v is None, "null"),
    "exclude_modules": (lambda v: v in (None, []), "null"),
    "init_lora_weights": (lambda v: isinstance(v, bool), "true or false (other inits such as PiSSA "
                                                        "rewrite the base weights)"),
    "task_type": (lambda v: v in ("CAUSAL_LM", None), "'CAUSAL_LM'"),
    "inference_mode": (lambda v: isinstance(v, bool), "true or false"),
    "lora_dropout": (lambda v: _as_float(v) is not None and 0 <= v < 1,
                     "a number in [0, 1)"),
    "base_model_name_or_path": (lambda v: v is None or (isinstance(v, str) and len(v) <= 1024),
                                "a string (informational)"),
    "revision": (lambda v: v is None or (isinstance(v, str) and len(v) <= 256), "null or a string"),
    "peft_version": (lambda v: v is None or (isinstance(v, str) and len(v) <= 64), "a version string"),
    "auto_mapping": (lambda v: v is None, "null"),
    "megatron_config": (lambda v: v is None, "null"),
    "megatron_core": (lambda v: v is None or (isinstance(v, str) and len(v) <= 64), "a string"),
    "loftq_config": (lambda v: v in ({}, None), "{}"),
    "target_parameters": (lambda v: v in (None, []), "null"),
    "trainable_token_indices": (lambda v: v is None, "null"),
    "use_qalora": (lambda v: v in (False, None), "false"),
    "qalora_group_size": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "ensure_weight_tying": (lambda v: v in (False, None), "false"),
}
_CORE_KEYS = {"peft_type", "r", "lora_alpha", "target_modules"}


def check_config(config: Any, recipe: LoraRecipe) -> list[str]:
    """Validate a parsed ``adapter_config.json`` against the recipe; return warnings."""
    where = CONFIG_NAME
    fix = "train with the recipe's LoraConfig and save with peft's save_pretrained"
    if not isinstance(config, dict):
        raise AdapterError(f"{where}: expected a JSON object, got {type(config).__name__}; {fix}")
    known = _peft_lora_fields() | set(_CONFIG_RULES) | _CORE_KEYS
    unknown = set(config) - known
    if unknown:
        raise AdapterError(
            f"{where}: unknown keys {_list_preview(unknown)}: not a peft LoRA config this server "
            f"understands; remove them, or re-save the adapter with peft's save_pretrained")
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, expected 'LORA'; "
                           f"only plain LoRA adapters are accepted")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool):
        raise AdapterError(f"{where}: 'r' must be an integer, got {r!r}; {fix}")
    if r != recipe.rank:
        raise AdapterError(f"{where}: rank r={r} but the recipe's rank is {recipe.rank}; "
                           f"fine-tune with LoRA rank {recipe.rank}")
    alpha = _as_float(config.get("lora_alpha"))
    if alpha is None:
        raise AdapterError(f"{where}: 'lora_alpha' must be a finite number, got "
                           f"{_short(repr(config.get('lora_alpha')), 40)}; {fix}")
    if abs(alpha - recipe.alpha) > 1e-9 * max(1.0, abs(recipe.alpha)):
        raise AdapterError(f"{where}: lora_alpha={alpha:g} but the recipe's alpha is {recipe.alpha:g}; "
                           f"fine-tune with lora_alpha={recipe.alpha:g}")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        raise AdapterError(f"{where}: target_modules is the pattern {targets!r}; list the module names "
                           f"{sorted(recipe.target_modules)} explicitly")
    if (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)
            or len(targets) != len(set(targets))):
        raise AdapterError(f"{where}: target_modules must be a list of distinct module names, got "
                           f"{_short(targets, 80)}; use {sorted(recipe.target_modules)}")
    if set(targets) != set(recipe.target_modules):
        raise AdapterError(f"{where}: target_modules {sorted(targets)} differ from the recipe's "
                           f"{sorted(recipe.target_modules)}; fine-tune with LoRA on exactly those modules")
    for key, (ok, required) in _CONFIG_RULES.items():
        if key in config and not ok(config[key]):
            raise AdapterError(f"{where}: '{key}' is {_short(json.dumps(config[key]), 60)}, must be {required}; "
                               f"{fix}")
    for key in set(config) - set(_CONFIG_RULES) - _CORE_KEYS:
        if not _neutral(config[key]):
            raise AdapterError(f"{where}: '{key}' is set to {_short(json.dumps(config[key]), 60)}; this "
                               f"server accepts plain LoRA only, so it must be null/false/empty")
    warnings = []
    if config.get("task_type") is None:
        warnings.append("task_type is not set (expected CAUSAL_LM)")
    return warnings


def check_sidecar(sidecar: Any, recipe: LoraRecipe) -> None:
    """``gtapp_recipe.json``, if present, must describe this recipe."""
    where = SIDECAR_NAME
    if not isinstance(sidecar, dict):
        raise AdapterError(f"{where}: expected a JSON object; delete the file or write it with gtapp")
    expected = recipe_fingerprints(recipe)
    allowed = set(expected) | {"gtapp_recipe", "base_model"}
    unknown = set(sidecar) - allowed
    if unknown:
        raise AdapterError(f"{where}: unknown keys {_list_preview(unknown)}; delete the file or write it with gtapp")
    for key in ("base_fingerprint", "init_fingerprint"):
        if key not in sidecar:
            raise AdapterError(f"{where}: missing '{key}'; delete the file or write it with gtapp")
    for key, want in expected.items():
        if key not in sidecar:
            continue
        got = sidecar[key]
        if key == "target_modules" and isinstance(got, list) and all(isinstance(t, str) for t in got):
            got = sorted(got)
        if key == "alpha" and _as_float(got) is not None:
            got = _as_float(got)
        if got != want:
            raise AdapterError(
                f"{where}: {key} is {_short(got)} but the recipe's is {_short(want)}: this adapter was "
                f"made for a different recipe; fine-tune from the recipe published with the mapper")


# ----------------------------------------------------------------------------- safetensors


@dataclass(frozen=True)
class TensorEntry:
    key: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data region
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data region
    file_size: int


def read_safetensors_header(path: str | Path, max_bytes: int, max_header_bytes: int = 1 << 20,
                            max_keys: int = 100_000, what: str = WEIGHTS_NAME) -> SafetensorsHeader:
    """Parse and structurally validate a safetensors header without reading any tensor.

    Checks: the file is not pickle/zip, its size is within ``max_bytes``, the 8-byte length is
    within bounds and the file, the header is a JSON object of
    ``{key: {dtype, shape, data_offsets}}`` (plus an optional ``__metadata__`` of strings),
    shapes are non-negative ints, every byte range matches its dtype and shape, and the ranges
    tile the data region exactly. Dtypes are *not* restricted here (see :func:`check_header`).
    """
    path = Path(path)
    fix = "save the adapter with peft's save_pretrained (safetensors format)"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(9)
            kind = _sniff_pickle(head)
            if kind is not None:
                n = int.from_bytes(head[:8].ljust(8, b"\0"), "little")
                looks_valid = len(head) == 9 and head[8:9] == b"{" and n <= min(max_header_bytes, size - 8)
                if not looks_valid:
                    raise AdapterError(f"{what}: the file is {kind}, not safetensors, whatever its name; "
                                       f"pickle-based files can run code and are never loaded; {fix}")
            if size > max_bytes:
                raise AdapterError(f"{what}: file is {size} bytes, more than the {max_bytes}-byte limit for "
                                   f"this recipe's adapter; upload only the LoRA weights the recipe defines")
            if size < 8 or len(head) < 8:
                raise AdapterError(f"{what}: file is {size} bytes, too short for a safetensors header; {fix}")
            n = int.from_bytes(head[:8], "little")
            if n > max_header_bytes:
                raise AdapterError(f"{what}: header length {n} exceeds the {max_header_bytes}-byte limit; "
                                   f"the file is corrupt or not an adapter; {fix}")
            if n < 2 or 8 + n > size:
                raise AdapterError(f"{what}: header length {n} does not fit the {size}-byte file "
                                   f"(truncated or not safetensors); {fix}")
            f.seek(8)
            raw = f.read(n)
    except OSError as e:
        raise AdapterError(f"{what}: cannot be read ({e.strerror or e}); upload the file again") from None
    if len(raw) != n:
        raise AdapterError(f"{what}: file truncated inside the header; {fix}")
    if raw[:1] != b"{":
        raise AdapterError(f"{what}: header does not start with '{{' (not safetensors); {fix}")
    header = _strict_json(raw.rstrip(b" "), f"{what} header", fix)
    if not isinstance(header, dict):
        raise AdapterError(f"{what}: header is not a JSON object; {fix}")
    if len(header) > max_keys + 1:
        raise AdapterError(f"{what}: header lists {len(header)} entries, more than the limit of {max_keys}; "
                           f"upload only the LoRA weights the recipe defines")
    meta = header.pop("__metadata__", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise AdapterError(f"{what}: __metadata__ must map strings to strings; {fix}")
    data_len = size - 8 - n
    entries = {}
    for key, spec in header.items():
        label = f"{what}: tensor {_short(repr(key), 100)}"
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise AdapterError(f"{label}: entry must have exactly dtype, shape, data_offsets; {fix}")
        dtype, shape, offs = spec["dtype"], spec["shape"], spec["data_offsets"]
        if not isinstance(dtype, str) or len(dtype) > 16:
            raise AdapterError(f"{label}: dtype must be a short string, got {_short(dtype)}; {fix}")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
            raise AdapterError(f"{label}: shape must be a list of non-negative ints, got {_short(shape, 60)}; {fix}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise AdapterError(f"{label}: data_offsets {_short(offs, 60)} outside the {data_len}-byte data "
                               f"region (file truncated or corrupt); {fix}")
        itemsize = ALLOWED_DTYPES[dtype][1] if dtype in ALLOWED_DTYPES else _OTHER_DTYPE_SIZES.get(dtype)
        if itemsize is not None:
            numel = math.prod(shape)
            if numel * itemsize != offs[1] - offs[0]:
                raise AdapterError(f"{label}: {offs[1] - offs[0]} bytes for shape {shape} of {dtype}; "
                                   f"the file is corrupt; {fix}")
        entries[key] = TensorEntry(key, dtype, tuple(shape), offs[0], offs[1])
    pos = 0
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            raise AdapterError(f"{what}: tensor byte ranges overlap or leave gaps (at {e.key!r}); "
                               f"the file is corrupt; {fix}")
        pos = e.end
    if pos != data_len:
        raise AdapterError(f"{what}: {data_len - pos} bytes after the last tensor; the file is corrupt or "
                           f"carries extra data; {fix}")
    return SafetensorsHeader(entries, dict(meta), 8 + n, size)


_OTHER_DTYPE_SIZES = {"F64": 8, "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1,
                      "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def check_header(header: SafetensorsHeader, recipe: LoraRecipe) -> None:
    """Keys exactly the recipe's, dtypes float32/float16/bfloat16, shapes the recipe's."""
    what = WEIGHTS_NAME
    want = expected_keys(recipe)
    got = set(header.entries)
    missing, extra = set(want) - got, got - set(want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_list_preview(missing, 4)}")
        if extra:
            parts.append(f"unexpected {len(extra)} key(s): {_list_preview(extra, 4)}")
        raise AdapterError(f"{what}: tensor keys do not match the recipe ({'; '.join(parts)}); the adapter must "
                           f"hold exactly lora_A and lora_B for each of the recipe's {len(recipe.shapes)} modules "
                           f"of its {recipe.num_layers}-layer {recipe.architecture} base (is the adapter for another "
                           f"base model? save with peft's save_pretrained, no modules_to_save)")
    for key, e in header.entries.items():
        if e.dtype not in ALLOWED_DTYPES:
            raise AdapterError(f"{what}: tensor {key!r} has dtype {e.dtype}; only float32, float16 and bfloat16 "
                               f"are accepted (do not quantise the adapter)")
    for key, (module, part, shape) in want.items():
        e = header.entries[key]
        if e.shape != shape:
            raise AdapterError(f"{what}: {part} of {module} has shape {list(e.shape)}, the recipe expects "
                               f"{list(shape)} (rank {recipe.rank}, module shape {list(recipe.shapes[module])}); "
                               f"fine-tune the recipe's base model ({recipe.base_model}) with the recipe's rank")


def _read_tensors(path: Path, header: SafetensorsHeader) -> dict[str, torch.Tensor]:
    out = {}
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != header.file_size:
                raise AdapterError(f"{WEIGHTS_NAME}: file changed while it was being validated; upload it again")
            for key, e in sorted(header.entries.items(), key=lambda kv: kv[1].begin):
                f.seek(header.data_start + e.begin)
                buf = f.read(e.end - e.begin)
                if len(buf) != e.end - e.begin:
                    raise AdapterError(f"{WEIGHTS_NAME}: file truncated inside tensor {key!r}; upload it again")
                dtype = ALLOWED_DTYPES[e.dtype][0]
                t = torch.frombuffer(bytearray(buf), dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                out[key] = t.reshape(e.shape)
    except OSError as err:
        raise AdapterError(f"{WEIGHTS_NAME}: cannot be read ({err.strerror or err}); upload it again") from None
    return out


# ----------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class AdapterFiles:
    config: Path
    weights: Path
    sidecar: Path | None
    kind: str  # folder | zip | files


def _check_suffix(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise AdapterError(f"{name}: {suffix} files are pickle-based (they can run code when loaded) and are "
                           f"never accepted; upload the adapter as safetensors (peft's save_pretrained with "
                           f"safe_serialization=True, the default)")


def _regular_file(path: Path, what: str) -> Path:
    if path.is_symlink():
        raise AdapterError(f"{what}: is a symbolic link; upload the file itself")
    if not path.is_file():
        raise AdapterError(f"{what}: not found or not a regular file ({path})")
    return path


def _from_folder(folder: Path) -> AdapterFiles:
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError as e:
        raise AdapterError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    for name in names:
        _check_suffix(name)
    tensors = [n for n in names if n.lower().endswith(".safetensors")]
    if WEIGHTS_NAME not in names:
        hint = f" (found {_list_preview(tensors, 3)})" if tensors else ""
        raise AdapterError(f"{folder}: no {WEIGHTS_NAME}{hint}; an adapter folder holds {CONFIG_NAME} and "
                           f"{WEIGHTS_NAME} as written by peft's save_pretrained")
    if len(tensors) > 1:
        raise AdapterError(f"{folder}: several safetensors files ({_list_preview(tensors, 3)}); upload one adapter "
                           f"with only {WEIGHTS_NAME}")
    if CONFIG_NAME not in names:
        raise AdapterError(f"{folder}: no {CONFIG_NAME}; upload the folder written by peft's save_pretrained")
    sidecar = folder / SIDECAR_NAME if SIDECAR_NAME in names else None
    return AdapterFiles(_regular_file(folder / CONFIG_NAME, CONFIG_NAME),
                        _regular_file(folder / WEIGHTS_NAME, WEIGHTS_NAME),
                        _regular_file(sidecar, SIDECAR_NAME) if sidecar else None, "folder")


def _from_files(paths: Sequence[str | Path]) -> AdapterFiles:
    config = weights = sidecar = None
    if len(paths) > 3:
        raise AdapterError(f"expected {CONFIG_NAME} and {WEIGHTS_NAME} (and optionally {SIDECAR_NAME}), got "
                           f"{len(paths)} files")
    for p in map(Path, paths):
        _check_suffix(p.name)
        name = p.name.lower()
        if name.endswith(".safetensors"):
            if weights is not None:
                raise AdapterError("two safetensors files given; upload one adapter_model.safetensors")
            weights = p
        elif name == SIDECAR_NAME:
            sidecar = p
        elif name.endswith(".json"):
            if config is not None:
                raise AdapterError(f"two config files given; upload one {CONFIG_NAME}")
            config = p
        else:
            raise AdapterError(f"{p.name}: not an adapter file; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    if weights is None:
        raise AdapterError(f"no .safetensors weights file given; upload {WEIGHTS_NAME} with {CONFIG_NAME}")
    if config is None:
        raise AdapterError(f"no {CONFIG_NAME} given; upload it with {WEIGHTS_NAME}")
    return AdapterFiles(_regular_file(config, CONFIG_NAME), _regular_file(weights, WEIGHTS_NAME),
                        _regular_file(sidecar, SIDECAR_NAME) if sidecar else None, "files")


_DRIVE = re.compile(r"^[A-Za-z]:")


def _zip_entry_parts(name: str) -> list[str]:
    """Validate a zip entry name; return its path components (no trailing empty one)."""
    if "\x00" in name or len(name) > 512:
        raise AdapterError(f"zip entry {_short(repr(name), 60)}: invalid name; re-create the zip")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise AdapterError(f"zip entry {name!r}: absolute path; zip the adapter folder with relative paths")
    parts = norm.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if any(p == ".." for p in parts):
        raise AdapterError(f"zip entry {name!r}: contains '..' (would escape its folder); re-create the zip from "
                           f"the adapter folder")
    if not parts or any(p in ("", ".") for p in parts):
        raise AdapterError(f"zip entry {name!r}: empty or '.' path components; re-create the zip")
    return parts


def extract_zip(zip_path: str | Path, dest: str | Path, limits: Limits, recipe: LoraRecipe) -> Path:
    """Check a zip's entries and extract only the adapter files into a fresh folder under ``dest``.

    The files are written under their fixed names (never the entry names), so nothing can land
    outside the new folder. Returns that folder.
    """
    zip_path = Path(zip_path)
    fix = "zip the folder written by peft's save_pretrained (at the top or inside one folder)"
    if zip_path.is_symlink() or not zip_path.is_file():
        raise AdapterError(f"{zip_path.name}: not found or not a regular file")
    size = zip_path.stat().st_size
    if size > limits.zip_bytes(recipe):
        raise AdapterError(f"{zip_path.name}: {size} bytes, more than the {limits.zip_bytes(recipe)}-byte limit; "
                           f"{fix}")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_entries:
                raise AdapterError(f"{zip_path.name}: {len(infos)} entries, more than the limit of "
                                   f"{limits.max_zip_entries}; {fix}")
            seen, total, wanted = set(), 0, {}
            for info in infos:
                parts = _zip_entry_parts(info.filename)
                key = "/".join(parts)
                if key in seen:
                    raise AdapterError(f"zip entry {info.filename!r} appears twice; re-create the zip")
                seen.add(key)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == stat.S_IFLNK:
                    raise AdapterError(f"zip entry {info.filename!r} is a symbolic link; zip the files themselves")
                if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise AdapterError(f"zip entry {info.filename!r} is a special file; {fix}")
                if info.flag_bits & 0x1:
                    raise AdapterError(f"zip entry {info.filename!r} is encrypted; upload an unencrypted zip")
                if parts[0] == "__MACOSX":
                    continue  # macOS resource forks: ignored, never extracted
                is_dir = info.is_dir()
                if len(parts) > (1 if is_dir else 2):
                    raise AdapterError(f"zip entry {info.filename!r} is nested more than one folder deep; {fix}")
                if is_dir:
                    continue
                _check_suffix(parts[-1])
                if info.file_size >= _RATIO_CHECK_MIN_BYTES and \
                        info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
                    raise AdapterError(
                        f"zip entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                        f"({info.compress_size} -> {info.file_size} bytes), more than the allowed "
                        f"{limits.max_compression_ratio:g}x: refused as a possible zip bomb; {fix}")
                total += info.file_size
                if total > limits.zip_uncompressed(recipe):
                    raise AdapterError(f"{zip_path.name}: entries expand to more than the "
                                       f"{limits.zip_uncompressed(recipe)}-byte limit; {fix}")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                              zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                    raise AdapterError(f"zip entry {info.filename!r} uses an unsupported compression method; {fix}")
                if parts[-1] in (CONFIG_NAME, WEIGHTS_NAME, SIDECAR_NAME):
                    folder = "/".join(parts[:-1])
                    wanted.setdefault(folder, {})[parts[-1]] = info
            tensors = [k for k in seen if k.lower().endswith(".safetensors")]
            if len(tensors) > 1:
                raise AdapterError(f"{zip_path.name}: several safetensors files ({_list_preview(tensors, 3)}); "
                                   f"upload one adapter")
            complete = {f: w for f, w in wanted.items() if CONFIG_NAME in w and WEIGHTS_NAME in w}
            if len(complete) != 1:
                raise AdapterError(f"{zip_path.name}: expected one folder (or the zip's top level) holding "
                                   f"{CONFIG_NAME} and {WEIGHTS_NAME}, found "
                                   f"{len(complete) or 'none'}; {fix}")
            files = next(iter(complete.values()))
            dest = Path(dest)
            dest.mkdir(parents=True, exist_ok=True)
            out = Path(tempfile.mkdtemp(prefix="adapter-", dir=dest)).resolve()
            if not out.is_relative_to(dest.resolve()):  # pragma: no cover - mkdtemp under dest
                raise AdapterError("extraction folder escaped its destination")
            try:
                _extract_members(zf, files, out, limits, recipe, fix)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            return out
    except AdapterError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError,
            ValueError, OverflowError) as e:
        raise AdapterError(f"{zip_path.name}: not a readable zip ({_short(e, 120)}); {fix}") from None
    except Exception as e:  # zlib.error, lzma/bz2 errors, struct.error ...
        raise AdapterError(f"{zip_path.name}: corrupt zip ({type(e).__name__}: {_short(e, 120)}); {fix}") from None


def _extract_members(zf: zipfile.ZipFile, files: dict, out: Path, limits: Limits, recipe: LoraRecipe,
                     fix: str) -> None:
    """Copy the chosen entries to fixed names in ``out``, never past their declared or allowed size."""
    limit = {CONFIG_NAME: limits.max_config_bytes, SIDECAR_NAME: limits.max_sidecar_bytes,
             WEIGHTS_NAME: limits.weights_bytes(recipe)}
    for name, info in files.items():
        cap = min(info.file_size, limit[name])
        if info.file_size > limit[name]:
            raise AdapterError(f"zip entry {info.filename!r}: {info.file_size} bytes, more than the "
                               f"{limit[name]}-byte limit for {name}; {fix}")
        written = 0
        with zf.open(info) as src, open(out / name, "xb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > cap:
                    raise AdapterError(f"zip entry {info.filename!r} expands beyond its declared size; "
                                       f"refused as a possible zip bomb")
                dst.write(chunk)


def locate_files(source: str | Path | Sequence[str | Path], recipe: LoraRecipe, limits: Limits,
                 workdir: str | Path) -> AdapterFiles:
    """Resolve an upload (folder / zip / files) to the adapter's files, extracting a zip into ``workdir``."""
    if isinstance(source, (list, tuple)):
        return _from_files(source)
    path = Path(source)
    if path.is_symlink():
        raise AdapterError(f"{path.name}: is a symbolic link; upload the adapter itself")
    if path.is_dir():
        return _from_folder(path)
    if not path.exists():
        raise AdapterError(f"{path}: no such file or folder")
    _check_suffix(path.name)
    if path.suffix.lower() == ".zip":
        folder = extract_zip(path, workdir, limits, recipe)
        files = _from_folder(folder)
        return dataclasses.replace(files, kind="zip")
    if path.suffix.lower() == ".safetensors":
        raise AdapterError(f"{path.name}: a weights file alone cannot be checked; upload it together with its "
                           f"{CONFIG_NAME} (the folder, a zip of it, or both files)")
    raise AdapterError(f"{path.name}: not an adapter; upload the folder written by peft's save_pretrained, a .zip "
                       f"of it, or its {CONFIG_NAME} and {WEIGHTS_NAME}")


# ----------------------------------------------------------------------------- entry points


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_files(files: AdapterFiles, recipe: LoraRecipe, limits: Limits) -> ValidatedAdapter:
    cfg_fix = "re-save the adapter with peft's save_pretrained"
    config = _strict_json(_read_bounded(files.config, limits.max_config_bytes, CONFIG_NAME, cfg_fix),
                          CONFIG_NAME, cfg_fix)
    warnings = check_config(config, recipe)
    if files.sidecar is not None:
        side_fix = f"delete {SIDECAR_NAME} or write it with gtapp"
        check_sidecar(_strict_json(_read_bounded(files.sidecar, limits.max_sidecar_bytes, SIDECAR_NAME, side_fix),
                                   SIDECAR_NAME, side_fix), recipe)
    header = read_safetensors_header(files.weights, limits.weights_bytes(recipe), limits.max_header_bytes,
                                     limits.keys(recipe))
    check_header(header, recipe)
    tensors = _read_tensors(files.weights, header)
    for key, t in tensors.items():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise AdapterError(f"{WEIGHTS_NAME}: tensor {key!r} contains {n_nan} NaN and {n_inf} Inf values; the "
                               f"fine-tune diverged: lower the learning rate or clip gradients and train again")
    factors, init_distance, module_norms = {}, {}, {}
    dot = a_sq = a0_sq = 0.0
    n_entries = 0
    for module in recipe.modules():
        a = tensors[adapter_key(module, "lora_A")].float()
        b = tensors[adapter_key(module, "lora_B")].float()
        a0 = seeded_lora_a(recipe.init_seed, module, recipe.rank, recipe.shapes[module][1])
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise AdapterError(f"{WEIGHTS_NAME}: {module} overflows float32; train again with a lower learning rate")
        dist = float((a.double() - a0.double()).norm() / a0.double().norm().clamp_min(1e-30))
        dot += float((a.double() * a0.double()).sum())
        a_sq += float(a.double().pow(2).sum())
        a0_sq += float(a0.double().pow(2).sum())
        n_entries += a.numel()
        init_distance[module] = dist
        ad, bd = a.double(), b.double()
        module_norms[module] = recipe.scale * math.sqrt(max(0.0, float(torch.trace((bd.T @ bd) @ (ad @ ad.T)))))
        factors[module] = (a, b)
    init_cosine = dot / max(math.sqrt(a_sq * a0_sq), 1e-30)
    needed = max(limits.init_min_cosine, limits.init_z / math.sqrt(max(n_entries, 1)))
    if not init_cosine >= needed:
        raise AdapterError(
            f"{WEIGHTS_NAME}: LoRA A does not match the recipe's seeded initialisation (init_fingerprint "
            f"{recipe.init_fingerprint[:12]}; cosine(A, A0) = {init_cosine:.3g} over {n_entries} entries, "
            f"needed >= {needed:.3g}): fine-tune with the recipe's init (gtapp.models.attach_lora sets it)")
    layer_sq: dict[int, float] = {}
    for module, norm in module_norms.items():
        try:
            layer = layer_of(module)
        except ValueError:
            layer = -1
        layer_sq[layer] = layer_sq.get(layer, 0.0) + norm ** 2
    dtypes = sorted({DTYPE_NAMES[e.dtype] for e in header.entries.values()})
    sizes = {CONFIG_NAME: files.config.stat().st_size, WEIGHTS_NAME: header.file_size}
    if files.sidecar is not None:
        sizes[SIDECAR_NAME] = files.sidecar.stat().st_size
    summary = AdapterSummary(
        modules=recipe.modules(), rank=recipe.rank, alpha=recipe.alpha, scale=recipe.scale,
        dtype=dtypes[0] if len(dtypes) == 1 else f"mixed ({', '.join(dtypes)})",
        num_parameters=sum(t.numel() for t in tensors.values()),
        total_norm=math.sqrt(sum(n ** 2 for n in module_norms.values())),
        module_norms=module_norms, layer_norms={k: math.sqrt(v) for k, v in sorted(layer_sq.items())},
        init_distance=init_distance, init_cosine=init_cosine, file_sizes=sizes, sha256=_sha256(files.weights), source_kind=files.kind,
        base_model_name_or_path=config.get("base_model_name_or_path"), peft_version=config.get("peft_version"),
        recipe_fingerprints=recipe_fingerprints(recipe), warnings=warnings,
    )
    return ValidatedAdapter(summary, config, factors, files)


def load_adapter(source: str | Path | Sequence[str | Path], recipe: LoraRecipe, *, limits: Limits | None = None,
                 workdir: str | Path | None = None) -> ValidatedAdapter:
    """Validate an untrusted adapter against ``recipe`` and return it with its factors.

    ``source``: an adapter folder, a ``.zip`` of one, or a list of its files. A zip is
    extracted into a fresh folder under ``workdir`` (kept, so the caller can store it), or into
    a temporary folder removed before returning when ``workdir`` is None.
    Raises :class:`AdapterError` on anything that does not match.
    """
    limits = limits or Limits()
    if workdir is not None:
        files = locate_files(source, recipe, limits, workdir)
        try:
            return _check_files(files, recipe, limits)
        except BaseException:
            if files.kind == "zip":  # refused: do not leave the extracted copy behind
                shutil.rmtree(files.config.parent, ignore_errors=True)
            raise
    with tempfile.TemporaryDirectory(prefix="gtapp-upload-") as tmp:
        return _check_files(locate_files(source, recipe, limits, tmp), recipe, limits)


def validate_adapter(source: str | Path | Sequence[str | Path], recipe: LoraRecipe, *,
                     limits: Limits | None = None, workdir: str | Path | None = None) -> AdapterSummary:
    """Validate an untrusted adapter against ``recipe``; return what the dashboard shows."""
    return load_adapter(source, recipe, limits=limits, workdir=workdir).summary
