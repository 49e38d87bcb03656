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


def run_benchmark(preset: str | BenchPreset = "ci", out: str | Path = "results.json", *,
                  zoo_dir: Optional[str | Path] = None, work: Optional[str | Path] = None,
                  seeds: Optional[tuple[int, ...]] = None, private_datasets: Optional[dict[str, str]] = None,
                  plot: bool = False, progress: Optional[ProgressFn] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Run ``preset`` and write ``out`` (JSON with rows, summary, targets, cost table, configs,
    versions, seeds, machine). ``private_datasets``: {loader name: path} of real datasets added
    as cross-task private tasks. ``plot`` also writes the Plotly charts next to ``out`` as HTML."""
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
        rows, timings = protocol.run(p, Path(zoo_dir), work, progress=progress, log=log)
        if private_datasets:
            rows += _real_datasets(p, Path(zoo_dir), work, private_datasets, progress, log)
        protocol.add_gap_recovery(rows)
        summary = report.summarise(rows)
        cost = report.cost_table(rows)
        result = {
            "preset": p.to_dict(), "seeds": list(p.seeds), "zoo": _zoo_info(Path(zoo_dir)),
            "rows": rows, "summary": summary, "targets": report.targets(summary, rows), "cost": cost,
            "timings": {**timings, "total_s": time.monotonic() - t0},
            "versions": versions(), "machine": machine(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(out.suffix + ".tmp")
        tmp_out.write_text(json.dumps(result, indent=2, default=_json_default))
        tmp_out.replace(out)
        if plot:
            from gtapp.bench.plots import all_figures

            for name, fig in all_figures(rows).items():
                fig.write_html(out.with_name(f"{out.stem}_{name}.html"), include_plotlyjs="cdn")
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _real_datasets(p: BenchPreset, zoo_dir: Path, work: Path, specs: dict[str, str], progress, log) -> list[dict]:
    """Real datasets as cross-task private tasks: the mapper is the cross-task one (trained on
    generated shadow tasks only). The zoo models get no exact matches on real data, so the
    answer NLL carries the comparison (``gap_recovery_nll``)."""
    from dataclasses import replace

    from gtapp import datasets

    tasks = []
    for name, path in specs.items():
        t = datasets.load(name, path=path, seed=p.seeds[0], limit=max(p.n_private, p.n_test))
        t.train, t.test = t.train[: p.n_private], t.test[: p.n_test]
        tasks.append(t)
    sub = replace(p, in_dist_tasks=(), cross_private_tasks=(), clients=(1,))
    ctx = protocol.Context(sub, zoo_dir, work / "real", progress, log=log)
    ctx.steps_total = len(tasks) * 12 * len(sub.seeds) + 1
    for seed in sub.seeds:
        pairs, _ = protocol._shadow(ctx, sub.cross_shadow_tasks, sub.n_public, seed, work / "shadow" / f"cross_s{seed}")
        mappers = protocol._fit_mappers(ctx, pairs, protocol.mapper_kinds(sub))
        for t in tasks:
            log(f"[seed {seed}] real dataset {t.name} as a private task")
            protocol.run_private_task(ctx, "cross_task_real", t, t.train, None, mappers, seed)
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
