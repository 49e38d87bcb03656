"""The benchmark results committed under bench/results (what issue notes quote) are offered in
every user's Compare tab from the first start: once each, by content; files that are not
results tables (throughput, mapper speed) are left out; off when the deployment says so."""

from __future__ import annotations

import json
import shutil

from ui_helpers import make_settings

from ui.service.results import PUBLISHED_PREFIX, PUBLISHED_RESULTS, parse_results


def test_committed_results_reach_every_users_compare_tab(tmp_path, svc, users):
    from ui.compare import load_source, source_choices

    folder = tmp_path / "results"
    folder.mkdir()
    rows = [{"protocol": "cross_task", "task": "math/x", "method": m, "seed": 0, "metric": "exact_match",
             "value": v} for m, v in (("gt", 0.4), ("ridge", 0.3))]
    targets = [{"target": "cross-task: gt* recovers >= 0.6", "measured": 0.44, "met": False,
                "detail": "gt_auto over 4 tasks; left out: commonsense/x"},
               {"target": "in-distribution: ...", "measured": 0.0, "met": None, "detail": "gt: 0/0 tasks"}]
    (folder / "run_a.json").write_text(json.dumps({"rows": rows, "targets": targets}))
    shutil.copy(PUBLISHED_RESULTS / "shadow_throughput_ci_2026-12-01.json", folder)  # not a results table
    svc.settings.publish_bench_results = True
    done = svc.register_published_benchmarks(folder)
    assert done == ["published benchmark results run_a.json: 2 rows"], done
    assert svc.register_published_benchmarks(folder) == []  # once
    bob = svc.who(users["bob"])  # any member, of any organisation
    (entry,) = [b for b in svc.list_benchmarks(bob) if b["name"].startswith(PUBLISHED_PREFIX)]
    assert entry["name"] == PUBLISHED_PREFIX + "run_a" and entry["rows"] == 2
    assert (entry["label"], entry["key"]) in source_choices(svc, bob)
    shown, recorded = load_source(svc, bob, entry["key"], None)
    assert sorted((r["method"], r["value"]) for r in shown) == [("gt", 0.4), ("ridge", 0.3)]
    # what the run said of its targets, shown above the charts: NOT MET and not measured said plainly
    from ui.compare import targets_markdown

    words = targets_markdown(recorded)
    from ui.common import md_escape

    assert f"- **NOT MET** — {md_escape(targets[0]['target'])}: measured 0.440 ({md_escape(targets[0]['detail'])})" \
        in words.splitlines()
    assert f"- **not measured** — {md_escape(targets[1]['target'])}: measured 0.000" in words
    assert targets_markdown(load_source(svc, bob, "evals", None)[1]) == ""  # evaluations: no targets

    (folder / "run_a.json").write_text(json.dumps({"rows": rows[:1]}))  # changed: a new entry
    assert svc.register_published_benchmarks(folder) == ["published benchmark results run_a.json: 1 rows"]


def test_the_repositorys_own_results_are_published_and_can_be_switched_off(tmp_path):
    from ui.service import Service

    svc = Service(make_settings(tmp_path / "on", publish_bench_results=True))
    svc.bootstrap()
    names = {b["name"] for b in svc.list_benchmarks(svc.who(type("R", (), {"username": "admin"})()))}
    expected = set()
    for path in PUBLISHED_RESULTS.glob("*.json"):
        try:
            parse_results(path.read_bytes(), path.name)
        except Exception:  # noqa: BLE001 - not a results table
            continue
        expected.add(PUBLISHED_PREFIX + path.stem)
    assert PUBLISHED_PREFIX + "demo_cpu2_2026-11-25" in expected and names >= expected, (names, expected)

    off = Service(make_settings(tmp_path / "off"))
    off.bootstrap()
    assert not [b for b in off.list_benchmarks(off.who(type("R", (), {"username": "admin"})()))
                if b["name"].startswith(PUBLISHED_PREFIX)]
