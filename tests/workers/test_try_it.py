"""The Try it tab's job: one prompt through the base LLM and the organisation's adapters, side by
side, with each model's NLL of a given answer; through the real job system (embedded worker)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from jobs_helpers import add_users, make_settings

from storage import catalog
from storage.accounts import principal
from storage.artifacts import ArtifactStore
from storage.db import session_scope
from workers.embedded import stop_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory, micro_zoo):
    from ui.service import Service
    from workers.client import JobClient

    settings = make_settings(tmp_path_factory.mktemp("try"))
    users = add_users(settings)
    svc = Service(settings)
    svc.client = JobClient(settings)
    with session_scope(settings=settings) as s:
        alice, bob = principal(s, users["alice"]), principal(s, users["bob"])
        pair_id = catalog.register_pair(s, "micro-try", micro_zoo).id
        ds = catalog.create_dataset(s, ArtifactStore(settings.artifacts_dir), alice.org_id, "sums",
                                    [{"prompt": f"{i} + 1 =", "answer": str(i + 1)} for i in range(24)]).id
    view = svc.client.wait(svc.client.submit("finetune", {"pair_id": pair_id, "dataset_id": ds, "steps": 8,
                                                          "batch_size": 4, "lr": 0.02, "max_length": 32,
                                                          "device": "cpu"}, alice), timeout=240)
    assert view.status == "succeeded", view.error
    yield SimpleNamespace(svc=svc, alice=alice, bob=bob, pair_id=pair_id, tiny=view.outputs["adapter_id"])
    stop_all()


def test_try_shows_outputs_side_by_side_with_answer_nll(env):
    from ui import try_it

    env.svc.who = lambda request: request
    msg, job_id = try_it.run_try(env.svc, env.alice, env.pair_id, "3 + 1 =", None, env.tiny, "4", 8)
    assert "queued" in msg
    view = env.svc.client.wait(job_id, timeout=240)
    assert view.status == "succeeded", view.error
    rows = view.outputs["rows"]
    assert [r["model"] for r in rows] == ["base LLM", f"TinyLM + adapter {env.tiny}"]
    assert all(isinstance(r["output"], str) and r["answer_nll_per_token"] > 0 for r in rows)
    status, tbl = try_it.try_result(env.svc, env.alice, job_id)
    assert "done" in status and len(tbl["data"]) == 2 and tbl["headers"][1] == "greedy output"


def test_try_refuses_another_organisations_adapter_before_queueing(env):
    from workers.client import JobNotFound

    before = len(env.svc.client.list(env.bob))
    with pytest.raises(JobNotFound, match=f"adapter {env.tiny} not found"):
        env.svc.client.submit("try", {"pair_id": env.pair_id, "prompt": "hi", "tiny_adapter_id": env.tiny}, env.bob)
    assert len(env.svc.client.list(env.bob)) == before
    with pytest.raises(ValueError, match="type a prompt"):
        env.svc.client.submit("try", {"pair_id": env.pair_id, "prompt": "  "}, env.alice)
