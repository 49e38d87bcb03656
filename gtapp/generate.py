"""Generation: TinyLM adapter(s) -> mapper -> a stock peft LLM adapter (optionally merged).

    result = generate("mappers/gt-v1", ["org_a/adapter"], "out/llm_adapter", zoo="zoo")
    PeftModel.from_pretrained(load_model("zoo/llm"), "out/llm_adapter")

Steps, each timed:
1. load the mapper version (its recipe.json is the contract);
2. if a zoo / model pair is given, check that its recipes are the mapper's (a mapper is only
   valid for the exact TinyLM and LLM it was trained for);
3. validate every uploaded TinyLM adapter against the mapper's *tiny* recipe
   (gtapp.lora.validate, into an UpdateVector: safetensors only, shapes, targets, rank, alpha, seeded init) -- a
   mismatched recipe is refused with the validator's reason;
4. map it (several adapters: gtapp.combine, average-then-map or map-then-average);
5. score how far each input lies from the shadow TinyLM updates (OOD score: nearest shadow
   update's distance over the typical distance between two shadow tasks' updates, the *task
   score*; above gtapp.ood.OOD_TASK_THRESHOLD a warning -- the map was never trained
   near such inputs; a mapper without task reference uses the run-relative score);
6. write the LLM adapter (UpdateVector.write_peft, the one peft writer) and ``generate.json``;
7. optionally the merged LLM (``merge_and_unload`` -> ``save_pretrained``) in ``OUT/merged``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from gtapp.lora.recipe import RecipeError, RecipePair
from gtapp.ood import ood_warning
from gtapp.progress import ProgressFn, Tracker

RECORD = "generate.json"


@dataclass
class GenerateResult:
    adapter_dir: Path
    merged_dir: Optional[Path]
    ood: list[dict]
    warnings: list[str]
    timing: dict
    record: dict = field(default_factory=dict)


def check_recipes(mapper_recipes: RecipePair, other: RecipePair, where: str) -> None:
    """Refuse a model pair whose recipes are not the mapper's."""
    from gtapp.mapper.base import recipe_fingerprint

    for which in ("tiny", "llm"):
        a, b = getattr(mapper_recipes, which), getattr(other, which)
        fa, fb = recipe_fingerprint(a), recipe_fingerprint(b)
        if fa != fb:
            reasons = [k for k in ("base_fingerprint", "init_fingerprint", "rank", "alpha", "target_modules",
                                   "num_layers") if getattr(a, k) != getattr(b, k)]
            raise RecipeError(f"{where}: its {which} recipe ({fb[:12]}) is not the mapper's ({fa[:12]})"
                              + (f"; differs in {', '.join(reasons)}" if reasons else "")
                              + ": use the model pair the mapper was trained for")


