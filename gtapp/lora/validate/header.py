"""Steps 3 and 4, the safetensors file: its header parsed here with a bounded length before
any tensor is read (keys, dtypes, shapes, byte ranges that tile the data), then the tensors
read from those validated ranges only."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from gtapp.lora.peft_format import WEIGHTS_NAME, expected_keys
from gtapp.lora.recipe import LoraRecipe
from gtapp.lora.validate.common import AdapterError, _list_preview, _short, _strict_json
from gtapp.lora.validate.container import _sniff_pickle

#: safetensors dtype code -> (torch dtype, bytes per element). Only these are accepted.
ALLOWED_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
}
DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


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
