"""One call runs the whole benchmark and writes its JSON (and optionally the charts)."""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from gtapp import __version__
from gtapp.bench import protocol, report
from gtapp.bench.presets import PRESETS, BenchPreset
from gtapp.progress import ProgressFn


def versions() -> dict:
    import opacus
    import peft
    import torch
    import transformers

    return {"gtapp": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "opacus": opacus.__version__, "python": platform.python_version()}


def machine() -> dict:
    import os

    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def provenance() -> dict:
    """What every benchmark's JSON records about how it was made: library versions, the
    machine, and when."""
    return {"versions": versions(), "machine": machine(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_benchmark(preset: str | BenchPreset = "ci", out: str | Path = "results.json", *,
                  zoo_dir: Optional[str | Path] = None, work: Optional[str | Path] = None,
                  seeds: Optional[tuple[int, ...]] = None, private_datasets: Optional[dict[str, str]] = None,
                  shadow_datasets: Optional[dict[str, str]] = None,
                  plot: bool = False, progress: Optional[ProgressFn] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Run ``preset`` and write ``out`` (JSON with rows, summary, targets, cost table, configs,
    versions, seeds, machine). ``private_datasets``: {loader name: path} of real datasets added
    as cross-task private tasks; ``shadow_datasets``: {loader name: path} of real public datasets
    whose train splits join the cross-task shadow tasks. ``plot`` also writes the Plotly charts next to ``out`` as HTML."""
    from dataclasses import replace

    p = PRESETS[preset] if isinstance(preset, str) else preset
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown bench preset {preset!r}; choose one of {sorted(PRESETS)}")
    if seeds:
        p = replace(p, seeds=tuple(seeds))
    out = Path(out)
    t0 = time.monotonic()
    tmp = None
    if work is None:
        tmp = Path(tempfile.mkdtemp(prefix="gtapp_bench_"))
        work = tmp
    work = Path(work)
    try:
        if zoo_dir is None:
            from gtapp import zoo

            t = time.monotonic()
            log(f"building the '{p.zoo_preset}' zoo ...")
            zoo_dir = zoo.build(p.zoo_preset, work / "zoo", seed=0)
            log(f"  zoo built in {time.monotonic() - t:.1f}s")
        rows, timings = protocol.run(p, Path(zoo_dir), work, progress=progress, log=log,
                                     shadow_datasets=shadow_datasets)
        if private_datasets:
            rows += _real_datasets(p, Path(zoo_dir), work, private_datasets, progress, log)
        result = {
            "preset": p.to_dict(), "seeds": list(p.seeds), "zoo": _zoo_info(Path(zoo_dir)), **_analyse(rows),
            "timings": {**timings, "total_s": time.monotonic() - t0}, **provenance(),
        }
        _write(result, out, plot)
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def merge_results(paths: list[str | Path], out: str | Path, *, plot: bool = False) -> dict:
    """Combine results files of the same preset run separately (e.g. one seed per machine)
    into one, as if run together: rows concatenated, gap recovery, summaries (mean and 95 %
    interval over all seeds), targets and the cost table recomputed. Refuses files of
    different presets or configs, and a (protocol, task, method, ε, clients, seed) row that
    appears twice. Records each input file's seeds, versions, machine and timings."""
    parts = []
    for path in paths:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable results JSON ({e}); pass files written by `gtapp bench --out`")
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "preset" not in data:
            raise ValueError(f"{path}: no 'rows' list and 'preset'; pass files written by `gtapp bench --out`")
        parts.append((path, data))
    if len(parts) < 2:
        raise ValueError("merge needs at least two results files")
    ref_path, ref = parts[0]
    ref_preset = {k: v for k, v in ref["preset"].items() if k != "seeds"}
    rows, seen = [], set()
    for path, data in parts:
        preset = {k: v for k, v in data["preset"].items() if k != "seeds"}
        if preset != ref_preset:
            diff = sorted(k for k in set(preset) | set(ref_preset) if preset.get(k) != ref_preset.get(k))
            raise ValueError(f"{path} was run with another preset/config than {ref_path} (differs in: "
                             f"{', '.join(diff)}); only runs of the same preset can be merged")
        for r in data["rows"]:
            key = (r["protocol"], r["task"], r["method"], r["dp_epsilon"], r["clients"], r["seed"])
            if key in seen:
                raise ValueError(f"{path}: row {key} is also in an earlier file; merge files of different seeds")
            seen.add(key)
            rows.append(dict(r))
    seeds = sorted({s for _, d in parts for s in d.get("seeds", [])})
    timings: dict = {}
    for _, d in parts:
        for k, v in d.get("timings", {}).items():
            if isinstance(v, (int, float)):
                timings[k] = timings.get(k, 0.0) + v
            elif isinstance(v, list):  # per-seed records (e.g. the cross-task shadow step's pairs and tasks)
                timings[k] = timings.get(k, []) + v
    result = {
        "preset": {**ref["preset"], "seeds": seeds}, "seeds": seeds, "zoo": ref.get("zoo"),
        **_analyse(rows), "timings": timings, "versions": ref.get("versions"), "machine": ref.get("machine"),
        "merged_from": [{"path": str(p), "seeds": d.get("seeds"), "versions": d.get("versions"),
                         "machine": d.get("machine"), "timings": d.get("timings"), "created_at": d.get("created_at")}
                        for p, d in parts],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write(result, Path(out), plot)
    return result


def _analyse(rows: list[dict]) -> dict:
    """Gap recovery, summaries, paired comparisons, targets and the cost table from the rows."""
    from gtapp.bench import stats

    protocol.add_gap_recovery(rows)
    boots = stats.bootstraps(rows)
    summary = report.summarise(rows, boots)
    defined = {(s["protocol"], s["task"]): s["gap_defined"] for s in summary}
    for r in rows:  # so a chart drawn from the rows alone (--plot, the Compare tab) can mark such tasks
        r["gap_defined"] = defined[(r["protocol"], r["task"])]
    comps = report.comparisons(rows, boots)
    return {"rows": rows, "summary": summary, "comparisons": comps, "targets": report.targets(summary, rows, comps, boots),
            "cost": report.cost_table(rows)}


def _write(result: dict, out: Path, plot: bool) -> None:
    """Write the results JSON atomically, and the charts next to it if asked."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2, default=_json_default))
    tmp_out.replace(out)
    if plot:
        from gtapp.bench.plots import all_figures

        for name, fig in all_figures(result["rows"]).items():
            fig.write_html(out.with_name(f"{out.stem}_{name}.html"), include_plotlyjs="cdn")


def _real_datasets(p: BenchPreset, zoo_dir: Path, work: Path, specs: dict[str, str], progress, log) -> list[dict]:
    """Real datasets as cross-task private tasks: the mapper is the cross-task one (trained on
    generated shadow tasks only). The zoo models get no exact matches on real data, so the
    answer NLL carries the comparison (``gap_recovery_nll``)."""
    from dataclasses import replace

    from gtapp import datasets

    tasks, org_prompts = [], {}
    for name, path in specs.items():
        t = datasets.load(name, path=path, seed=p.seeds[0], limit=max(p.n_private, p.n_test))
        t.train, t.test = t.train[: p.n_private], t.test[: p.n_test]
        tasks.append(t)
        # the organisation's public prompts (gt_refine_prompts): other train questions, never a private or test one
        more = datasets.load(name, path=path, seed=p.seeds[0] + 1, limit=p.n_private + 2 * p.n_public).train
        org_prompts[t.name] = protocol.public_prompts_for(t, more, p.n_public)
    sub = replace(p, in_dist_tasks=(), cross_private_tasks=(), clients=(1,))
    ctx = protocol.Context(sub, zoo_dir, work / "real", progress, log=log)
    ctx.steps_total = len(tasks) * 12 * len(sub.seeds) + 1
    for seed in sub.seeds:
        pairs, _ = protocol._shadow(ctx, sub.cross_shadow_tasks, sub.n_public, seed, work / "shadow" / f"cross_s{seed}")
        mappers = protocol._fit_mappers(ctx, pairs, protocol.mapper_kinds(sub))
        provider = protocol.cross_provider_text(ctx, pairs, seed)
        for t in tasks:
            log(f"[seed {seed}] real dataset {t.name} as a private task")
            protocol.run_private_task(ctx, "cross_task_real", t, t.train, None, mappers, seed, provider=provider,
                                      org_prompts=org_prompts[t.name])
    return ctx.rows


def _zoo_info(zoo_dir: Path) -> dict:
    path = zoo_dir / "zoo.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    info["path"] = str(zoo_dir)
    return info


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)
