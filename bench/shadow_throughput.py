"""Shadow pairs per CPU-minute: the per-run path against the batched engine, side by side.

    python bench/shadow_throughput.py --zoo ci=/path/to/zoo/ci --zoo demo=/path/to/zoo/demo \
        --runs 64 --k 1 8 32 64 --out bench-shadow-throughput.json

For each zoo and each engine (``per_run``; ``batched`` with K runs per pass) it makes the
same pair set — the same ``--runs`` shadow runs (generated tasks × bootstrap subsets), the
same steps, batch size and snapshot steps — in a fresh child process, and measures:

* wall time and CPU time (user + system of the child, every thread counted), hence
  **pairs per CPU-minute** and pairs per wall-minute;
* peak resident memory of the child (``ru_maxrss``);
* the ratio of each engine's pairs per CPU-minute to the per-run path's (the target:
  ≥ 20× on the ``ci`` zoo, ≥ 10× on ``demo``; printed as MET / NOT MET).

The child sets torch to ``--threads`` threads (default 1, so CPU time and wall time agree
and the two engines are compared on the same footing on a shared 2-core machine). Prints a
table and writes JSON with the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from storage.settings import child_environment  # noqa: E402

TARGETS = {"ci": 20.0, "demo": 10.0}

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {repo!r})
from gtapp.shadow import ShadowConfig, make_pairs
from gtapp.tasks.universe import task_names
names = [n for n in task_names() if not n.startswith("lm/")][:{tasks}]
cfg = ShadowConfig(tasks=names, subsets={subsets}, subset_size={subset_size}, steps={steps},
                   snapshot_steps={snaps}, batch_size={batch_size}, max_length={max_length},
                   engine={engine!r}, batch_runs={k})
t0, c0 = time.monotonic(), time.process_time()
ps = make_pairs({zoo!r}, cfg, {out!r})
wall, cpu = time.monotonic() - t0, time.process_time() - c0
print("RESULT " + json.dumps({{"pairs": len(ps), "runs": len(ps.runs), "wall_s": wall, "cpu_s": cpu,
                               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(zoo: str, engine: str, k: int, args) -> dict:
    out = tempfile.mkdtemp(prefix=f"shadow-{engine}-{k}-") + "/pairs"
    code = CHILD.format(threads=args.threads, repo=str(REPO_ROOT), tasks=args.tasks,
                        subsets=max(1, args.runs // args.tasks), subset_size=args.subset_size, steps=args.steps,
                        snaps=tuple(args.snapshot_steps), batch_size=args.batch_size, max_length=args.max_length,
                        engine=engine, k=k, zoo=zoo, out=out)
    env = child_environment({"OMP_NUM_THREADS": args.threads, "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{engine} K={k} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[7:])
    r.update(engine=engine, k=k if engine == "batched" else None,
             pairs_per_cpu_min=r["pairs"] / (r["cpu_s"] / 60), pairs_per_wall_min=r["pairs"] / (r["wall_s"] / 60))
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="append", required=True, help="NAME=FOLDER of a zoo pair (repeatable)")
    ap.add_argument("--runs", type=int, default=64, help="shadow runs per measurement")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8, 32, 64], help="runs per batched pass")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--snapshot-steps", type=int, nargs="*", default=[10, 20, 30])
    ap.add_argument("--subset-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench-shadow-throughput.json"))
    args = ap.parse_args(argv)
    import torch

    from gtapp import __version__

    rows = []
    for spec in args.zoo:
        name, folder = spec.split("=", 1)
        base = measure(folder, "per_run", 1, args)
        base["zoo"] = name
        rows.append(base)
        print(f"{name} per_run: {base['pairs']} pairs in {base['cpu_s']:.1f} CPU-s", flush=True)
        for k in args.k:
            r = measure(folder, "batched", k, args)
            r["zoo"] = name
            r["speedup_vs_per_run"] = r["pairs_per_cpu_min"] / base["pairs_per_cpu_min"]
            rows.append(r)
            print(f"{name} batched K={k}: {r['pairs']} pairs in {r['cpu_s']:.1f} CPU-s "
                  f"({r['speedup_vs_per_run']:.2f}x)", flush=True)
    targets = []
    for name, want in TARGETS.items():
        got = [r["speedup_vs_per_run"] for r in rows if r["zoo"] == name and r["engine"] == "batched"]
        if got:
            targets.append({"zoo": name, "target": f">= {want:g}x the per-run path's pairs per CPU-minute",
                            "measured": round(max(got), 2), "verdict": "MET" if max(got) >= want else "NOT MET"})
    header = f"{'zoo':6} {'engine':8} {'K':>4} {'pairs':>6} {'CPU s':>8} {'wall s':>8} {'pairs/CPU-min':>14} " \
             f"{'x per-run':>9} {'peak RSS MB':>11}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['zoo']:6} {r['engine']:8} {r['k'] or '':>4} {r['pairs']:>6} {r['cpu_s']:>8.1f} {r['wall_s']:>8.1f} "
              f"{r['pairs_per_cpu_min']:>14.1f} {r.get('speedup_vs_per_run', 1.0):>9.2f} {r['peak_rss_mb']:>11.0f}")
    for t in targets:
        print(f"target {t['zoo']}: {t['target']}: {t['measured']}x -> {t['verdict']}")
    result = {"bench": "shadow_throughput", "rows": rows, "targets": targets,
              "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]},
              "gtapp_version": __version__, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
