"""Zoo: build a TinyLM/LLM pair from scratch and register it as a model pair (admin)"""

from __future__ import annotations

import re

from gtapp.choices import ZOO_PRESETS
from workers.jobs.registry import job

ZOO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_zoo(p: dict) -> None:
    if p["preset"] not in ZOO_PRESETS:  # gtapp.zoo imports torch; gtapp.choices does not
        raise ValueError(f"preset must be one of {list(ZOO_PRESETS)}, got {p['preset']!r}")
    if p["name"] is not None and not ZOO_NAME.match(p["name"]):
        raise ValueError("name: letters, digits, '_', '.', '-' (max 64), starting with a letter or digit")


@job("zoo", queue="gpu", admin_only=True, requires=("gtapp.zoo",), validate=_check_zoo,
     defaults={"preset": "ci", "name": None})
def zoo(params: dict, ctx) -> dict:
    """Build a TinyLM/LLM pair (`preset` micro | ci | demo | gpu, `seed`) into the zoo folder
    (setting `zoo_dir`) under `name` (default `<preset>-s<seed>`) and register it as a model pair."""
    import shutil

    from gtapp import zoo as gzoo
    from storage.catalog import register_pair

    name = params["name"] or f"{params['preset']}-s{params['seed']}"
    dest = ctx.settings.zoo_root / name
    if dest.exists():
        raise ValueError(f"zoo folder '{name}' already exists; choose another name")
    staging = ctx.work_dir / "zoo"
    gzoo.build(params["preset"], staging, seed=params["seed"], progress=ctx.progress_fn)
    ctx.check_cancel()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(dest))  # appears whole, only once built
    ctx.log(f"built zoo '{name}' ({params['preset']}, seed {params['seed']}) at {dest}")

    def register(s, job_row) -> dict:
        return {"pair_id": register_pair(s, name, dest).id}

    ctx.on_success(register)
    return {"zoo": name}
