"""Rows other than jobs: datasets, model pairs, mapper versions. Small helpers shared by the
CLI, the dashboard and the job functions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping, Optional

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.artifacts import ArtifactStore
from storage.models import Dataset, MapperVersion, ModelPairRecord


def examples_to_jsonl(examples: Iterable) -> bytes:
    """Examples (gtapp.tasks.base.Example or dicts with prompt/answer[/references]) as JSONL."""
    lines = []
    for ex in examples:
        if isinstance(ex, Mapping):
            d = {"prompt": ex["prompt"], "answer": ex["answer"], "references": list(ex.get("references", ()))}
        else:
            d = {"prompt": ex.prompt, "answer": ex.answer, "references": list(ex.references)}
        if not isinstance(d["prompt"], str) or not isinstance(d["answer"], str):
            raise ValueError("each example needs string 'prompt' and 'answer'")
        lines.append(json.dumps(d, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def jsonl_to_examples(data: bytes) -> list[dict]:
    """The one reader of the stored format :func:`examples_to_jsonl` writes. Records are split
    on LF only: ``json.dumps`` escapes LF inside strings, but other characters that
    ``str.splitlines`` treats as line breaks (U+2028, U+2029, U+0085, VT, FF, FS/GS/RS) stay
    raw inside the text (``ensure_ascii=False``) and must not end a record."""
    out = []
    for i, line in enumerate(data.decode("utf-8").split("\n")):
        if line.strip():
            d = json.loads(line)
            if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not isinstance(d.get("answer"), str):
                raise ValueError(f"dataset line {i + 1}: expected {{'prompt': str, 'answer': str}}")
            out.append(d)
    return out


def read_examples(store: ArtifactStore, sha: str) -> list[dict]:
    """A stored dataset's examples (what every job trains and evaluates on)."""
    return jsonl_to_examples(store.read_bytes(sha))


def create_dataset(session: Session, store: ArtifactStore, org_id: int, name: str, examples: Iterable,
                   user_id: Optional[int] = None, task: Optional[str] = None,
                   epsilon_budget: Optional[float] = None, delta: float = 1e-5,
                   source: Optional[dict] = None) -> Dataset:
    data = examples_to_jsonl(examples)
    # read back by the very reader the jobs use: a dataset that is stored is one that trains
    n = len(jsonl_to_examples(data))
    sha = store.put_bytes(data)
    if epsilon_budget is not None and epsilon_budget <= 0:
        raise ValueError("epsilon_budget must be positive")
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    ds = Dataset(org_id=org_id, user_id=user_id, name=name, task=task, artifact=sha, n_examples=n,
                 source=source or {}, epsilon_budget=epsilon_budget, delta=delta)
    session.add(ds)
    session.flush()
    return ds


def recipe_fingerprint(recipe: Mapping) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def register_pair(session: Session, name: str, root: str | Path) -> ModelPairRecord:
    """Register a zoo-style folder (root/tiny, root/llm, root/recipe.json) chosen by an admin."""
    root = Path(root).resolve()
    recipe_path = root / "recipe.json"
    if not recipe_path.is_file():
        raise FileNotFoundError(f"{recipe_path} not found: expected a folder with tiny/, llm/ and recipe.json")
    recipe = json.loads(recipe_path.read_text())
    if not isinstance(recipe, dict) or "tiny" not in recipe or "llm" not in recipe:
        raise ValueError(f"{recipe_path}: not a recipe pair")
    pair = ModelPairRecord(name=name, tiny_path=str(root / "tiny"), llm_path=str(root / "llm"), recipe=recipe,
                     recipe_fingerprint=recipe_fingerprint(recipe))
    session.add(pair)
    session.flush()
    return pair


def promote_mapper(session: Session, mapper_id: int) -> MapperVersion:
    """Make ``mapper_id`` the one promoted version of its model pair."""
    mv = session.get(MapperVersion, mapper_id)
    if mv is None:
        raise LookupError(f"mapper version {mapper_id} not found")
    session.execute(update(MapperVersion).where(MapperVersion.model_pair_id == mv.model_pair_id,
                                                MapperVersion.promoted.is_(True)).values(promoted=False))
    session.flush()
    mv.promoted = True
    session.flush()
    return mv


def promoted_mapper(session: Session, model_pair_id: int) -> Optional[MapperVersion]:
    return session.scalars(select(MapperVersion).where(MapperVersion.model_pair_id == model_pair_id,
                                                       MapperVersion.promoted.is_(True))).one_or_none()


def pair_model_name(pair_name: str, which: str) -> str:
    """What a served adapter's config names as its base model: the model pair and which of its
    models, never a server path (the colons keep it from reading as a hub id a loader would fetch)."""
    return f"gtapp:{pair_name}:{which}"
