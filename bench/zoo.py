"""Capacity gap of a zoo pair: fine-tune TinyLM and LLM on the same task data, score both.

    python bench/zoo.py --preset ci --out bench_zoo.json [--zoo DIR] [--steps 150]

For one task per family, both models get the same LoRA fine-tune (same examples, steps,
batch size, learning rate and seed) and are scored on the test split: the task metric and
the answer NLL (nats per answer token). Prints a table and writes JSON with versions,
seeds and configs. The gap is "real" when the fine-tuned LLM beats the fine-tuned TinyLM
on every family.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gtapp import __version__, zoo  # noqa: E402
from gtapp.evaluate import evaluate  # noqa: E402
from gtapp.finetune import FinetuneConfig, finetune  # noqa: E402
from gtapp.models import ModelPair, load_model, load_tokenizer  # noqa: E402
from gtapp.tasks import make_task  # noqa: E402
from peft import PeftModel  # noqa: E402

TASKS = ["math/add-fruit-easy", "commonsense/animal_home-4opt", "reading/sports-sum",
         "dialogue/meeting-short", "lm/weather-0"]


def run(preset: str, zoo_dir: Path | None, steps: int, n_train: int, n_test: int, seed: int,
        lr: float, batch_size: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_zoo_"))
    if zoo_dir is None:
        zoo_dir = zoo.build(preset, work / "zoo", seed=seed)
    pair = ModelPair.from_dir(zoo_dir)
    tok = load_tokenizer(pair.tiny_path)
    rows = []
    for name in TASKS:
        task = make_task(name, seed=seed, n_train=n_train, n_test=n_test)
        for which in ("tiny", "llm"):
            cfg = FinetuneConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed)
            t0 = time.monotonic()
            res = finetune(pair.path(which), pair.recipe(which), task.train, cfg, work / f"{which}_{name.replace('/', '_')}")
            ft_s = time.monotonic() - t0
            base = load_model(pair.path(which))
            before = evaluate(base, tok, task)
            tuned = PeftModel.from_pretrained(load_model(pair.path(which)), str(res.adapter_dir)).eval()
            after = evaluate(tuned, tok, task)
            rows.append({"task": name, "family": task.family, "model": which, "metric": task.metric_name,
                         "base_value": before["value"], "ft_value": after["value"],
                         "base_answer_nll": before["answer_nll"], "ft_answer_nll": after["answer_nll"],
                         "finetune_s": ft_s})
    verdicts = {}
    for name in TASKS:
        t, l = (next(r for r in rows if r["task"] == name and r["model"] == m) for m in ("tiny", "llm"))
        higher = t["metric"] != "perplexity"
        metric_better = l["ft_value"] > t["ft_value"] if higher else l["ft_value"] < t["ft_value"]
        verdicts[name] = {"llm_beats_tiny_metric": metric_better,
                          "llm_beats_tiny_nll": l["ft_answer_nll"] < t["ft_answer_nll"]}
    return {
        "preset": preset, "seed": seed, "steps": steps, "n_train": n_train, "n_test": n_test, "lr": lr,
        "batch_size": batch_size, "zoo": json.loads((Path(zoo_dir) / "zoo.json").read_text()),
        "rows": rows, "verdicts": verdicts,
        "gap_is_real": all(v["llm_beats_tiny_metric"] or v["llm_beats_tiny_nll"] for v in verdicts.values()),
        "versions": {"gtapp": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--preset", default="ci")
    ap.add_argument("--zoo", type=Path, default=None, help="an already built zoo folder")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench_zoo.json"))
    a = ap.parse_args()
    result = run(a.preset, a.zoo, a.steps, a.n_train, a.n_test, a.seed, a.lr, a.batch_size)
    print(f"{'task':<30} {'model':<5} {'metric':<12} {'base':>8} {'ft':>8} {'nll base':>9} {'nll ft':>8}")
    for r in result["rows"]:
        print(f"{r['task']:<30} {r['model']:<5} {r['metric']:<12} {r['base_value']:>8.3f} {r['ft_value']:>8.3f} "
              f"{r['base_answer_nll']:>9.3f} {r['ft_answer_nll']:>8.3f}")
    print(f"capacity gap real on every family: {result['gap_is_real']}")
    a.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
