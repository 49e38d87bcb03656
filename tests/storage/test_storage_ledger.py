"""The privacy ledger: composition, reservation before start, refusal with numbers,
settlement; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from storage import accounts, catalog, ledger
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from storage.models import Job, PrivacyLedgerEntry


def _dataset(settings, budget=3.0, n=100):
    with session_scope(settings=settings) as s:
        u = accounts.create_user(s, f"org{uuid.uuid4().hex[:8]}", f"u{uuid.uuid4().hex[:8]}", "password123")
        ds = catalog.create_dataset(s, ArtifactStore(settings.artifacts_dir), u.org_id, "private",
                                    [{"prompt": f"q{i}", "answer": f"a{i}"} for i in range(n)],
                                    epsilon_budget=budget, delta=1e-5)
        return u.username, u.org_id, ds.id


def test_basic_composition_without_mechanisms():
    from gtapp.privacy import Composed, compose_entries  # the ledger's composition (gtapp.privacy: one place)

    c = compose_entries([{"epsilon": 1.0}, {"epsilon": 0.5}], 1e-5)
    assert c == Composed(1.5, "basic")
    assert compose_entries([], 1e-5) == Composed(0.0, "basic")


def test_rdp_composition_when_every_entry_has_its_mechanism():
    from gtapp import privacy

    mech = {"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 200}
    one = privacy.epsilon(1.1, 0.05, 200, 1e-5)
    c = privacy.compose_entries([{"epsilon": one, "mechanism": mech}] * 2, 1e-5)
    assert c.accountant == "rdp"
    # RDP curves add: two 200-step runs compose exactly like one 400-step run (which is below 2 * one)
    assert c.epsilon == pytest.approx(privacy.epsilon(1.1, 0.05, 400, 1e-5), rel=1e-9)
    mixed = privacy.compose_entries([{"epsilon": one, "mechanism": mech}, {"epsilon": 0.3}], 1e-5)
    assert mixed == privacy.Composed(pytest.approx(one + 0.3), "basic")


def test_reserve_then_refuse_over_budget(settings):
    _, org_id, ds_id = _dataset(settings, budget=3.0)
    with session_scope(settings=settings) as s:
        e1 = ledger.reserve(s, ledger.DPRequest(ds_id, 2.0, 1e-5, {}), org_id)
        assert e1.status == "reserved" and e1.total_epsilon == 2.0 and e1.accountant == "basic"
    with session_scope(settings=settings) as s:
        with pytest.raises(ledger.BudgetExceeded) as ei:
            ledger.reserve(s, ledger.DPRequest(ds_id, 1.5, 1e-5, {}), org_id)
    msg = str(ei.value)
    assert "budget ε=3" in msg and "already spent ε=2" in msg and "requests ε=1.5" in msg
    with session_scope(settings=settings) as s:
        assert s.query(PrivacyLedgerEntry).filter_by(dataset_id=ds_id).count() == 1  # nothing recorded
        ledger.reserve(s, ledger.DPRequest(ds_id, 1.0, 1e-5, {}), org_id)  # exactly at budget is fine


def test_refuses_foreign_dataset_and_missing_budget(settings):
    _, org_id, ds_id = _dataset(settings)
    _, other_org, _ = _dataset(settings)
    with session_scope(settings=settings) as s:
        with pytest.raises(PermissionError):
            ledger.reserve(s, ledger.DPRequest(ds_id, 0.5, 1e-5, {}), other_org)
        ds = catalog.create_dataset(s, ArtifactStore(settings.artifacts_dir), org_id, f"nobudget{uuid.uuid4().hex[:6]}",
                                    [{"prompt": "q", "answer": "a"}])
        with pytest.raises(ValueError, match="no privacy budget"):
            ledger.reserve(s, ledger.DPRequest(ds.id, 0.5, 1e-5, {}), org_id)


def test_settle_spent_released_and_failed(settings):
    user, org_id, ds_id = _dataset(settings, budget=5.0)
    with session_scope(settings=settings) as s:
        jobs = []
        for _ in range(3):
            j = Job(kind="finetune", params={}, org_id=org_id)
            s.add(j)
            s.flush()
            ledger.reserve(s, ledger.DPRequest(ds_id, 1.0, 1e-5, {}), org_id, job_id=j.id)
            jobs.append(j.id)
    with session_scope(settings=settings) as s:
        assert ledger.settle(s, jobs[0], "succeeded", epsilon=0.8).status == "spent"
        assert ledger.settle(s, jobs[1], "not_started").status == "released"
        kept = ledger.settle(s, jobs[2], "failed")
        assert kept.status == "spent" and "charged in full" in kept.note
    with session_scope(settings=settings) as s:
        from storage.models import Dataset

        summary = ledger.summary(s, s.get(Dataset, ds_id))
        assert summary["spent"] == pytest.approx(1.8) and summary["remaining"] == pytest.approx(3.2)
        assert [e["status"] for e in summary["entries"]] == ["spent", "released", "spent"]
