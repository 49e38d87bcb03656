"""What limits the refinement: its text or its budget? A probe on the provider's held-out shadow tasks.

    python bench/refine_text_probe.py --zoo /path/to/zoo/ci --preset ci --seed 0 \
        --families dialogue lm --out bench/results/refine_text_probe_ci_s0.json

For each held-out task of the calibration's split (bench/refine_calibration.held_out_split, the
same seed: never a private task), the TinyLM is fine-tuned on the part of its train split the
calibration uses as the organisation's data. The LLM's LoRA is then distilled from its recipe's
seeded start (no GT adapter, so only the text and the budget differ) towards the proxy-tuned
distribution, on three kinds of provider text:

* ``shadow``: the shadow tasks' public examples (what refinement uses in the product);
* ``family``: those of the shadow tasks of the held-out task's own family only;
* ``own``: the held-out task's own public split. A provider never has this for a real private
  task: it bounds what better provider text could give.

each with the default share of TinyLM samples and with none, for the preset's LLM step budget
and ``--long`` times it. ``--runs TEXT:SHARE:MULT[:own]`` runs only the given ones instead; a
fourth field ``own`` writes the samples after the held-out task's own public *prompts* (no
answers; a document's opening where it has no prompt: gtapp.refine.public_prompts, what an
organisation that gives its public prompts supplies), e.g. ``shadow:1:1:own`` is refinement on those prompts alone. Every refinement chooses its learning rate by the shared selection.
Reported per run: answer NLL on the task's test split, the share of proxy-tuning's NLL gain it
keeps, and its NLL gap recovery (base LLM 0, the oracle 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--preset", default="ci")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shadow-per-family", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=None, help="only the held-out tasks of these families")
    ap.add_argument("--long", type=int, default=5, help="the longer budget, in multiples of the preset's LLM steps")
    ap.add_argument("--runs", nargs="+", default=None, metavar="TEXT:SHARE:MULT[:own]",
                    help="only these runs: text, sample share, budget in multiples of the preset's LLM steps, "
                         "and 'own' for samples after the task's own public prompts")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtapp-refine-text-probe"))
    ap.add_argument("--out", type=Path, default=Path("refine_text_probe.json"))
    args = ap.parse_args(argv)

    from bench.refine_calibration import held_out_split
    from gtapp.baselines import Budget, evaluate_result, run_baseline
    from gtapp.baselines.selection import Selection
    from gtapp.bench.benchmark import provenance
    from gtapp.bench.presets import PRESETS
    from gtapp.evaluate import evaluate_paths
    from gtapp.finetune import FinetuneConfig, finetune
    from gtapp.models import ModelPair
    from gtapp.refine import RefineConfig, public_prompts, refine
    from gtapp.tasks.universe import make_task

    p, seed, t0 = PRESETS[args.preset], args.seed, time.monotonic()
    pair = ModelPair.from_dir(args.zoo)
    shadow, held = held_out_split(args.shadow_per_family, seed)
    if args.families:
        held = [t for t in held if t.split("/")[0] in args.families]
    budget = Budget(steps=p.llm_steps, batch_size=p.batch_size, lr=p.llm_lr)
    public = {t: make_task(t, seed=seed, n_train=p.n_public, n_test=1).train for t in shadow}
    per_task = max(1, 4 * p.n_public // len(shadow))  # as many per task as gtapp.refine.provider_text takes
    grid = [(t, share, mult, False) for t in ("shadow", "family", "own")
            for share in (RefineConfig.sample_share, 0.0) for mult in (1, args.long)]
    if args.runs:
        grid = [_run_spec(r) for r in args.runs]
    results = []
    for name in held:
        family = name.split("/")[0]
        task = make_task(name, seed=seed, n_train=p.n_public + p.n_private, n_test=p.n_test)
        private = task.train[p.n_public:]  # the calibration's organisation data
        d = args.work / f"s{seed}" / name.replace("/", "_")
        tiny = finetune(pair.tiny_path, pair.recipes.tiny, private,
                        FinetuneConfig(steps=p.tiny_steps, batch_size=p.batch_size, lr=p.tiny_lr, seed=seed),
                        d / "tiny", overwrite=True).adapter_dir
        nll = {"base_llm": evaluate_paths(pair.llm_path, task, limit=p.eval_limit)["answer_nll"]}
        for method in ("oracle", "proxy_tuning"):
            res = run_baseline(method, pair, tiny if method != "oracle" else None, list(private), [], budget,
                               d / method, seed=seed, task=task, overwrite=True, selection=Selection())
            nll[method] = evaluate_result(res, pair, task, limit=p.eval_limit)["answer_nll"]
        texts = {"shadow": [e for t in shadow for e in public[t][:per_task]],
                 "family": [e for t in shadow if t.startswith(family + "/") for e in public[t]],
                 "own": list(task.train[:p.n_public])}
        def recovered(value: float, of: str) -> float:
            """The share of method ``of``'s NLL gain over the base LLM that an answer NLL of ``value`` has."""
            return (nll["base_llm"] - value) / (nll["base_llm"] - nll[of])

        row = {"task": name, "seed": seed, "nll": nll, "runs": []}
        own_prompts = public_prompts(task.train[:p.n_public])
        for text_name, share, mult, own in grid:
            steps = mult * p.llm_steps
            tag = f"{text_name}_samples{share:g}_steps{steps}" + ("_ownprompts" if own else "")
            cfg = RefineConfig(steps=steps, batch_size=p.batch_size, lr=p.llm_lr, sample_share=share,
                               start="init", teacher_llm="base", seed=seed)  # no mapped adapter here
            rec = refine(pair, tiny, texts[text_name], d / tag, cfg, organisation_prompts=own_prompts if own else None)
            value = evaluate_paths(pair.llm_path, task, adapter_dir=d / tag, limit=p.eval_limit)["answer_nll"]
            run = {"text": text_name, "sequences": len(texts[text_name]), "sample_share": share, "steps": steps,
                   "own_prompts": own, "answer_nll": value, "lr": rec["lr"], "chosen_steps": rec["steps"],
                   "of_proxy_gain": recovered(value, "proxy_tuning"),
                   "gap_recovery_nll": recovered(value, "oracle"),
                   "wall_s": rec["wall_s"]}
            row["runs"].append(run)
            print(f"{name:28s} {tag:44s} NLL {value:.4f}  of proxy's gain {run['of_proxy_gain']:+.2f}  "
                  f"gap {run['gap_recovery_nll']:+.3f}", flush=True)
        row["proxy_gap_recovery_nll"] = recovered(nll["proxy_tuning"], "oracle")
        print(f"{name:28s} proxy-tuning gap {row['proxy_gap_recovery_nll']:+.3f}", flush=True)
        results.append(row)
    out = {"preset": p.name, "seed": seed, "zoo": str(args.zoo), "shadow_tasks": shadow, "held_out_tasks": held,
           "results": results, "total_s": time.monotonic() - t0, **provenance()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


def _run_spec(spec: str) -> tuple[str, float, int, bool]:
    """``TEXT:SHARE:MULT[:own]`` -> (text, sample share, budget multiple, samples after own prompts)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[0] not in ("shadow", "family", "own") or parts[3:] not in ([], ["own"]):
        raise SystemExit(f"error: --runs {spec!r}: expected TEXT:SHARE:MULT[:own] with TEXT shadow, family or own")
    return parts[0], float(parts[1]), int(parts[2]), parts[3:] == ["own"]


if __name__ == "__main__":
    raise SystemExit(main())
