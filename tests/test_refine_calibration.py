"""bench/refine_calibration.py: its held-out tasks are the provider's own (no private task of any
preset, nor a variant of one, and no shadow task a variant of a held-out one), and its OOD gate
picks the threshold that does best over the cases it is given."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from refine_calibration import gate, held_out_split  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_tasks_are_the_providers_own(seed):
    from gtapp.bench.presets import PRESETS

    shadow, held = held_out_split(2, seed)
    private = {t.split("-")[0] for p in PRESETS.values() for t in (*p.cross_private_tasks, *p.in_dist_tasks)}
    assert len(held) == 5 and len({t.split("/")[0] for t in held}) == 5  # one per family
    assert not {t.split("-")[0] for t in shadow + held} & private
    assert not {t.split("-")[0] for t in shadow} & {t.split("-")[0] for t in held}
    assert len(shadow) == 10 and not set(shadow) & set(held)


def case(setting, task, method, gap, ood=None):
    return {"protocol": setting, "task": task, "dp_epsilon": None, "seed": 0, "method": method,
            "gap_recovery_nll": gap, "ood_score": ood}


def test_gate_keeps_the_mapped_adapter_below_the_threshold_it_finds():
    rows = []
    # known updates (low OOD score): the GT's adapter is better; new ones (high): the refinement
    for i, (ood, gt, ref) in enumerate([(1.0, 0.9, 0.5), (1.5, 0.8, 0.4), (3.5, -0.5, 0.2), (4.0, -0.1, 0.1)]):
        rows += [case("s", f"t{i}", "gt", gt, ood), case("s", f"t{i}", "gt_refine:v", ref, ood)]
    rows.append(case("s", "t9", "gt", float("nan"), 2.0))  # a case without both numbers is left out
    g = gate(rows, "v")
    assert len(g["cases"]) == 4 and 1.5 < g["tau"] < 3.5
    assert g["mean_gap_nll"] == pytest.approx((0.9 + 0.8 + 0.2 + 0.1) / 4)
    assert g["never_refine"] == pytest.approx((0.9 + 0.8 - 0.5 - 0.1) / 4)
    assert g["always_refine"] == pytest.approx((0.5 + 0.4 + 0.2 + 0.1) / 4)
    # a task with no gap to recover (its gap recoveries divide by noise) is left out of every mean
    noisy = [{**case("s", "t8", m, v, 9.0), "gap_defined": False} for m, v in (("gt", -40.0), ("gt_refine:v", 60.0))]
    with_noisy = gate(rows + noisy, "v")
    assert with_noisy["cases"] == g["cases"] and with_noisy["mean_gap_nll"] == g["mean_gap_nll"]
    assert with_noisy["tau"] == g["tau"] and with_noisy["always_refine"] == g["always_refine"]


def test_sample_gain_gate_and_the_product_rule():
    """The sample-gain signal refines where the mapped adapter's gain on the TinyLM's samples is
    low; the product rule (gtapp.refine.refine_wanted) refines above the task-score threshold."""
    from gtapp.refine import AUTO_REFINE_TASK_OOD

    from refine_calibration import product_rule

    rows = []
    # (gain, task score, dp, gt, refine)
    for i, (gain, task, eps, gt, ref) in enumerate([(0.10, 0.5, None, 0.9, 0.5), (0.05, 0.8, None, 0.7, 0.3),
                                                     (-0.02, 0.9, None, -0.4, 0.3), (-0.01, 3.0, 8.0, 0.5, 0.1)]):
        for method, gap in (("gt", gt), ("gt_refine:v", ref)):
            r = case("s", f"t{i}", method, gap, 1.0) | {"dp_epsilon": eps, "ood_task_score": task}
            if method == "gt":
                r["sample_check"] = {"llm_gain": gain}
            rows.append(r)
    g = gate(rows, "v", "sample_gain")
    assert len(g["cases"]) == 4 and g["signal"] == "sample_gain"
    assert g["mean_gap_nll"] == pytest.approx((0.9 + 0.7 + 0.3 + 0.5) / 4)  # refine only t2
    assert g["at_zero"] == pytest.approx((0.9 + 0.7 + 0.3 + 0.1) / 4)  # tau = 0 refines t2 and t3
    assert g["no_dp"] == pytest.approx((0.9 + 0.7 + 0.3) / 3) and g["dp"] == pytest.approx(0.5)
    assert 0.9 < AUTO_REFINE_TASK_OOD < 3.0
    rule = product_rule(gate(rows, "v", "ood_task")["cases"])  # refines t3 only (its task score is above)
    assert rule["refined"] == 1 and rule["mean_gap_nll"] == pytest.approx((0.9 + 0.7 - 0.4 + 0.1) / 4)
    assert rule["no_dp"] == pytest.approx((0.9 + 0.7 - 0.4) / 3) and rule["dp"] == pytest.approx(0.1)
    no_signal = [{k: v for k, v in r.items() if k != "sample_check"} for r in rows]
    assert gate(no_signal, "v", "sample_gain")["cases"] == []  # rows without the check are left out
    assert gate(rows[:4], "v")["dp"] != gate(rows[:4], "v")["dp"]  # no DP case: nan, not 0


def test_merge_chooses_the_variant_over_every_seed(tmp_path):
    """Seed 0 alone prefers variant a; over both seeds b does better on held-out tasks."""
    import json

    from refine_calibration import merge

    def result(seed, a, b):
        summary = {m: {s: {"mean": v} for s in ("held_out_task", "held_out_run")}
                   for m, v in (("gt", 0.2), ("proxy_tuning", 0.3), ("gt_refine:a", a), ("gt_refine:b", b))}
        rows = [case("held_out_task", "t", m, v, 1.0) | {"seed": seed}
                for m, v in (("gt", 0.2), ("gt_refine:a", a), ("gt_refine:b", b))]
        return {"seed": seed, "variants": {"a": {}, "b": {"free_share": 1.0}}, "summary": summary,
                "chosen_variant": "a" if a > b else "b", "rows": rows}

    files = []
    for seed, (a, b) in enumerate([(0.30, 0.28), (0.00, 0.20)]):
        files.append(tmp_path / f"s{seed}.json")
        files[-1].write_text(json.dumps(result(seed, a, b)))
    assert merge(files, tmp_path / "gate.json") == 0
    out = json.loads((tmp_path / "gate.json").read_text())
    assert out["chosen_variant"] == "b" and out["variants"]["b"]["held_out_task"] == pytest.approx(0.24)
    assert out["variants"]["a"]["held_out_task"] == pytest.approx(0.15)


def test_every_variant_is_a_valid_refinement_on_a_known_text():
    from refine_calibration import TEXT, VARIANTS

    from gtapp.refine import RefineConfig

    assert next(iter(VARIANTS.values())) == {}  # the default first: what every batch compares with
    for name, fields in VARIANTS.items():
        assert fields.get(TEXT, "all") in ("all", "family"), name
        config = RefineConfig(**{k: v for k, v in fields.items() if k != TEXT})  # raises on a bad field
        assert config != RefineConfig() or fields.get(TEXT) or name == "gt_teacher", f"{name} is the default"
