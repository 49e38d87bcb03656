"""Tenancy, in one place: which rows of which organisation a principal may see.

An organisation's datasets, adapters, evaluations and jobs are visible to its own members
and (``admins_see_all``) to admins; a row of another organisation reads exactly like a
missing one. Every query of such rows goes through :func:`owned`, every lookup by id through
:func:`visible`.
"""

from __future__ import annotations

from typing import Any, Optional

from storage.accounts import Principal


class NotFound(LookupError):
    """Missing, or another organisation's (the two read the same)."""


def _sees(who: Principal, org_id: Optional[int], admins_see_all: bool) -> bool:
    return (admins_see_all and who.is_admin) or org_id == who.org_id


def owned(query, model, who: Principal, admins_see_all: bool = True):
    """``query`` limited to ``who``'s organisation's rows of ``model`` (admins: all rows,
    unless ``admins_see_all`` is False: an organisation's private data is its own)."""
    if admins_see_all and who.is_admin:
        return query
    return query.where(model.org_id == who.org_id)


def visible(session, model, ref: Any, who: Principal, what: str, admins_see_all: bool = True,
            error: type[LookupError] = NotFound):
    """The row of ``model`` with id ``ref`` if ``who`` may see it; else ``error("<what> <ref> not found")``."""
    row = session.get(model, ref) if ref is not None else None
    if row is None or not _sees(who, row.org_id, admins_see_all):
        raise error(f"{what} {ref} not found")
    return row


def of_org(session, model, ref: Any, org_id: int, what: str, error: type[LookupError] = NotFound):
    """The row of ``model`` with id ``ref`` if it belongs to organisation ``org_id`` (a job acting
    for its organisation); else ``error("<what> <ref> not found")``."""
    row = session.get(model, ref) if ref is not None else None
    if row is None or row.org_id != org_id:
        raise error(f"{what} {ref} not found")
    return row
