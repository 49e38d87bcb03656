"""Collaborations: several organisations pool one TinyLM adapter each into one LLM adapter.

The life of one, each step a row in its audit log (``collaboration_events``), which every
member can read:

1. an organisation (or an admin) **creates** it: a name, a model pair, a mapper version (or the
   pair's promoted one at run time), gtapp.combine's ``organisation`` and ``method``, a
   weighting rule, and the organisations it **invites**; the creator is a member at once;
2. each invited organisation **accepts** or **declines**;
3. each accepted member **contributes** one of *its own* TinyLM adapters of the pair (and may
   **withdraw** before the run). A contribution is readable only by the worker that runs the
   collaboration: no other member ever learns its id, name, norms or OOD score — members see
   only *that* an organisation has contributed;
4. the creator **starts** the run (a ``collaborate`` job) once two or more members have
   contributed; the job validates every contribution, scores each for out-of-distribution,
   combines, maps and hands the one LLM adapter to every contributing member, with each
   contribution's weight and privacy spend. The combined adapter is (ε_i, δ_i)-DP with respect
   to member i's data by post-processing (the members' datasets are disjoint).

Outsiders see nothing: every function here looks a collaboration up through
:func:`visible_to`, which answers "not found" unless the caller's organisation is a member
(admins see every collaboration's status and members, never a contribution).
"""

from __future__ import annotations

from typing import Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gtapp.choices import COMBINE_METHODS, ORGANISATIONS
from storage.accounts import Principal
from storage.catalog import promoted_mapper
from storage.models import (Adapter, Collaboration, CollaborationEvent, CollaborationMember, Job, MapperVersion,
                            ModelPairRecord, Organisation)
from storage.tenancy import NotFound

WEIGHTINGS = ("data_size", "equal", "given")
MIN_CONTRIBUTIONS = 2


def _event(s: Session, c: Collaboration, who: Optional[Principal], action: str, detail: str = "") -> None:
    s.add(CollaborationEvent(collaboration_id=c.id, org_id=who.org_id if who else None,
                             user_id=who.user_id if who else None, action=action, detail=detail[:2000]))


def _member(s: Session, c: Collaboration, org_id: int) -> Optional[CollaborationMember]:
    return s.scalars(select(CollaborationMember).where(CollaborationMember.collaboration_id == c.id,
                                                       CollaborationMember.org_id == org_id)).one_or_none()


def visible_to(s: Session, collab_id, who: Principal) -> Collaboration:
    """The collaboration if ``who``'s organisation is in it (or ``who`` is an admin); else NotFound."""
    c = s.get(Collaboration, collab_id) if isinstance(collab_id, int) and not isinstance(collab_id, bool) else None
    if c is None or not (who.is_admin or _member(s, c, who.org_id) is not None):
        raise NotFound(f"collaboration {collab_id} not found")
    sync(s, c)
    return c


def sync(s: Session, c: Collaboration) -> None:
    """A run whose job failed or was cancelled leaves the collaboration open again."""
    if c.status == "running" and c.job_id is not None:
        job = s.get(Job, c.job_id)
        if job is not None and job.status in ("failed", "cancelled"):
            c.status = "open"
            _event(s, c, None, f"run {job.status}", (job.error or "")[:300])


