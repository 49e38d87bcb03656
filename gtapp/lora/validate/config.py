"""Step 2, the config: ``adapter_config.json`` is plain LoRA with the recipe's rank, alpha and
target modules and nothing peft's LoraConfig does not know; ``gtapp_recipe.json``, if present,
carries the recipe's fingerprints."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gtapp.lora.peft_format import CONFIG_NAME, SIDECAR_NAME
from gtapp.lora.recipe import LoraRecipe, recipe_fingerprints
from gtapp.lora.validate.common import AdapterError, _as_float, _list_preview, _short

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


PRIVACY_KEYS = {"dp": bool, "epsilon": (int, float, type(None)), "delta": (int, float, type(None)),
                "accountant": (str, type(None)), "weights_sha256": str, "job_id": (int, type(None)),
                "issued_by": str, "note": (str, type(None))}


def check_privacy_claim(claim: Any) -> dict:
    """The ``privacy`` record gtapp writes into the sidecar of an adapter it hands out: what the
    adapter's training spent. An uploaded one is only a *claim* until matched to our records."""
    where = f"{SIDECAR_NAME} 'privacy'"
    if not isinstance(claim, dict):
        raise AdapterError(f"{where}: expected a JSON object; delete the key or write it with gtapp")
    unknown = set(claim) - set(PRIVACY_KEYS)
    if unknown:
        raise AdapterError(f"{where}: unknown keys {_list_preview(unknown)}; delete the key or write it with gtapp")
    for key, kind in PRIVACY_KEYS.items():
        if key in claim and (not isinstance(claim[key], kind) or (kind is not bool and isinstance(claim[key], bool))):
            raise AdapterError(f"{where}: '{key}' has the wrong type; delete the key or write it with gtapp")
    eps = claim.get("epsilon")
    if eps is not None and not (eps > 0 and eps < 1e6):
        raise AdapterError(f"{where}: epsilon must be a positive number")
    if isinstance(claim.get("weights_sha256"), str) and not _is_hex64(claim["weights_sha256"]):
        raise AdapterError(f"{where}: weights_sha256 must be 64 hex digits")
    if isinstance(claim.get("note"), str) and len(claim["note"]) > 500:
        raise AdapterError(f"{where}: note is longer than 500 characters")
    return claim


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def check_sidecar(sidecar: Any, recipe: LoraRecipe) -> None:
    """``gtapp_recipe.json``, if present, must describe this recipe."""
    where = SIDECAR_NAME
    if not isinstance(sidecar, dict):
        raise AdapterError(f"{where}: expected a JSON object; delete the file or write it with gtapp")
    expected = recipe_fingerprints(recipe)
    allowed = set(expected) | {"gtapp_recipe", "base_model", "privacy"}
    unknown = set(sidecar) - allowed
    if unknown:
        raise AdapterError(f"{where}: unknown keys {_list_preview(unknown)}; delete the file or write it with gtapp")
    if "privacy" in sidecar:
        check_privacy_claim(sidecar["privacy"])
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
