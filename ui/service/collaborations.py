"""Collaborations from the dashboard: a thin layer over storage.collaborations (which holds the
rules: who sees what, consent, contributions never shown to other members) and the job API."""

from __future__ import annotations

from typing import Any, Optional

from storage import collaborations as C
from storage.accounts import Principal
from ui.service.base import ServiceBase, _num


def _id(v: Any, what: str = "collaboration") -> int:
    f = _num(v)
    if f is None or f != int(f) or f < 1:
        raise ValueError(f"choose a {what}")
    return int(f)


class Collaborations(ServiceBase):
    def list_collaborations(self, who: Principal) -> list[dict]:
        with self.session() as s:
            return C.list_for(s, who)

    def collaboration(self, who: Principal, collab_id: Any) -> dict:
        with self.session() as s:
            c = C.visible_to(s, _id(collab_id), who)
            return C.view(s, who, c)

    def collaboration_events(self, who: Principal, collab_id: Any) -> list[dict]:
        with self.session() as s:
            return C.events(s, who, _id(collab_id))

    def create_collaboration(self, who: Principal, name: str, pair_id: Any, invite: str, mapper_id: Any = None,
                             organisation: str = "average_then_map", method: str = "mean",
                             weighting: str = "data_size") -> dict:
        orgs = [x.strip() for x in (invite or "").split(",") if x.strip()]
        if not orgs:
            raise ValueError("invite at least one other organisation (names, separated by commas)")
        with self.session() as s:
            c = C.create(s, who, name, _id(pair_id, "model pair"), orgs,
                         mapper_id=None if mapper_id in (None, "", "promoted") else _id(mapper_id, "mapper version"),
                         organisation=organisation, method=method, weighting=weighting)
            return C.view(s, who, c)

    def answer_invitation(self, who: Principal, collab_id: Any, accept: bool) -> str:
        with self.session() as s:
            m = C.respond(s, who, _id(collab_id), bool(accept))
            return f"your organisation {m.state} the invitation"

    def contribute(self, who: Principal, collab_id: Any, adapter_id: Any, weight: Any = None) -> str:
        cid = _id(collab_id)
        with self.session() as s:
            C.visible_to(s, cid, who)  # an outsider learns nothing, whatever else it sent
            C.contribute(s, who, cid, _id(adapter_id, "TinyLM adapter of yours"),
                         None if weight in (None, "") else _num(weight))
            return ("your TinyLM adapter is contributed; the other members see only that your organisation "
                    "contributed, never which adapter")

    def withdraw(self, who: Principal, collab_id: Any) -> str:
        with self.session() as s:
            C.withdraw(s, who, _id(collab_id))
            return "your organisation withdrew (its contribution is no longer part of the run)"

    def start_collaboration(self, who: Principal, collab_id: Any, device: Optional[str] = "auto") -> int:
        cid = _id(collab_id)
        job_id = self.client.submit("collaborate", {"collaboration_id": cid, "device": device or "auto"}, who)
        with self.session() as s:
            C.mark_started(s, who, C.visible_to(s, cid, who), job_id)
        return job_id
