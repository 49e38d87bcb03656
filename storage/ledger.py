"""The privacy ledger: every DP job's spend on an organisation's dataset, composed.

A DP job *reserves* its requested ε when it is submitted, inside the transaction that
creates the job, after checking that the composed spend (everything already reserved or
spent on the dataset, plus this request) stays within the dataset's budget; otherwise it
is refused before anything runs, with the budget, the spend so far and the request in the
message. Privacy is *charged* when private data is used in training, not when a job is
queued: when the job succeeds its entry becomes *spent* with the ε the accountant reported;
a job that fails or is cancelled before its first DP step gives its reservation back
(*released*); one stopped part-way is charged for the steps it ran (the accountant over the
steps actually taken); a job whose worker was lost, so that the steps taken are unknown, is
charged in full. Each entry's note says which.

A fine-tune *without* DP on a dataset that has a budget is refused, unless the organisation
has marked the dataset "no DP required" (an explicit choice, recorded with who and when);
such a job's entry is ε = ∞, and after it no DP job on that dataset can promise anything.

Composition is ``gtapp.privacy.compose_entries`` (the one place privacy numbers are
computed): RDP over each job's noise_multiplier/sample_rate/steps when every entry carries
them, else basic composition (the sum of the ε's). Each entry records which was used.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from gtapp.privacy import Composed, compose_entries
from storage.models import Dataset, PrivacyLedgerEntry, utcnow

EPS_TOLERANCE = 1e-9


class BudgetExceeded(ValueError):
    def __init__(self, dataset: str, budget: float, spent: float, requested: float, total: float,
                 delta: float, accountant: str):
        self.budget, self.spent, self.requested, self.total = budget, spent, requested, total
        super().__init__(
            f"privacy budget exceeded for dataset '{dataset}': budget ε={budget:g} (δ={delta:g}), "
            f"already spent ε={spent:.4g}, this job requests ε={requested:.4g}; together "
            f"ε would be {total:.4g} ({accountant} composition). "
            "Lower the job's target ε or raise the dataset's budget.")


@dataclass(frozen=True)
class DPRequest:
    """What a DP job asks of the ledger before it is queued."""

    dataset_id: int
    epsilon: float
    delta: float
    mechanism: dict  # whatever is known up front (noise_multiplier, sample_rate, steps, max_grad_norm)


@dataclass(frozen=True)
class NonDPRequest:
    """A job that trains on a dataset without DP (allowed only on datasets marked "no DP required")."""

    dataset_id: int


def _entry_dict(e: PrivacyLedgerEntry) -> dict:
    return {"epsilon": e.epsilon, "delta": e.delta, "mechanism": e.mechanism or {}}


def active_entries(session: Session, dataset_id: int) -> list[PrivacyLedgerEntry]:
    return list(session.scalars(
        select(PrivacyLedgerEntry)
        .where(PrivacyLedgerEntry.dataset_id == dataset_id, PrivacyLedgerEntry.status != "released")
        .order_by(PrivacyLedgerEntry.id)))


def spent(session: Session, dataset: Dataset) -> Composed:
    return compose_entries([_entry_dict(e) for e in active_entries(session, dataset.id)], dataset.delta)


def _lock_dataset(session: Session, dataset_id: int) -> Dataset:
    q = select(Dataset).where(Dataset.id == dataset_id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()  # serialise concurrent reservations on one dataset
    ds = session.scalars(q).one_or_none()
    if ds is None:
        raise ValueError(f"dataset {dataset_id} not found")
    return ds


def record(session: Session, request, org_id: int, job_id: Optional[int] = None) -> Optional[PrivacyLedgerEntry]:
    """The ledger's part of submitting a job: :func:`reserve` a DP request, :func:`non_dp` the rest."""
    if isinstance(request, NonDPRequest):
        return non_dp(session, request, org_id, job_id)
    return reserve(session, request, org_id, job_id)