def create(s: Session, who: Principal, name: str, pair_id: int, invite: Sequence[str], *,
           mapper_id: Optional[int] = None, organisation: str = "average_then_map", method: str = "mean",
           weighting: str = "data_size") -> Collaboration:
    name = (name or "").strip()
    if not 0 < len(name) <= 200:
        raise ValueError("a collaboration needs a name (1..200 characters)")
    if organisation not in ORGANISATIONS:
        raise ValueError(f"organisation must be one of {', '.join(ORGANISATIONS)}")
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {', '.join(COMBINE_METHODS)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
    if s.get(ModelPairRecord, pair_id) is None:
        raise NotFound(f"model pair {pair_id} not found")
    if mapper_id is not None:
        mv = s.get(MapperVersion, mapper_id)
        if mv is None or mv.model_pair_id != pair_id:
            raise NotFound(f"mapper {mapper_id} not found for model pair {pair_id}")
    names = sorted({n.strip() for n in invite if n and n.strip()})
    orgs = {o.name: o for o in s.scalars(select(Organisation).where(Organisation.name.in_(names)))} if names else {}
    unknown = [n for n in names if n not in orgs]
    if unknown:
        # the same answer whether an organisation exists or not would hide typos; names of
        # organisations are not secret here (they appear in every shared result)
        raise NotFound(f"no organisation named {', '.join(unknown)}")
    c = Collaboration(name=name, model_pair_id=pair_id, mapper_id=mapper_id, organisation=organisation,
                      method=method, weighting=weighting, created_by_org=who.org_id, created_by_user=who.user_id,
                      status="open", result={})
    s.add(c)
    s.flush()
    s.add(CollaborationMember(collaboration_id=c.id, org_id=who.org_id, state="accepted"))
    _event(s, c, who, "created", f"pair {pair_id}, {organisation}, {method}, weighting {weighting}")
    for o in orgs.values():
        if o.id != who.org_id:
            s.add(CollaborationMember(collaboration_id=c.id, org_id=o.id, state="invited"))
            _event(s, c, who, "invited", o.name)
    s.flush()
    return c


def _open(c: Collaboration) -> None:
    if c.status != "open":
        raise ValueError(f"collaboration '{c.name}' is {c.status}: this can only be done before its run")


def respond(s: Session, who: Principal, collab_id: int, accept: bool) -> CollaborationMember:
    c = visible_to(s, collab_id, who)
    m = _member(s, c, who.org_id)
    if m is None:
        raise PermissionError("only an invited organisation answers an invitation")
    _open(c)
    if m.state != "invited":
        raise ValueError(f"your organisation has already answered ({m.state})")
    m.state = "accepted" if accept else "declined"
    _event(s, c, who, m.state)
    return m


def contribute(s: Session, who: Principal, collab_id: int, adapter_id: int, weight: Optional[float] = None
               ) -> CollaborationMember:
    c = visible_to(s, collab_id, who)
    m = _member(s, c, who.org_id)
    if m is None or m.state != "accepted":
        raise PermissionError("accept the invitation first; only accepted members contribute")
    _open(c)
    a = s.get(Adapter, adapter_id) if isinstance(adapter_id, int) else None
    if a is None or a.org_id != who.org_id:
        raise NotFound(f"adapter {adapter_id} not found")
    if a.model != "tiny" or a.model_pair_id != c.model_pair_id:
        raise ValueError(f"adapter {adapter_id} is not a TinyLM adapter of the collaboration's model pair")
    if c.weighting == "given":
        if weight is None or not weight > 0:
            raise ValueError("this collaboration weighs contributions as given: give your weight (> 0)")
        m.weight = float(weight)
    m.adapter_id = a.id
    _event(s, c, who, "contributed", "one TinyLM adapter")  # never which one
    return m


def withdraw(s: Session, who: Principal, collab_id: int) -> CollaborationMember:
    c = visible_to(s, collab_id, who)
    m = _member(s, c, who.org_id)
    if m is None or m.state != "accepted":
        raise PermissionError("only an accepted member withdraws")
    _open(c)
    m.state, m.adapter_id, m.weight = "withdrawn", None, None
    _event(s, c, who, "withdrew")
    return m


def contributions(s: Session, c: Collaboration) -> list[CollaborationMember]:
    return list(s.scalars(select(CollaborationMember).where(
        CollaborationMember.collaboration_id == c.id, CollaborationMember.state == "accepted",
        CollaborationMember.adapter_id.is_not(None)).order_by(CollaborationMember.org_id)))


def check_startable(s: Session, who: Principal, c: Collaboration) -> None:
    """The creator (or an admin) starts an open collaboration with two or more contributions."""
    if not (who.is_admin or who.org_id == c.created_by_org):
        raise PermissionError("only the organisation that created the collaboration starts its run")
    _open(c)
    n = len(contributions(s, c))
    if n < MIN_CONTRIBUTIONS:
        raise ValueError(f"{n} contribution(s) so far; a collaboration runs with at least {MIN_CONTRIBUTIONS}")
    if c.mapper_id is None and promoted_mapper(s, c.model_pair_id) is None:
        raise ValueError("the model pair has no promoted mapper yet: an admin promotes one (or choose a version)")


def mark_started(s: Session, who: Principal, c: Collaboration, job_id: int) -> None:
    c.status, c.job_id = "running", job_id
    _event(s, c, who, "started", f"job {job_id}, {len(contributions(s, c))} contributions")


def view(s: Session, who: Principal, c: Collaboration) -> dict:
    """What ``who`` may see: the set-up, each member's state and whether it contributed (never
    what), its own contribution, and — for a contributing member — the result."""
    orgs = {o.id: o.name for o in s.scalars(select(Organisation))}
    members = list(s.scalars(select(CollaborationMember).where(CollaborationMember.collaboration_id == c.id)
                             .order_by(CollaborationMember.id)))
    mine = next((m for m in members if m.org_id == who.org_id), None)
    own = None
    if mine is not None and mine.adapter_id is not None:
        a = s.get(Adapter, mine.adapter_id)
        own = {"adapter_id": mine.adapter_id, "name": a.name if a else None, "weight": mine.weight}
    out = {"id": c.id, "name": c.name, "pair_id": c.model_pair_id, "mapper_id": c.mapper_id,
           "organisation": c.organisation, "method": c.method, "weighting": c.weighting,
           "created_by": orgs.get(c.created_by_org), "status": c.status, "job_id": c.job_id,
           "you_created": c.created_by_org == who.org_id,
           "members": [{"org": orgs.get(m.org_id), "state": m.state, "contributed": m.adapter_id is not None,
                        "you": m.org_id == who.org_id} for m in members],
           "your_state": mine.state if mine else None, "your_contribution": own, "result": None}
    if mine is not None and mine.result_adapter_id is not None:
        out["result"] = {**(c.result or {}), "adapter_id": mine.result_adapter_id}
    return out


def events(s: Session, who: Principal, collab_id: int) -> list[dict]:
    c = visible_to(s, collab_id, who)
    orgs = {o.id: o.name for o in s.scalars(select(Organisation))}
    return [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S UTC"), "org": orgs.get(e.org_id, "gtapp"), "action": e.action,
             "detail": e.detail} for e in s.scalars(select(CollaborationEvent).where(
                 CollaborationEvent.collaboration_id == c.id).order_by(CollaborationEvent.id))]


def list_for(s: Session, who: Principal) -> list[dict]:
    q = select(Collaboration).order_by(Collaboration.id.desc())
    if not who.is_admin:
        q = q.join(CollaborationMember, CollaborationMember.collaboration_id == Collaboration.id).where(
            CollaborationMember.org_id == who.org_id)
    out = []
    for c in s.scalars(q):
        sync(s, c)
        m = _member(s, c, who.org_id)
        out.append({"id": c.id, "name": c.name, "status": c.status, "pair_id": c.model_pair_id,
                    "method": f"{c.organisation}/{c.method}", "your_state": m.state if m else "(admin)",
                    "contributions": len(contributions(s, c))})
    return out


def record_result(s: Session, c: Collaboration, result: dict, adapters_by_org: dict[int, int]) -> None:
    c.status, c.result = "done", result
    for m in contributions(s, c):
        m.result_adapter_id = adapters_by_org.get(m.org_id)
    _event(s, c, None, "done", f"LLM adapter delivered to {len(adapters_by_org)} member(s)")
