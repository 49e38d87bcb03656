"""Collaborate: run a collaboration (storage.collaborations) — every contributing member's TinyLM
adapter, validated and scored for OOD, combined and mapped into one LLM adapter that each
contributing member receives."""

from __future__ import annotations

import json

from workers.jobs.common import _is_int, _jsonable, _load_pair, _pair_folder, _resolve_device
from workers.jobs.registry import job
from workers.redact import redact_json_files


def _check_collaborate(p: dict) -> None:
    if not _is_int(p["collaboration_id"]):
        raise ValueError("collaborate needs collaboration_id")


def _precheck_collaborate(p: dict, s, who) -> None:
    """Only the collaboration's creator (or an admin) starts it, and only when it can run; an
    outsider is told it does not exist."""
    from storage import collaborations as C

    C.check_startable(s, who, C.visible_to(s, p["collaboration_id"], who))


@job("collaborate", queue="gpu", requires=("gtapp.generate",), validate=_check_collaborate,
     precheck=_precheck_collaborate, defaults={"collaboration_id": None, "device": "auto"})
def collaborate(params: dict, ctx) -> dict:
    """Combine the contributions of a collaboration's members into one LLM adapter (its
    mapper version, combining method and weighting); deliver it to every contributing member
    with each contribution's weight and privacy spend. Started from the Collaborations tab."""
    from sqlalchemy import select

    from gtapp.generate import generate as run_generate
    from gtapp.mapper import load_mapper
    from gtapp.privacy import contributors_privacy
    from storage import collaborations as C
    from storage.catalog import pair_model_name, promoted_mapper
    from storage.models import Adapter, Collaboration, MapperVersion, Organisation

    ctx.progress(0.0, "preparing")
    with ctx.session() as s:
        c = s.get(Collaboration, params["collaboration_id"])
        if c is None:
            raise ValueError(f"collaboration {params['collaboration_id']} not found")
        mv = s.get(MapperVersion, c.mapper_id) if c.mapper_id is not None else promoted_mapper(s, c.model_pair_id)
        if mv is None:
            raise ValueError("the model pair has no promoted mapper yet: an admin promotes one")
        orgs = {o.id: o.name for o in s.scalars(select(Organisation))}
        members = []
        for m in C.contributions(s, c):
            a = s.get(Adapter, m.adapter_id)  # the worker reads contributions for the collaboration
            if a is None or a.org_id != m.org_id or a.model_pair_id != c.model_pair_id:
                raise ValueError(f"the contribution of {orgs.get(m.org_id)} is no longer available; it must "
                                 "contribute again")
            record = (a.meta or {}).get("record") or {}
            members.append({"org_id": m.org_id, "org": orgs.get(m.org_id), "artifact": a.artifact,
                            "weight": m.weight, "epsilon": record.get("epsilon"), "delta": record.get("delta"),
                            "origin": a.origin})
        setup = {"organisation": c.organisation, "method": c.method, "weighting": c.weighting,
                 "pair_id": c.model_pair_id, "name": c.name}
        mapper_artifact, mapper_version = mv.artifact, {"id": mv.id, "version": mv.version, "kind": mv.kind}
    if len(members) < C.MIN_CONTRIBUTIONS:
        raise ValueError(f"{len(members)} contribution(s); a collaboration runs with at least {C.MIN_CONTRIBUTIONS}")
    pair = _load_pair(ctx, setup["pair_id"])
    device = _resolve_device(params["device"])
    mapper = load_mapper(ctx.store.materialize(mapper_artifact, ctx.work_dir / "mapper"), device=device)
    dirs = [str(ctx.store.materialize(m["artifact"], ctx.work_dir / "tiny" / str(i))) for i, m in enumerate(members)]
    weights = [m["weight"] for m in members] if setup["weighting"] == "given" else None
    ctx.log(f"collaborate: {len(members)} contributions, {setup['organisation']} / {setup['method']}, "
            f"mapper v{mapper_version['version']} ({mapper_version['kind']})")
    out = ctx.work_dir / "llm_adapter"
    result = run_generate(mapper, dirs, out, weights=weights, zoo=_pair_folder(pair, ctx.work_dir / "zoo"),
                          organisation=setup["organisation"], method=setup["method"],
                          weighting="equal" if setup["weighting"] == "equal" else "data_size",
                          names=[m["org"] for m in members], model_name=pair_model_name(pair["name"], "llm"),
                          init_known=[m["origin"] == "produced" for m in members])
    ctx.check_cancel()
    rows = _jsonable(result.record).get("contributors") or []
    contributors, flagged = [], 0
    for m, r in zip(members, rows):
        eps = m["epsilon"]
        ood = r.get("ood") or {}
        flagged += bool(ood.get("ood"))
        # never a contribution's OOD score or flag per member: only how many were flagged
        contributors.append({"org": m["org"], "weight": r.get("weight"), "dp": eps is not None, "epsilon": eps,
                             "delta": m["delta"] if eps is not None else None})
    privacy = contributors_privacy([{"name": c_["org"], "epsilon": c_["epsilon"], "delta": c_["delta"]}
                                    for c_ in contributors])
    shared = {"contributors": contributors, "privacy": privacy, "mapper": mapper_version,
              "organisation": setup["organisation"], "method": setup["method"], "weighting": setup["weighting"],
              "flagged_out_of_distribution": flagged,
              "privacy_note": "each member's (ε, δ) covers its own data: the members' datasets are disjoint, and "
                              "combining and mapping are post-processing"}
    # generate.json names each contribution with its OOD score and data size: every member
    # downloads this folder, so it holds only what every member may see
    (out / "generate.json").write_text(json.dumps({"kind": "collaboration", **shared}, indent=2, default=str))
    redact_json_files(out)
    sha = ctx.store.put_tree(out)
    if flagged:
        ctx.log(f"warning: {flagged} of {len(members)} contributions are out of distribution (which ones is not "
                f"shown: contributions stay private); a robust method (median, clip) limits their influence")

    def register(s, job_row) -> dict:
        c = s.get(Collaboration, params["collaboration_id"])
        delivered = {}
        for m in members:
            a = Adapter(org_id=m["org_id"], user_id=None, model_pair_id=setup["pair_id"], model="llm",
                        origin="generated", name=f"{setup['name']} (collaboration {c.id})", artifact=sha,
                        job_id=job_row.id,
                        meta={"collaboration_id": c.id, "record": {"epsilon": privacy["epsilon"],
                                                                   "delta": privacy["delta"],
                                                                   "dp": privacy["all_dp"]},
                              "privacy": privacy, "collaboration": shared})
            s.add(a)
            s.flush()
            delivered[m["org_id"]] = a.id
        C.record_result(s, c, shared, delivered)
        return {"delivered_to": len(delivered)}

    ctx.on_success(register)
    return {"adapter_artifact": sha, "contributions": len(members), "flagged_out_of_distribution": flagged,
            "weights": [c_["weight"] for c_ in contributors]}
