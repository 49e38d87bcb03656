"""Speed and size of the Gradient Transformer: demo-preset shapes and Qwen2.5-3B -> 7B shapes.

    python bench/mapper_speed.py --out bench_mapper_speed.json [--device auto|cpu|cuda] [--skip-qwen]

(a) ``demo``: the zoo's demo preset (TinyLM 48 wide x 2 layers -> LLM 192 x 6, LoRA r4 on
    all 7 linear modules), shapes computed from gtapp.zoo.PRESETS['demo']. Times
    ``Mapper.predict`` on one update (the mapping alone) and the whole ``gtapp.generate``
    path from a TinyLM adapter folder to a peft LLM adapter folder (validate, map, OOD
    score, write). Target: < 1 s on CPU.
(b) ``qwen2.5-3b->7b``: LoRA r16 on q,k,v,o,gate,up,down; dims from the published configs
    (3B: hidden 2048, 36 layers, 16 heads, 2 KV heads, head_dim 128, intermediate 11008;
    7B: hidden 3584, 28 layers, 28 heads, 4 KV heads, head_dim 128, intermediate 18944).
    Random tensors (no weights needed). For a dense-chunk GT (the reference design's
    per-layer linear projections) and a rank-factored one: parameter count, weight bytes,
    measured peak memory growth (CPU RSS or CUDA max allocated) while building and mapping,
    time to map one update, and one training step (batch 2) when ``--train-step``.

Mappers here are *untrained* (normalisers and OOD reference fitted on a few random
updates): timing and memory do not depend on the weights' values. Prints a table and
writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import torch  # noqa: E402

from gtapp import __version__  # noqa: E402
from gtapp.mapper import GTMapper  # noqa: E402
from gtapp.mapper.base import OodReference  # noqa: E402
from testkit.synthetic import ALL_LINEAR, llama_recipe, random_factors  # noqa: E402
from gtapp.lora.recipe import RecipePair  # noqa: E402
from gtapp.pairset import Pair  # noqa: E402

QWEN = {
    "3b": dict(hidden=2048, layers=36, heads=16, kv_heads=2, head_dim=128, intermediate=11008),
    "7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128, intermediate=18944),
}


def demo_recipes() -> RecipePair:
    from gtapp.zoo import PRESETS

    p = PRESETS["demo"]
    mk = lambda name, s: llama_recipe(name, s.hidden, s.layers, s.heads, s.kv_heads, s.intermediate,  # noqa: E731
                                      targets=p.lora_targets, rank=p.lora_rank, alpha=p.lora_alpha)
    return RecipePair(mk("demo-tiny", p.tiny), mk("demo-llm", p.llm))


def qwen_recipes(rank: int = 16) -> RecipePair:
    return RecipePair(llama_recipe("Qwen2.5-3B", **QWEN["3b"], targets=ALL_LINEAR, rank=rank, alpha=2.0 * rank),
                      llama_recipe("Qwen2.5-7B", **QWEN["7b"], targets=ALL_LINEAR, rank=rank, alpha=2.0 * rank))


def prepare(mapper: GTMapper, n: int = 3, seed: int = 0) -> list[Pair]:
    """Fit normalisers and the OOD reference on n random pairs, without training."""
    g = torch.Generator().manual_seed(seed)
    pairs = [Pair(f"r{i}", f"r{i}", random_factors(mapper.recipes.tiny, generator=g),
                  random_factors(mapper.recipes.llm, generator=g)) for i in range(n)]
    tx, ty = mapper._stack(pairs)
    mapper.norm_in.fit(tx)
    mapper.norm_out.fit(ty)
    mapper.ood = OodReference(mapper.tiny).fit(mapper.norm_in.normalise(tx), [p.run_id for p in pairs])
    return pairs


def _mem(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_mapper(name: str, recipes: RecipePair, config: dict, device: torch.device, repeats: int,
                 train_step: bool) -> dict:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    m0 = _mem(device)
    t0 = time.perf_counter()
    mapper = GTMapper(recipes, {**config, "base": "mean", "device": str(device)})
    mapper.model.to(device)
    build_s = time.perf_counter() - t0
    pairs = prepare(mapper)
    params = mapper.model.num_parameters()
    x = pairs[0].tiny
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        out = mapper.predict(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    times = times[1:]  # first call warms up
    t = time.perf_counter()
    mapper.ood_score(x)
    ood_s = time.perf_counter() - t
    peak_infer = _mem(device) - m0
    row = {"setting": name, "variant": "dense" if config.get("d_rank") is None else f"rank-factored k={config['d_rank']}",
           "d_model": config.get("d_model", 128), "parameters": params, "weights_mb": params * 4 / 2**20,
           "tiny_update_numbers": mapper.tiny.dim, "llm_update_numbers": mapper.llm.dim,
           "tiny_tokens": len(mapper.tiny.modules), "llm_queries": len(mapper.llm.modules),
           "build_s": build_s, "map_s_median": statistics.median(times), "map_s_min": min(times),
           "ood_score_s": ood_s, "peak_mem_mb_inference": peak_infer,
           "memory_kind": "cuda max allocated" if device.type == "cuda" else "process RSS growth",
           "device": str(device), "output_modules": len(out)}
    if train_step:
        tx, ty = mapper._stack(pairs[:2])
        xn = {t: (a.to(device), b.to(device)) for t, (a, b) in mapper.norm_in.normalise(tx).items()}
        opt = torch.optim.AdamW(mapper.model.parameters(), lr=1e-4)
        step_times = []
        for _ in range(2):
            _sync(device)
            t = time.perf_counter()
            mapper.model.train()
            pred = mapper._forward_normalised(xn, mapper._base_n(xn))
            loss = sum(a.pow(2).mean() + b.pow(2).mean() for a, b in pred.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            _sync(device)
            step_times.append(time.perf_counter() - t)
        row["train_step_s"] = step_times[-1]
        row["peak_mem_mb_training"] = _mem(device) - m0
        del opt
    del mapper, pairs
    gc.collect()
    return row


def bench_fit(name: str, recipes: RecipePair, n_pairs: int, target_pairs: int, components: int = 16) -> dict:
    """Fit mean and ridge (per-module PCA: gtapp.mapper.blocks) on ``n_pairs`` random pairs of
    these shapes, time one mapping, and project memory to ``target_pairs`` with the stated model.

    Memory model (float32 unless said): the stacked pairs the fit holds, N × (D_tiny + D_llm) × 4
    bytes (``Mapper.fit`` keeps them in memory: at Qwen scale this term is what does not fit; a
    fit there needs pairs streamed from the shards); the normalisers, 4 × (D_tiny + D_llm) × 4; the
    per-module directions, min(k, N - 1) × (D_tiny + D_llm) × 8 (float64); one block at a time,
    N × D_module_max × 8; the ridge map, (Σk_tiny × Σk_llm) × 8. Mapping one update needs the
    normalisers, the directions and the map only."""
    from gtapp.mapper import MeanMapper, RidgeMapper

    g = torch.Generator().manual_seed(1)
    gc.collect()
    m0 = psutil.Process().memory_info().rss / 2**20
    t = time.perf_counter()
    pairs = [Pair(f"r{i}", f"r{i % max(2, n_pairs // 2)}", random_factors(recipes.tiny, generator=g),
                  random_factors(recipes.llm, generator=g)) for i in range(n_pairs)]
    make_s = time.perf_counter() - t
    rows = {}
    for cls in (MeanMapper, RidgeMapper):
        cfg = {"val_fraction": 0.0} | ({"max_components": components, "lam": 0.1} if cls is RidgeMapper else {})
        mapper = cls(recipes, cfg)
        t = time.perf_counter()
        mapper.fit(pairs)
        fit_s = time.perf_counter() - t
        peak = psutil.Process().memory_info().rss / 2**20 - m0
        t = time.perf_counter()
        mapper.predict(pairs[0].tiny)
        map_s = time.perf_counter() - t
        rows[cls.kind] = {"fit_s": round(fit_s, 2), "map_s": round(map_s, 3), "rss_growth_mb": round(peak)}
        del mapper
        gc.collect()
    d_t = sum(recipes.tiny.rank * (o + i) for o, i in recipes.tiny.shapes.values())
    d_l = sum(recipes.llm.rank * (o + i) for o, i in recipes.llm.shapes.values())
    d_max = max(recipes.llm.rank * (o + i) for o, i in recipes.llm.shapes.values())
    k = min(components, target_pairs - 1)
    n_mod_t, n_mod_l = len(recipes.tiny.shapes), len(recipes.llm.shapes)
    gb = 2**30
    projected = {
        "pairs_held_gb": target_pairs * (d_t + d_l) * 4 / gb,
        "normalisers_gb": 4 * (d_t + d_l) * 4 / gb,
        "directions_gb": k * (d_t + d_l) * 8 / gb,
        "largest_block_gb": target_pairs * d_max * 8 / gb,
        "ridge_map_gb": (k * n_mod_t) * (k * n_mod_l) * 8 / gb,
    }
    projected["fit_total_gb"] = sum(projected.values())
    projected["fit_without_held_pairs_gb"] = projected["fit_total_gb"] - projected["pairs_held_gb"]
    projected["map_one_update_gb"] = projected["normalisers_gb"] + projected["directions_gb"] + projected["ridge_map_gb"]
    del pairs
    gc.collect()
    return {"setting": name, "measured_pairs": n_pairs, "make_pairs_s": round(make_s, 1), "measured": rows,
            "projected_pairs": target_pairs, "components_per_module": k, "tiny_numbers": d_t, "llm_numbers": d_l,
            "projected_memory": {a: round(b, 2) for a, b in projected.items()},
            "targets": {"map one update <= 5 s and <= 24 GB": "MET" if rows["ridge"]["map_s"] <= 5
                        and projected["map_one_update_gb"] <= 24 else "NOT MET",
                        "fit within one 80 GB GPU": "MET" if projected["fit_total_gb"] <= 80 else
                        f"NOT MET ({projected['fit_total_gb']:.0f} GB, of which {projected['pairs_held_gb']:.0f} GB "
                        f"the pairs held in memory; without them {projected['fit_without_held_pairs_gb']:.1f} GB)"}}


def bench_generate_demo(repeats: int) -> dict:
    """The whole generate path on demo shapes (CPU): adapter folder in -> peft folder out."""
    from gtapp.generate import generate
    from gtapp.lora.peft_format import write_peft_adapter

    recipes = demo_recipes()
    mapper = GTMapper(recipes, {"base": "mean"})
    pairs = prepare(mapper)
    work = Path(tempfile.mkdtemp(prefix="bench_gen_"))
    write_peft_adapter(pairs[0].tiny, recipes.tiny, work / "tiny")
    mapper.save(work / "mapper")
    times, inner = [], []
    for i in range(repeats + 1):
        t = time.perf_counter()
        res = generate(work / "mapper", [work / "tiny"], work / f"out{i}")
        times.append(time.perf_counter() - t)
        inner.append(res.timing)
    return {"setting": "demo", "what": "gtapp.generate (load mapper, validate, map, OOD, write peft)",
            "total_s_median": statistics.median(times[1:]), "stages_last": inner[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description="Gradient Transformer speed and size")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-qwen", action="store_true")
    ap.add_argument("--qwen-d-model", type=int, default=256)
    ap.add_argument("--qwen-d-rank", type=int, default=32)
    ap.add_argument("--train-step", action="store_true", help="also time one training step (Adam) per mapper")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fit-pairs", type=int, default=8, help="random pairs the Qwen-shape fit is measured on")
    ap.add_argument("--fit-target", type=int, default=3000, help="pairs the fit's memory is projected to")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    demo = demo_recipes()
    rows.append(bench_mapper("demo", demo, {}, torch.device("cpu"), args.repeats, args.train_step))
    rows.append(bench_mapper("demo", demo, {"d_rank": 8}, torch.device("cpu"), args.repeats, args.train_step))
    gen = bench_generate_demo(args.repeats)
    if not args.skip_qwen:
        t = time.perf_counter()
        qwen = qwen_recipes()
        recipe_s = time.perf_counter() - t
        for cfg in ({"d_model": args.qwen_d_model, "d_rank": args.qwen_d_rank, "n_heads": 8},
                    {"d_model": args.qwen_d_model, "n_heads": 8}):
            rows.append(bench_mapper("qwen2.5-3b->7b r16", qwen, cfg, device, max(2, args.repeats // 2),
                                     args.train_step))
        fit = bench_fit("qwen2.5-3b->7b r16", qwen, args.fit_pairs, args.fit_target)
    result = {
        "rows": rows, "generate_demo": gen,
        "demo_target_met": rows[0]["map_s_median"] < 1.0 and gen["total_s_median"] < 1.0,
        "versions": {"gtapp": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)},
    }
    if not args.skip_qwen:
        result["qwen_recipe_build_s"] = recipe_s
        result["qwen_fit"] = fit
    head = f"{'setting':<20} {'variant':<22} {'params':>12} {'weights MB':>11} {'peak MB':>9} {'map s':>8} {'train s':>8} device"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['setting']:<20} {r['variant']:<22} {r['parameters']:>12,} {r['weights_mb']:>11.1f} "
              f"{r['peak_mem_mb_inference']:>9.0f} {r['map_s_median']:>8.4f} "
              f"{r.get('train_step_s', float('nan')):>8.3f} {r['device']}")
    print(f"demo generate (adapter folder -> peft folder): {gen['total_s_median']:.3f} s; "
          f"target < 1 s met: {result['demo_target_met']}")
    if not args.skip_qwen:
        print(f"qwen fit on {fit['measured_pairs']} pairs: {fit['measured']}")
        print(f"projected to {fit['projected_pairs']} pairs: {fit['projected_memory']}")
        for k, v in fit["targets"].items():
            print(f"target {k}: {v}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