def non_dp(session: Session, request: NonDPRequest, org_id: int, job_id: Optional[int] = None) -> Optional[PrivacyLedgerEntry]:
    """A non-DP job on a dataset: nothing to record without a budget; refused on a budgeted
    dataset unless it is marked "no DP required"; then an ε = ∞ entry. Caller commits."""
    ds = _lock_dataset(session, request.dataset_id)
    if ds.org_id != org_id:
        raise PermissionError(f"dataset {request.dataset_id} belongs to another organisation")
    if ds.epsilon_budget is None:
        return None
    if not ds.no_dp_required:
        raise ValueError(
            f"dataset '{ds.name}' has a privacy budget (ε={ds.epsilon_budget:g}); a fine-tune without DP would "
            "void it. Turn DP on (set a target ε), or first mark the dataset 'no DP required' (Fine-tune tab, "
            "below the privacy ledger) if its owner decided it needs no privacy guarantee")
    entry = PrivacyLedgerEntry(dataset_id=ds.id, org_id=ds.org_id, job_id=job_id, epsilon=math.inf,
                               delta=float(ds.delta), mechanism={"dp": False}, status="reserved",
                               total_epsilon=math.inf, accountant="basic",
                               note="non-DP job (dataset marked 'no DP required'): ε = ∞")
    session.add(entry)
    session.flush()
    return entry


def reserve(session: Session, request: DPRequest, org_id: int, job_id: Optional[int] = None) -> PrivacyLedgerEntry:
    """Check the budget and reserve the request (raises BudgetExceeded). Caller commits."""
    ds = _lock_dataset(session, request.dataset_id)
    if ds.org_id != org_id:
        raise PermissionError(f"dataset {request.dataset_id} belongs to another organisation")
    if ds.epsilon_budget is None:
        raise ValueError(f"dataset '{ds.name}' has no privacy budget set; set one before running DP jobs on it")
    if request.epsilon <= 0:
        raise ValueError(f"requested ε must be positive, got {request.epsilon}")
    if request.delta > ds.delta:
        raise ValueError(f"requested δ={request.delta:g} is larger than dataset '{ds.name}' δ={ds.delta:g}")
    existing = [_entry_dict(e) for e in active_entries(session, ds.id)]
    before = compose_entries(existing, ds.delta)
    if math.isinf(before.epsilon):
        raise ValueError(f"dataset '{ds.name}' has been used without DP (ε = ∞ in its ledger): no DP job on it can "
                         "give a privacy guarantee any more")
    after = compose_entries(existing + [{"epsilon": request.epsilon, "delta": request.delta,
                                         "mechanism": request.mechanism}], ds.delta)
    if after.epsilon > ds.epsilon_budget + EPS_TOLERANCE:
        raise BudgetExceeded(ds.name, ds.epsilon_budget, before.epsilon, request.epsilon, after.epsilon,
                             ds.delta, after.accountant)
    entry = PrivacyLedgerEntry(dataset_id=ds.id, org_id=ds.org_id, job_id=job_id, epsilon=float(request.epsilon),
                               delta=float(request.delta), mechanism=dict(request.mechanism), status="reserved",
                               total_epsilon=after.epsilon, accountant=after.accountant,
                               note="reserved at submission")
    session.add(entry)
    session.flush()
    return entry


