"""The job-kind registry: JobSpec, the @job decorator, REGISTRY, get_spec."""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

PARAM_TYPES = (bool, int, float, str, list, dict)


class JobNotAvailable(RuntimeError):
    """The job kind exists but this version of gtapp cannot run it."""


@dataclass
class JobSpec:
    kind: str
    fn: Callable[[dict, Any], dict]
    queue: str = "cpu"  # cpu | gpu
    admin_only: bool = False
    description: str = ""
    defaults: dict = field(default_factory=dict)  # every accepted parameter with its default
    requires: tuple[str, ...] = ()  # gtapp modules that must be importable
    validate: Optional[Callable[[dict], None]] = None  # extra checks; raise ValueError
    privacy: Optional[Callable[[dict, Any], Any]] = None  # (params, session) -> ledger.DPRequest | None
    # (params, session, principal): refuse at submission what the job would refuse later
    precheck: Optional[Callable[[dict, Any, Any], None]] = None
    soft_time_limit_s: Optional[int] = None  # default: settings.job_soft_time_limit_s

    def available(self) -> tuple[bool, str]:
        # find_spec, not import: checking a kind must not import gtapp (and so torch) in the
        # dashboard's request path.
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return False, (f"job kind '{self.kind}' is not available in this version of gtapp "
                               f"(module {module} is missing)")
        return True, ""

    def check_params(self, params: Optional[dict]) -> dict:
        """Defaults filled in, unknown names and wrong types refused (ValueError)."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for job kind '{self.kind}'; "
                             f"accepted: {sorted(self.defaults)}")
        out = {}
        for name, default in self.defaults.items():
            value = params.get(name, default)
            if value is not None and default is not None:
                want = type(default)
                ok = (isinstance(value, bool) if want is bool else
                      isinstance(value, (int, float)) and not isinstance(value, bool) if want is float else
                      isinstance(value, int) and not isinstance(value, bool) if want is int else
                      isinstance(value, want))
                if not ok:
                    raise ValueError(f"parameter '{name}' of '{self.kind}' should be {want.__name__}, got {value!r}")
                if want is float:
                    value = float(value)
            elif value is not None and not isinstance(value, PARAM_TYPES):
                raise ValueError(f"parameter '{name}' of '{self.kind}' must be JSON data, got {type(value).__name__}")
            out[name] = value
        json.dumps(out)  # must be storable
        if not isinstance(out.get("seed", 0), int):
            raise ValueError("seed must be an integer")
        if self.validate:
            self.validate(out)
        return out


REGISTRY: dict[str, JobSpec] = {}


def job(kind: str, **kw) -> Callable:
    def deco(fn: Callable) -> Callable:
        defaults = kw.pop("defaults", {})
        defaults.setdefault("seed", 0)  # every experiment takes a seed
        REGISTRY[kind] = JobSpec(kind=kind, fn=fn, defaults=defaults, description=(fn.__doc__ or "").strip(), **kw)
        return fn
    return deco


def get_spec(kind: str) -> JobSpec:
    spec = REGISTRY.get(kind)
    if spec is None:
        raise ValueError(f"unknown job kind '{kind}'; known kinds: {sorted(REGISTRY)}")
    return spec
