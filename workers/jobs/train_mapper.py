"""Train_mapper: fit a Gradient Transformer (or a ridge / mean baseline) on a pair set"""

from __future__ import annotations

from workers.jobs.common import (
    MAPPER_KINDS,
    _check_device,
    _is_int,
    _is_num,
    _jsonable,
    _load_pair,
    _resolve_device,
    _scaled_progress,
)
from workers.jobs.registry import job


def _check_train_mapper(p: dict) -> None:
    for key in ("pair_set_id", "pair_id"):
        if p[key] is not None and not _is_int(p[key]):
            raise ValueError(f"{key} must be an integer")
    if p["pair_set_id"] is None and p["pair_id"] is None:
        raise ValueError("train_mapper needs pair_set_id (a pair set made by a shadow job), or pair_id "
                         "(that model pair's newest pair set is used)")
    if p["kind"] not in MAPPER_KINDS:
        raise ValueError(f"unknown mapper kind {p['kind']!r}; choose one of {', '.join(MAPPER_KINDS)}")
    cfg = p["config"] if p["config"] is not None else {}
    if not isinstance(cfg, dict):
        raise ValueError("config must be an object of mapper settings")
    # torch: imported already by the kind's availability check
    from gtapp.mapper.registry import mapper_classes

    known = mapper_classes()[p["kind"]].default_config()
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for a {p['kind']} mapper; known: {sorted(known)}")
    if not isinstance(p["learning_curve"], bool):
        raise ValueError("learning_curve must be true or false")
    if p["name"] is not None and (not isinstance(p["name"], str) or not 0 < len(p["name"]) <= 200):
        raise ValueError("name must be a string of 1..200 characters")
    _check_device(p)


def _card_metrics(card: dict) -> dict:
    """The card's headline numbers (flat, for tables), with the whole card beside them."""
    out = {}
    for prefix, part in (("train", card.get("train") or {}), ("val", card.get("validation") or {}),
                         ("val_mean_baseline", card.get("validation_mean_baseline") or {})):
        for key, name in (("rel_err_mean", "rel_err"), ("cosine_mean", "cosine")):
            if _is_num(part.get(key)):
                out[f"{prefix}_{name}"] = float(part[key])
    return out


@job("train_mapper", queue="gpu", admin_only=True, requires=("gtapp.mapper",), validate=_check_train_mapper,
     defaults={"pair_set_id": None, "pair_id": None, "kind": "gt", "config": {}, "name": None, "promote": False,
               "device": "auto", "learning_curve": False})
def train_mapper(params: dict, ctx) -> dict:
    """Fit a mapper (`kind` gt | ridge | mean, `config` its settings) on a pair set, split by
    shadow run; validation numbers (with the mean-of-shadow baseline beside them) go to its
    card. Produces a mapper version (`promote`: also make it the pair's promoted one).
    `learning_curve`: first measure mean, ridge and this mapper's held-out run and held-out
    task error at 100, 400, 1,600 and all pairs (gtapp.mapper.curve); the card keeps it."""
    from sqlalchemy import select

    from gtapp.mapper import make_mapper, recipe_fingerprint
    from gtapp.lora.recipe import LoraRecipe
    from gtapp.pairset import PairSet
    from storage.models import MapperVersion, PairSetRecord

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        if params["pair_set_id"] is not None:
            row = s.get(PairSetRecord, params["pair_set_id"])
            if row is None:
                raise ValueError(f"pair set {params['pair_set_id']} not found")
            if params["pair_id"] is not None and row.model_pair_id != params["pair_id"]:
                raise ValueError(f"pair set {row.id} belongs to model pair {row.model_pair_id}, "
                                 f"not {params['pair_id']}")
        else:
            row = s.scalars(select(PairSetRecord).where(PairSetRecord.model_pair_id == params["pair_id"])
                            .order_by(PairSetRecord.id.desc()).limit(1)).first()
            if row is None:
                raise ValueError(f"model pair {params['pair_id']} has no pair set yet: run a shadow job first")
        ps_id, ps_artifact, ps_name, pair_id = row.id, row.artifact, row.name, row.model_pair_id
    pair = _load_pair(ctx, pair_id)
    folder = ctx.store.materialize(ps_artifact, ctx.work_dir / "pairset")
    pair_set = PairSet.load(folder)
    for which in ("tiny", "llm"):
        registered = recipe_fingerprint(LoraRecipe.from_dict(pair["recipe"][which], f"pair {pair_id} {which}"))
        made = recipe_fingerprint(getattr(pair_set.recipes, which))
        if registered != made:
            raise ValueError(f"pair set {ps_id} was made with another {which} recipe ({made[:12]}) than model "
                             f"pair '{pair['name']}' has ({registered[:12]})")
    kind = params["kind"]
    config = dict(params["config"] or {})
    config.setdefault("split_seed", params["seed"])
    if kind == "gt":
        config.setdefault("seed", params["seed"])
        config.setdefault("device", _resolve_device(params["device"]))
    mapper = make_mapper(kind, pair_set.recipes, config)
    ctx.log(f"train_mapper: {kind} on pair set {ps_id} '{ps_name}' ({len(pair_set)} pairs, "
            f"{len(pair_set.runs)} runs, version {pair_set.version})")
    curve = None
    start = 0.02
    if params["learning_curve"]:
        from gtapp.mapper.curve import learning_curve

        ctx.progress(0.02, "learning curve (held-out shadow runs and tasks)")
        kinds = {"mean": ("mean", None), "ridge": ("ridge", None)}
        if kind not in kinds:
            kinds[kind] = (kind, config)
        curve = learning_curve(pair_set, kinds, seed=params["seed"], log=ctx.log,
                               on_fit=lambda *_: ctx.check_cancel())
        start = 0.5
    ctx.progress(start, f"fitting {kind} mapper")
    mapper.fit(pair_set, progress=_scaled_progress(ctx, start, 0.95))
    if curve is not None:
        mapper.card["learning_curve"] = curve
    ctx.check_cancel()
    ctx.progress(0.95, "saving mapper version")
    out = mapper.save(ctx.work_dir / "mapper")
    sha = ctx.store.put_tree(out)
    card = _jsonable(mapper.card)
    headline = _card_metrics(card)
    ctx.log(f"train_mapper: {kind} mapper {card.get('version')}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    metrics = {**headline, "name": params["name"] or f"{kind}-job{ctx.job_id}", "version_hash": card.get("version"),
               "pair_set_version": pair_set.version, "card": card}

    def register(s, job_row) -> dict:
        from sqlalchemy import func

        from storage.catalog import promote_mapper

        last = s.scalar(select(func.max(MapperVersion.version)).where(MapperVersion.model_pair_id == pair_id))
        mv = MapperVersion(model_pair_id=pair_id, version=(last or 0) + 1, kind=kind, artifact=sha, pair_set_id=ps_id,
                           metrics=metrics, promoted=False, job_id=job_row.id)
        s.add(mv)
        s.flush()
        if params["promote"]:
            promote_mapper(s, mv.id)
        return {"mapper_id": mv.id, "version": mv.version, "promoted": bool(params["promote"])}

    ctx.on_success(register)
    return {"mapper_artifact": sha, "kind": kind, "pair_set_id": ps_id, "metrics": headline,
            "version_hash": card.get("version")}
