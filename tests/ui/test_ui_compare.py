"""Compare tab: results parsing, filters, CSV, and the Plotly figures' data (incl. empty states)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ui import charts, compare
from ui.service import UploadError, parse_results

ROWS = [
    {"protocol": "in_dist", "task": "math/add", "method": "gt", "mapper": "v1", "dp_epsilon": None, "clients": 1,
     "seed": 0, "metric": "exact_match", "value": 0.6, "gap_recovery": 0.8, "wall_s": 12.0, "peak_mem_mb": 300},
    {"protocol": "in_dist", "task": "math/add", "method": "base_llm", "seed": 0, "metric": "exact_match",
     "value": 0.2, "wall_s": 1.0, "peak_mem_mb": 250},
    {"protocol": "in_dist", "task": "math/add", "method": "gt", "mapper": "v1", "dp_epsilon": 1.0, "clients": 3,
     "seed": 1, "metric": "exact_match", "value": 0.5, "gap_recovery": 0.6},
    {"protocol": "cross_task", "task": "csqa/x", "method": "gt", "mapper": "v2", "dp_epsilon": 8.0, "clients": 1,
     "seed": 0, "metric": "exact_match", "value": 0.4, "gap_recovery": 0.1},
    {"task": "bad"},  # no method/value: skipped
]


def test_parse_results_shapes_and_errors():
    rows, skipped = parse_results(json.dumps({"rows": ROWS}).encode())
    assert len(rows) == 4 and skipped == 1 and rows[1]["gap_recovery"] is None and rows[0]["clients"] == 1
    assert parse_results(json.dumps(ROWS[:1]).encode())[0][0]["method"] == "gt"
    for data, match in ((b"{not json", "not valid JSON"), (b'{"x": 1}', "expected a list"),
                        (b'[{"task": "t"}]', "none of its 1 rows"), (b"\xff\xfe", "UTF-8")):
        with pytest.raises(UploadError, match=match):
            parse_results(data)


def test_filters_and_csv():
    rows, _ = parse_results(json.dumps(ROWS).encode())
    ch = compare.filter_choices(rows)
    assert ch["protocol"] == ["cross_task", "in_dist"] and ch["mapper"] == ["v1", "v2", "—"] and ch["seed"] == ["0", "1"]
    assert len(compare.filter_rows(rows, "in_dist")) == 3
    assert len(compare.filter_rows(rows, tasks=["csqa/x"])) == 1
    assert len(compare.filter_rows(rows, mapper="v1", seed="1")) == 1
    assert compare.filter_rows(rows, mapper="—")[0]["method"] == "base_llm"
    parsed = list(csv.DictReader(io.StringIO(compare.to_csv(rows).decode())))
    assert len(parsed) == 4 and parsed[0]["gap_recovery"] == "0.8" and parsed[1]["mapper"] == ""


def test_figures_carry_the_numbers():
    rows, _ = parse_results(json.dumps(ROWS).encode())
    metric, gap, gap_nll, eps, clients, cost = compare.figures(rows)
    by_name = {t.name: t for t in metric.data}
    assert set(by_name) == {"gt", "base_llm"} and list(by_name["gt"].x) == ["csqa/x", "math/add"]
    assert by_name["gt"].y[1] == pytest.approx(0.55) and by_name["base_llm"].y[1] == pytest.approx(0.2)
    assert {t.name for t in gap.data} == {"gt"} and gap.data[0].y[1] == pytest.approx(0.7)
    assert gap_nll.data == ()  # these rows carry no NLL gap recovery: an empty state, not a wrong chart
    assert list(eps.data[0].x) == ["1", "8", "no DP"]
    assert {t.name for t in clients.data} == {"1 client", "3 clients"}
    assert [t.name for t in cost.data] == ["wall_s", "peak_mem_mb"] and cost.data[0].y[0] == pytest.approx(12.0)


def test_empty_states():
    for fig in compare.figures([]):
        assert fig.data == () and fig.layout.annotations[0].text
    assert "No results here yet" in compare.summary_line([], [], "x")
    assert charts.layer_norms(None).layout.annotations[0].text == "no adapter summary yet"


def test_summary_line_names_the_tasks_with_no_gap():
    rows, _ = parse_results(json.dumps(ROWS).encode())
    assert "no gap" not in compare.summary_line(rows, rows, "x")  # unknown (no per-example scores): nothing said
    marked = [{**r, "gap_defined": r["task"] != "csqa/x"} for r in rows]
    line = compare.summary_line(marked, marked, "x")
    assert "no gap to recover on csqa/x" in line and "math/add" not in line.split("no gap")[1]
    assert list(csv.DictReader(io.StringIO(compare.to_csv(marked).decode())))[0]["gap_defined"] == "True"
