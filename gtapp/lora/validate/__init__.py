"""Validation of an untrusted, uploaded LoRA adapter against a recipe, one module per step.

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
   is reported too. An adapter the server's own fine-tune made (``Limits.init_known``) started
   from A0 by construction, so a long run that drifts further is still accepted; on a small
   model (N of a few hundred) 6/sqrt(N) is strict enough to refuse such a run.

Every failure raises :class:`AdapterError` (a ``ValueError``) whose message says what was
wrong and what to do about it. On success :func:`validate_adapter` returns an
:class:`AdapterSummary` the dashboard can show; :func:`load_adapter` also returns the factors.

The steps live in ``container`` (1), ``config`` (2), ``header`` (3, 4) and ``checks`` (5, and
the summary); ``common`` holds the error and the limits.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from gtapp.lora.recipe import LoraRecipe
from gtapp.lora.validate.checks import AdapterSummary, ValidatedAdapter, _check_files
from gtapp.lora.validate.common import INIT_MIN_COSINE, INIT_Z, AdapterError, Limits
from gtapp.lora.validate.config import check_config, check_sidecar
from gtapp.lora.validate.container import AdapterFiles, extract_zip, locate_files
from gtapp.lora.validate.header import read_safetensors_header

__all__ = ["AdapterError", "AdapterFiles", "AdapterSummary", "Limits", "ValidatedAdapter", "INIT_MIN_COSINE",
           "INIT_Z", "check_config", "check_sidecar", "extract_zip", "load_adapter", "locate_files",
           "read_safetensors_header", "validate_adapter"]


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
