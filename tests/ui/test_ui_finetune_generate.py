"""Fine-tune and Generate tabs: parameter checks in words, the privacy ledger's refusal of an
over-budget DP job, and generate's refusals coming from the (wired) job API."""

from __future__ import annotations

import pytest
from ui_helpers import staged, write_jsonl

from ui import finetune, generate
from ui.common import guarded


def _dataset(svc, who, tmp_path, budget=None):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(40)])
    return svc.ingest_dataset(who, staged(svc, src), "d.jsonl", epsilon_budget=budget)


def test_finetune_params_are_checked_in_words():
    ok = finetune.finetune_params(1, 2, 50, 0.01, 8, 128, True, 2.0, 0, 1.0, " mine ")
    assert ok["dp"] == {"target_epsilon": 2.0, "max_grad_norm": 1.0} and ok["name"] == "mine" and ok["steps"] == 50
    assert finetune.finetune_params(1, 2, 50, 0.01, 8, 128, False, 2.0, 1e-6, 1.0, "")["dp"] is None
    for args, match in (((None, 2, 5, 0.1, 8, 128, False, 1, None, 1, ""), "datasets"),
                        ((1, 2, 2.5, 0.1, 8, 128, False, 1, None, 1, ""), "steps must be a whole number"),
                        ((1, 2, 5, -1, 8, 128, False, 1, None, 1, ""), "learning rate"),
                        ((1, 2, 5, 0.1, 8, 128, True, 0, None, 1, ""), "target ε"),
                        ((1, 2, 5, 0.1, 8, 128, True, 1, 2, 1, ""), "δ must be in")):
        with pytest.raises(ValueError, match=match):
            finetune.finetune_params(*args)


def test_over_budget_dp_job_is_refused_saying_why(svc, users, tmp_path, pair_id):
    alice = svc.who(users["alice"])
    ds = _dataset(svc, alice, tmp_path, budget=1.0)
    run = guarded(None)(lambda *a: finetune.start_finetune(svc, users["alice"], *a))
    msg = run(ds["id"], pair_id, 10, 1e-3, 4, 64, True, 5.0, None, 1.0, "")
    assert msg.startswith("✖") and "privacy budget exceeded" in msg and "ε=1" in msg, msg
    assert svc.ledger(alice, ds["id"])["entries"] == []  # nothing reserved, nothing queued
    assert svc.client.list(alice) == []
    # within budget: reserved on the ledger at submission
    msg = run(ds["id"], pair_id, 10, 1e-3, 4, 64, True, 0.6, None, 1.0, "")
    assert msg.startswith("✔") and "reserved" in msg, msg
    led = svc.ledger(alice, ds["id"])
    assert [e["status"] for e in led["entries"]] == ["reserved"] and led["spent"] == pytest.approx(0.6, rel=1e-3)
    md, tbl = finetune.show_ledger(svc, ds["id"], users["alice"])
    assert "spent **ε=0.6" in md and tbl["data"][0][3] == "reserved"
    # a second one that would compose past the budget (RDP composition, tighter than the sum)
    assert "privacy budget exceeded" in run(ds["id"], pair_id, 10, 1e-3, 4, 64, True, 0.95, None, 1.0, "")
    # a dataset without a budget: DP refused with the reason; the organisation can set one
    ds2 = svc.ingest_dataset(alice, staged(svc, tmp_path / "d.jsonl"), "d.jsonl", name="nobudget")
    assert "no privacy budget set" in run(ds2["id"], pair_id, 10, 1e-3, 4, 64, True, 0.5, None, 1.0, "")
    assert "budget ε=2" in svc.set_budget(alice, ds2["id"], 2)
    with pytest.raises(ValueError, match="raised, not lowered"):
        svc.set_budget(alice, ds2["id"], 1)


def test_generate_refusals_come_from_the_job_api(svc, users, tmp_path, pair_id):
    run = guarded(None)(lambda *a: generate.start_generate(svc, users["alice"], *a))
    assert "at least one" in run(pair_id, [], "", generate.PROMOTED, False, None, "")
    assert "2 weights for 1" in run(pair_id, [5], "1, 2", generate.PROMOTED, False, None, "")
    params = generate.generate_params(pair_id, ["3", "4"], "1, 3", generate.PROMOTED, True, "math/x", "",
                                      n_test=16)
    assert params == {"pair_id": pair_id, "adapter_ids": [3, 4], "mapper_id": None, "weights": [1.0, 3.0],
                      "organisation": "average_then_map", "method": "mean", "weighting": "data_size",
                      "merged": False, "name": None, "evaluate_task": "math/x", "n_test": 16}
    assert generate.generate_params(pair_id, [3], "", "7", True, "math/x", "5")["dataset_id"] == 5
    # the job API accepts exactly these parameters
    from workers.jobs import get_spec

    assert set(params) <= set(get_spec("generate").defaults)
    kinds = svc.job_kinds(svc.who(users["alice"]))
    assert kinds["generate"]["allowed"] and not kinds["generate"]["admin_only"]
    # generate is a real job kind: a missing adapter is refused by the job API itself, and nothing is queued
    msg = run(pair_id, [1], "", generate.PROMOTED, False, None, "")
    assert msg.startswith("✖") and "adapter 1 not found" in msg and "not available" not in msg, msg
    assert svc.client.list(svc.who(users["alice"])) == []


def test_downloads_html_escapes_names():
    html = generate.downloads_html([{"id": 3, "name": "<b>x</b>", "model": "llm", "origin": "produced",
                                     "org": "acme", "created": "now", "epsilon": 1.5}])
    assert "href='download/adapter/3'" in html and "&lt;b&gt;" in html and "ε=1.5" in html


def test_generate_without_a_promoted_mapper_is_refused_at_submit(svc, users, pair_id):
    from storage.models import Adapter

    alice = svc.who(users["alice"])
    assert generate.mapper_choices(svc, pair_id)[0][0] == generate.NO_PROMOTED
    with svc.session() as s:
        a = Adapter(org_id=alice.org_id, user_id=alice.user_id, model_pair_id=pair_id, model="tiny",
                    origin="uploaded", name="t", artifact="0" * 64, meta={})
        s.add(a)
        s.flush()
        aid = a.id
    run = guarded(None)(lambda *a: generate.start_generate(svc, users["alice"], *a))
    msg = run(pair_id, [aid], "", generate.PROMOTED, False, None, "")
    assert msg.startswith("✖") and "no promoted mapper yet" in msg, msg
    assert svc.client.list(alice) == []  # refused before anything was queued


def test_forms_show_the_equivalent_gtapp_command():
    import shlex

    from gtapp.cli import build_parser
    from gtapp.cli.jobs import _params
    from ui.common import cli_command

    ft = finetune.finetune_params(3, 1, 50, 0.01, 8, 128, True, 2.0, 0, 1.0, "mine")
    gen = generate.generate_params(1, ["3"], "", generate.PROMOTED, True, "math/x", "", n_test=16, refine="auto")
    assert gen["refine"] == "auto"
    assert "refine" not in generate.generate_params(1, ["3"], "", generate.PROMOTED, False, None, "", refine="never")
    for kind, params in (("finetune", ft), ("generate", gen)):
        argv = shlex.split(cli_command(kind, params))
        assert argv[:4] == ["gtapp", "jobs", "submit", kind]
        args = build_parser().parse_args(argv[1:])
        assert args.wait and _params(args) == {k: v for k, v in params.items() if v is not None}