def generate(mapper, tiny_adapters: Sequence, out_dir: str | Path, *, weights: Optional[Sequence[float]] = None,
             zoo: Optional[str | Path] = None, llm_path: Optional[str] = None, merged: bool = False,
             organisation: str = "average_then_map", method: str = "mean", weighting: str = "data_size",
             names: Optional[Sequence[str]] = None, model_name: Optional[str] = None,
             init_known: Optional[Sequence[bool]] = None, progress: Optional[ProgressFn] = None) -> GenerateResult:
    """Map TinyLM adapter folders (or zips, or factor dicts) to an LLM adapter in ``out_dir``.
    ``model_name``: what the adapter's config and record name as its base model (default: the
    LLM's path). ``init_known[i]``: adapter i was made by the server's own fine-tune from the
    recipe's init, so its A is not held to the init check."""
    from gtapp.combine import Contributor, combine_and_map, contributor_from_adapter
    from gtapp.mapper.base import Mapper
    from gtapp.mapper.registry import load_mapper

    t_all = time.monotonic()
    timing = {}
    tracker = Tracker(progress, "generate", 5)
    if not tiny_adapters:
        raise ValueError("no TinyLM adapter given")
    if weights is not None and len(weights) != len(tiny_adapters):
        raise ValueError(f"{len(weights)} weights for {len(tiny_adapters)} adapters")
    if init_known is not None and len(init_known) != len(tiny_adapters):
        raise ValueError(f"{len(init_known)} init_known flags for {len(tiny_adapters)} adapters")
    t = time.monotonic()
    mapper_dir = None
    if not isinstance(mapper, Mapper):
        mapper_dir = Path(mapper)
        mapper = load_mapper(mapper_dir)
    timing["load_mapper_s"] = time.monotonic() - t
    tracker.update(1, "mapper loaded")
    if zoo is not None:
        from gtapp.models import ModelPair

        pair = ModelPair.from_dir(zoo)
        check_recipes(mapper.recipes, pair.recipes, f"model pair {zoo}")
        llm_path = llm_path or pair.llm_path
    base_name = model_name or llm_path or mapper.recipes.llm.base_model

    t = time.monotonic()
    contributors = []
    for i, src in enumerate(tiny_adapters):
        w = None if weights is None else float(weights[i])
        name = names[i] if names else None
        if isinstance(src, dict):
            contributors.append(Contributor(name=name or f"update{i}", update=src, weight=w, source="factors"))
        else:
            c = contributor_from_adapter(src, mapper.recipes.tiny, name=name, weight=w,
                                         init_known=bool(init_known and init_known[i]))
            if name is None and any(c.name == o.name for o in contributors):
                c.name = f"{c.name}#{i}"
            contributors.append(c)
    timing["validate_s"] = time.monotonic() - t
    tracker.update(2, "adapters validated")

    t = time.monotonic()
    if len(contributors) == 1 and weights is None:
        c = contributors[0]
        llm_update = mapper.predict(c.update)
        ood = [mapper.ood_score(c.update)] if mapper.ood is not None else [None]
        combine = None
        contributors_rec = [{"name": c.name, "weight": 1.0, "examples": c.examples, "dp": c.dp,
                             "epsilon": c.epsilon, "delta": c.delta, "source": c.source, "ood": ood[0]}]
    else:
        res = combine_and_map(mapper, contributors, organisation=organisation, method=method, weighting=weighting)
        llm_update = res.update
        ood = [r["ood"] for r in res.record["contributors"]]
        combine = res.record
        contributors_rec = res.record["contributors"]
    timing["map_s"] = time.monotonic() - t
    tracker.update(3, "mapped")

    warnings = [f"{c.name}: {ood_warning(o)}" for c, o in zip(contributors, ood) if o and o.get("ood")]
    if combine and combine.get("combined_ood") and combine["combined_ood"].get("ood"):
        warnings.append(f"the combined TinyLM update: {ood_warning(combine['combined_ood'])}")

    t = time.monotonic()
    out = Path(out_dir)
    llm_update.write_peft(mapper.recipes.llm, out, base_model_name_or_path=str(base_name))
    timing["write_s"] = time.monotonic() - t
    tracker.update(4, "adapter written")

    merged_dir = None
    if merged:
        if not llm_path:
            raise ValueError("merging needs the LLM: give zoo or llm_path")
        t = time.monotonic()
        merged_dir = merge_adapter(llm_path, out, out / "merged", mapper.recipes.llm)
        timing["merge_s"] = time.monotonic() - t
    timing["total_s"] = time.monotonic() - t_all
    timing = {k: round(v, 4) for k, v in timing.items()}
    card = mapper.card or {}
    record = {
        "kind": "generate", "adapter_dir": str(out), "merged_dir": str(merged_dir) if merged_dir else None,
        "mapper": {"dir": str(mapper_dir) if mapper_dir else None, "kind": mapper.kind, "version": card.get("version"),
                   "pair_set": (card.get("pair_set") or {}).get("version")},
        "llm": str(base_name), "contributors": contributors_rec, "combine": combine, "ood": ood,
        "warnings": warnings, "timing": timing,
    }
    (out / RECORD).write_text(json.dumps(record, indent=2, default=str))
    tracker.update(5, "done")
    return GenerateResult(out, merged_dir, ood, warnings, timing, record)


def merge_adapter(llm_path: str | Path, adapter_dir: str | Path, out_dir: str | Path, recipe=None) -> Path:
    """Load the LLM, apply the adapter with stock peft, merge it into the weights, save."""
    from peft import PeftModel

    from gtapp.lora.peft_model import check_base
    from gtapp.models import load_model, load_tokenizer

    model = load_model(llm_path)
    if recipe is not None:
        check_base(model, recipe)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(llm_path).save_pretrained(str(out))
    return out