def settle(session: Session, job_id: int, outcome: str, epsilon: Optional[float] = None,
           mechanism: Optional[dict] = None, note: str = "", steps_taken: Optional[int] = None
           ) -> Optional[PrivacyLedgerEntry]:
    """Close a job's reservation. ``outcome``: 'succeeded' (spent, with the accountant's ε),
    'not_started' (released), or 'failed'/'cancelled': released when ``steps_taken`` is 0 (no
    private data was trained on), charged for ``steps_taken`` steps when known, else (the
    steps are unknown) kept in full as spent."""
    entry = session.scalars(select(PrivacyLedgerEntry).where(PrivacyLedgerEntry.job_id == job_id)).one_or_none()
    if entry is None or entry.status != "reserved":
        return entry
    ds = _lock_dataset(session, entry.dataset_id)
    mech = dict(entry.mechanism or {})
    if outcome == "not_started":
        entry.status = "released"
        entry.note = note or "released: job never started"
    elif outcome != "succeeded" and steps_taken == 0:
        entry.status = "released"
        entry.note = f"released: job {outcome} before its first training step (no private data was trained on)"
    elif outcome != "succeeded" and steps_taken is not None and mech.get("steps") and steps_taken < mech["steps"] \
            and mech.get("noise_multiplier") and mech.get("sample_rate"):
        from gtapp.privacy import epsilon as dp_epsilon

        entry.status = "spent"
        entry.epsilon = float(dp_epsilon(mech["noise_multiplier"], mech["sample_rate"], int(steps_taken),
                                         float(entry.delta)))
        entry.mechanism = {**mech, "steps": int(steps_taken), "steps_planned": mech["steps"]}
        entry.note = (f"job {outcome} after {steps_taken} of {mech['steps']} steps: charged for the steps it ran"
                      + (f" ({note})" if note else ""))
    else:
        entry.status = "spent"
        if epsilon is not None and outcome == "succeeded":
            entry.epsilon = float(epsilon)
        if mechanism:
            entry.mechanism = {**mech, **mechanism}
        if outcome == "succeeded":
            entry.note = note or "spent"
        elif steps_taken is None:
            entry.note = (f"job {outcome}, steps taken unknown: charged in full" + (f" ({note})" if note else ""))
        else:
            entry.note = f"job {outcome} after all its steps: charged in full" + (f" ({note})" if note else "")
    session.flush()
    total = spent(session, ds)
    entry.total_epsilon, entry.accountant = total.epsilon, total.accountant
    entry.updated_at = utcnow()
    return entry


def summary(session: Session, dataset: Dataset) -> dict:
    """The dataset's ledger for display: budget, composed spend, and each entry."""
    entries = active_entries(session, dataset.id)
    total = spent(session, dataset)
    all_entries = list(session.scalars(select(PrivacyLedgerEntry).where(
        PrivacyLedgerEntry.dataset_id == dataset.id).order_by(PrivacyLedgerEntry.id)))
    return {
        "dataset_id": dataset.id, "dataset": dataset.name, "budget": dataset.epsilon_budget,
        "delta": dataset.delta, "spent": total.epsilon, "accountant": total.accountant,
        "remaining": None if dataset.epsilon_budget is None else max(dataset.epsilon_budget - total.epsilon, 0.0),
        "active": len(entries),
        "entries": [{"id": e.id, "job_id": e.job_id, "epsilon": e.epsilon, "delta": e.delta,
                     "mechanism": e.mechanism, "status": e.status, "total_epsilon": e.total_epsilon,
                     "accountant": e.accountant, "note": e.note, "created_at": e.created_at.isoformat()}
                    for e in all_entries],
    }


def shown(eps: Optional[float]):
    """An ε for display and JSON: '∞' for a non-DP entry (JSON has no infinity)."""
    return "∞" if eps is not None and math.isinf(eps) else eps


def current(session: Session, dataset: Dataset) -> dict:
    """A dataset's privacy ledger for display, like :func:`summary` but without re-running the
    accountant (tens of milliseconds per dataset, on every page load): every change to the
    ledger (reserve, settle, release) records the dataset's composed spend on the entry it
    touched, so the most recently updated entry holds the current total."""
    entries = list(session.scalars(select(PrivacyLedgerEntry).where(PrivacyLedgerEntry.dataset_id == dataset.id)
                                   .order_by(PrivacyLedgerEntry.id)))
    latest = max(entries, key=lambda e: (e.updated_at or e.created_at, e.id), default=None)
    spent = float(latest.total_epsilon) if latest is not None else 0.0
    active = [e for e in entries if e.status != "released"]
    if not active:
        spent = 0.0
    budget = dataset.epsilon_budget
    return {"dataset_id": dataset.id, "dataset": dataset.name, "budget": budget, "delta": dataset.delta,
            "spent": spent, "accountant": latest.accountant if latest is not None else "basic",
            "remaining": None if budget is None else max(budget - spent, 0.0), "active": len(active),
            "no_dp_required": bool(dataset.no_dp_required),
            "entries": [{"id": e.id, "job_id": e.job_id, "epsilon": shown(e.epsilon), "delta": e.delta,
                         "status": e.status, "total_epsilon": shown(e.total_epsilon), "accountant": e.accountant,
                         "note": e.note, "created_at": e.created_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
                        for e in entries]}
