"""Shadow pairs: (TinyLM update, LLM update) pairs the provider makes on its own data.

For every shadow *run* -- a (task, bootstrap subset of the task's TRAIN split, seed) --
both models are fine-tuned from their recipes on exactly the same examples with the same
seed, and every checkpoint along the trajectory (``snapshot_steps`` plus the final step)
gives one pair. More pairs per LLM fine-tune is the point: an LLM fine-tune is what a pair
costs.

A pair set is a folder, versioned and resumable:

    OUT/pairset.json         manifest: format, version, recipe fingerprints, settings,
                             finished runs (task, subset indices + hash, seed, steps,
                             pair ids, shard file + sha256, fine-tune losses and times)
    OUT/recipe.json          the RecipePair the pairs were made with
    OUT/runs/<key>.safetensors   one shard per finished run: for each step k,
                             ``{k}.tiny.<module>.A`` / ``.B`` and ``{k}.llm.<module>.A`` / ``.B``
                             (absolute LoRA factors, float32)

Each run's shard is written to a temporary name and renamed, then the manifest is
rewritten atomically; a run is finished exactly when the manifest lists it. An interrupted
generation (crash, Ctrl-C, :class:`~gtapp.progress.Cancelled`) therefore loses at most the
batch of runs in progress, and rerunning the same command skips every finished batch. The set's
``version`` is a hash of the recipes, the settings and the finished shards' hashes, so any
change to the set's contents changes it.

Cost: the default engine (:mod:`gtapp.batched_finetune`) loads each model once and trains
``batch_runs`` runs of it in one batched pass; the per-run engine (``engine="per_run"``, kept
for comparison: ``bench/shadow_throughput.py``) pays two model loads, two LoRA attachments and
two Python training loops per run. A batch of runs is the unit that is trained and written:
an interrupted generation loses at most the batch in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from safetensors.torch import save_file

from gtapp import __version__
from gtapp.data import data_fingerprint
from gtapp.progress import Progress, ProgressFn, Tracker, job_eta
from gtapp.files import atomic_write_json
from gtapp.lora.peft_format import read_adapter
from gtapp.lora.recipe import RecipeError, RecipePair
from gtapp.pairset import MANIFEST, PAIRSET_FORMAT, RECIPE, PairSet, set_version
from gtapp.tasks.library import DATASET_PREFIX, task_library  # noqa: F401 (task_library: for callers)

ENGINES = ("batched", "per_run")
# settings a pair set made before they existed was made with
LEGACY_SETTINGS = {"engine": "per_run", "batch_runs": 1}



# ----------------------------------------------------------------------------- config and plan

@dataclass
class ShadowConfig:
    """What to fine-tune. ``tasks``, ``subsets`` and ``seeds`` say which runs; everything
    else (:meth:`settings`) must stay the same across every run of one pair set."""

    tasks: tuple[str, ...]
    subsets: int = 4  # bootstrap subsets per task
    subset_size: int = 64
    steps: int = 40
    snapshot_steps: tuple[int, ...] = ()  # checkpoints kept besides the final step
    seeds: tuple[int, ...] = (0,)
    lr: float = 2e-3  # TinyLM learning rate
    llm_lr: Optional[float] = None  # LLM learning rate (default: lr)
    batch_size: int = 8
    max_length: int = 128
    task_seed: int = 0  # make_task(name, seed=task_seed, n_train=n_train)
    n_train: int = 512  # size of each task's TRAIN split the subsets are drawn from
    bootstrap: bool = True  # subsets drawn with replacement
    subset_seed: int = 0
    device: str = "cpu"
    # how the runs are trained: "batched" (gtapp.batched_finetune: ``batch_runs`` runs of a model
    # in one pass, the model loaded once) or "per_run" (one gtapp.finetune call per run and
    # model). Batches are consecutive runs of the plan, whatever is already done, so the same
    # settings give the same shards however the work is split or resumed.
    engine: str = "batched"
    batch_runs: int = 16
    # real public datasets as shadow tasks: a task named "dataset:<loader>" reads the train
    # split of that dataset from this folder (any of gtapp.datasets' loaders; not part of the
    # settings: the folder is this machine's, the examples' fingerprint is in each run's record)
    dataset_paths: dict = field(default_factory=dict)

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        self.seeds = tuple(int(s) for s in self.seeds)
        snaps = sorted({int(k) for k in self.snapshot_steps})
        bad = [k for k in snaps if not 1 <= k <= self.steps]
        if bad:
            raise ValueError(f"snapshot steps must lie in 1..{self.steps}, got {bad}")
        self.snapshot_steps = tuple(snaps)
        if not self.tasks:
            raise ValueError("no shadow tasks given")
        if self.subsets < 1 or self.subset_size < 1 or self.steps < 1 or not self.seeds:
            raise ValueError("subsets, subset_size, steps must be >= 1 and at least one seed given")
        if not self.bootstrap and self.subset_size > self.n_train:
            raise ValueError(f"subset_size {self.subset_size} > n_train {self.n_train} without bootstrap")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.batch_runs < 1:
            raise ValueError("batch_runs must be >= 1")

    @property
    def pair_steps(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.snapshot_steps) | {self.steps}))

    @property
    def runs_per_batch(self) -> int:
        return self.batch_runs if self.engine == "batched" else 1

    def settings(self) -> dict:
        d = asdict(self)
        for k in ("tasks", "subsets", "seeds", "device", "dataset_paths"):
            d.pop(k)
        d["snapshot_steps"] = list(self.snapshot_steps)
        d["llm_lr"] = self.llm_lr if self.llm_lr is not None else self.lr
        d["batch_runs"] = self.runs_per_batch
        return d


@dataclass(frozen=True)
class ShadowRun:
    task: str
    subset: int
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.task}#sub{self.subset}#seed{self.seed}"

    @property
    def key(self) -> str:
        """File-name-safe key of the run."""
        return hashlib.sha256(self.run_id.encode()).hexdigest()[:16]


def load_shadow_task(name: str, config: ShadowConfig):
    """The task a shadow run draws its subset from: a generated variant (``make_task``), or a real
    dataset's train split (``dataset:<loader>``, at most ``n_train`` examples, seeded)."""
    from gtapp.tasks.universe import make_task

    if name.startswith(DATASET_PREFIX):
        from gtapp import datasets

        ds = name[len(DATASET_PREFIX):]
        if ds not in config.dataset_paths:
            raise ValueError(f"shadow task {name!r}: no folder given for dataset {ds!r} (ShadowConfig.dataset_paths)")
        task = datasets.load(ds, path=config.dataset_paths[ds], limit=config.n_train, seed=config.task_seed)
        if len(task.train) < config.n_train:
            raise ValueError(f"shadow task {name!r}: {len(task.train)} train examples, fewer than n_train="
                             f"{config.n_train}")
        return task
    return make_task(name, seed=config.task_seed, n_train=config.n_train, n_test=1)


def plan(config: ShadowConfig) -> list[ShadowRun]:
    """All runs of a config, in generation order (task, subset, seed)."""
    return [ShadowRun(t, k, s) for t in config.tasks for k in range(config.subsets) for s in config.seeds]


def subset_indices(task: str, subset: int, config: ShadowConfig) -> list[int]:
    """The bootstrap subset ``subset`` of ``task``'s train split (deterministic)."""
    rng = random.Random(f"shadow|{task}|{subset}|{config.subset_seed}")
    if config.bootstrap:
        return [rng.randrange(config.n_train) for _ in range(config.subset_size)]
    return rng.sample(range(config.n_train), config.subset_size)


def indices_hash(indices: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(indices)).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- generation

def _sub_progress(progress: Optional[ProgressFn], start: float, end: float, stage: str, prefix: str,
                  t0: Optional[float] = None):
    """``progress`` for a part (start..end) of a step. With ``t0`` (when the whole step began) it
    carries the whole step's ETA from its pace (gtapp.progress.job_eta); a part's own ETA would
    only cover that part."""
    if progress is None:
        return None

    def fn(p: Progress) -> None:
        fraction = start + (end - start) * p.fraction
        eta = job_eta(fraction, time.monotonic() - t0, None) if t0 is not None else None
        progress(Progress(fraction, stage, eta, f"{prefix} {p.message}".strip()))
    return fn


def open_or_create(out: Path, recipes: RecipePair, config: ShadowConfig, zoo_dir: str) -> dict:
    """The manifest of ``out``: created empty, or an existing one checked to be compatible."""
    fps = {"tiny": recipes.tiny.fingerprint(), "llm": recipes.llm.fingerprint()}
    settings = {**config.settings(), "pair_steps": list(config.pair_steps)}
    path = out / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("format") != PAIRSET_FORMAT:
            raise ValueError(f"{path}: pair set format {manifest.get('format')!r}, expected {PAIRSET_FORMAT}")
        if manifest["recipes"] != fps:
            raise RecipeError(f"{out} holds pairs made with other recipes (tiny {manifest['recipes']['tiny'][:12]}, "
                              f"llm {manifest['recipes']['llm'][:12]}); this zoo has tiny {fps['tiny'][:12]}, "
                              f"llm {fps['llm'][:12]}: use another --out folder")
        if {**LEGACY_SETTINGS, **manifest["settings"]} != settings:
            diff = sorted(k for k in set(settings) | set(manifest["settings"])
                          if settings.get(k) != manifest["settings"].get(k))
            raise ValueError(f"{out} was made with other settings ({', '.join(diff)} differ: "
                             f"{ {k: manifest['settings'].get(k) for k in diff} }); resume with the same "
                             f"settings or use another --out folder")
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    recipes.save(out / RECIPE)
    manifest = {"format": PAIRSET_FORMAT, "kind": "gtapp.pairset", "version": "", "recipes": fps,
                "settings": settings, "zoo": str(zoo_dir), "runs": {},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gtapp_version": __version__}
    manifest["version"] = set_version(manifest)
    atomic_write_json(path, manifest)
    return manifest


def batches(config: ShadowConfig) -> list[list[ShadowRun]]:
    """The plan cut into batches of ``config.runs_per_batch`` consecutive runs: the unit that is
    trained, written and skipped (fixed by the settings, so any split of the work agrees)."""
    runs, k = plan(config), config.runs_per_batch
    return [runs[i:i + k] for i in range(0, len(runs), k)]


class _Models:
    """Each model of the pair loaded once (and its tokenizer), for every batch of a generation."""

    def __init__(self, pair, device: str):
        self.pair, self.device, self._loaded = pair, device, {}
        self.seconds = {"tiny": 0.0, "llm": 0.0}  # time spent fine-tuning each model so far

    def tiny_share(self, batched: bool) -> float:
        """The TinyLM's share of a batch's time, for progress in proportion to work: measured on
        the batches done so far; before any, a guess from the models' sizes (a step's time grows
        more slowly than its parameter count on small models, where per-step overhead weighs:
        the square root matched the ci zoo's measured 0.21), or half when they are not loaded here."""
        done = self.seconds["tiny"] + self.seconds["llm"]
        if done > 0:
            return min(max(self.seconds["tiny"] / done, 0.02), 0.98)
        if not batched:
            return 0.5
        n = {w: sum(p.numel() for p in self.get(w)[0].parameters()) ** 0.5 for w in ("tiny", "llm")}
        return n["tiny"] / (n["tiny"] + n["llm"])

    def get(self, which: str):
        if which not in self._loaded:
            from gtapp.devices import resolve_device
            from gtapp.models import load_model, load_tokenizer

            path = self.pair.path(which)
            self._loaded[which] = (load_model(path, device=resolve_device(self.device)), load_tokenizer(path))
        return self._loaded[which]


def _train_batch(pair, models: _Models, config: ShadowConfig, group: list[ShadowRun], examples: dict,
                 work: Path, progress, finetune_fn) -> tuple[dict, dict]:
    """Both models' fine-tunes of one batch of runs: ({run_id: {which: {step: Factors}}},
    {run_id: {which: record}})."""
    from gtapp.batched_finetune import RunSpec, batched_finetune
    from gtapp.finetune import FinetuneConfig

    snaps = tuple(k for k in config.snapshot_steps if k < config.steps)
    factors: dict = {r.run_id: {} for r in group}
    records: dict = {r.run_id: {} for r in group}
    share = models.tiny_share(config.engine == "batched")
    spans = {"tiny": (0.0, share), "llm": (share, 1.0)}
    for which in ("tiny", "llm"):
        lr = config.lr if which == "tiny" else (config.llm_lr or config.lr)
        recipe = pair.recipe(which)
        t0 = time.monotonic()
        if config.engine == "batched":
            model, tok = models.get(which)
            sub = _sub_progress(progress, *spans[which], "shadow", which)
            results = batched_finetune(model, tok, recipe, [RunSpec(examples[r.run_id], r.seed, lr) for r in group],
                                       steps=config.steps, batch_size=config.batch_size,
                                       max_length=config.max_length, snapshot_steps=snaps, progress=sub)
            for r, res in zip(group, results):
                factors[r.run_id][which] = res.factors
                records[r.run_id][which] = {"loss_first": res.loss_first, "loss_last": res.loss_last,
                                            "data_fingerprint": data_fingerprint(examples[r.run_id]),
                                            "wall_s": round(res.wall_s / len(group), 4), "engine": "batched"}
            models.seconds[which] += time.monotonic() - t0
            continue
        for r in group:
            fcfg = FinetuneConfig(steps=config.steps, lr=lr, batch_size=config.batch_size,
                                  max_length=config.max_length, seed=r.seed, snapshot_steps=snaps,
                                  device=config.device)
            sub = _sub_progress(progress, *spans[which], "shadow", which)
            res = finetune_fn(pair.path(which), recipe, examples[r.run_id], fcfg, work / r.key / which, sub)
            per_step = {k: read_adapter(Path(res.snapshots[k]), recipe) for k in snaps}
            per_step[config.steps] = read_adapter(Path(res.adapter_dir), recipe)
            factors[r.run_id][which] = per_step
            rec = res.record if isinstance(res.record, dict) else {}
            loss = rec.get("loss") or {}
            records[r.run_id][which] = {"loss_first": loss.get("first"), "loss_last": loss.get("last"),
                                        "data_fingerprint": rec.get("data_fingerprint"), "wall_s": rec.get("wall_s"),
                                        "engine": "per_run"}
        models.seconds[which] += time.monotonic() - t0
    return factors, records


def _write_run(out: Path, manifest: dict, config: ShadowConfig, run: ShadowRun, idx: list[int], per_model: dict,
               records: dict, wall_s: float) -> None:
    tensors = {}
    for which, per_step in per_model.items():
        for k, fs in per_step.items():
            for m, (a, b) in fs.items():
                tensors[f"{k}.{which}.{m}.A"] = a.contiguous()
                tensors[f"{k}.{which}.{m}.B"] = b.contiguous()
    shard_rel = f"runs/{run.key}.safetensors"
    part = out / (shard_rel + ".partial")
    save_file(tensors, str(part), metadata={"run_id": run.run_id})
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    os.replace(part, out / shard_rel)
    manifest["runs"][run.run_id] = {
        "task": run.task, "subset": run.subset, "seed": run.seed, "indices": idx,
        "subset_hash": indices_hash(idx), "steps": list(config.pair_steps),
        "pairs": [f"{run.run_id}@{k}" for k in config.pair_steps], "shard": shard_rel, "sha256": digest,
        "finetune": records, "wall_s": round(wall_s, 4),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def make_pairs(zoo_dir: str | Path, config: ShadowConfig, out_dir: str | Path,
                   progress: Optional[ProgressFn] = None, *, finetune_fn: Optional[Callable] = None,
                   only_batches: Optional[Sequence[int]] = None) -> PairSet:
    """Make (or resume) the pair set of ``config`` in ``out_dir``; returns it.

    ``zoo_dir``: a model-pair folder (tiny/, llm/, recipe.json). ``finetune_fn`` (the per-run
    engine only): defaults to :func:`gtapp.finetune.finetune` (tests pass a counting wrapper).
    ``only_batches``: train only these batches (indices into :func:`batches`), as one worker
    of a fanned-out job does. Raises :class:`~gtapp.progress.Cancelled` when ``progress``
    does; every batch finished before that stays in the set.
    """
    from gtapp.finetune import finetune
    from gtapp.models import ModelPair

    if finetune_fn is not None and config.engine != "per_run":
        raise ValueError("finetune_fn applies to the per-run engine only (engine='per_run')")
    finetune_fn = finetune_fn or finetune
    out = Path(out_dir)
    pair = ModelPair.from_dir(zoo_dir)
    manifest = open_or_create(out, pair.recipes, config, str(zoo_dir))
    groups = batches(config)
    wanted = range(len(groups)) if only_batches is None else sorted(set(only_batches))

    def done(run: ShadowRun) -> bool:
        entry = manifest["runs"].get(run.run_id)
        return entry is not None and (out / entry["shard"]).is_file()

    todo = [groups[g] for g in wanted if not all(done(r) for r in groups[g])]
    n_runs = sum(len(g) for g in todo)
    tracker = Tracker(progress, "shadow", max(n_runs, 1))
    tracker.update(0, f"{len(plan(config)) - n_runs} of {len(plan(config))} runs already done")
    tasks: dict = {}
    (out / "runs").mkdir(exist_ok=True)
    work = out / ".work"
    models = _Models(pair, config.device)
    finished = 0
    started = time.monotonic()
    for gi, group in enumerate(todo):
        t0 = time.monotonic()
        examples, indices = {}, {}
        for run in group:
            if run.task not in tasks:
                tasks[run.task] = load_shadow_task(run.task, config)
            indices[run.run_id] = subset_indices(run.task, run.subset, config)
            examples[run.run_id] = [tasks[run.task].train[j] for j in indices[run.run_id]]
        if work.exists():
            shutil.rmtree(work)  # leftovers of an interrupted batch
        work.mkdir(parents=True)
        lo, hi = finished / max(n_runs, 1), (finished + len(group)) / max(n_runs, 1)
        sub = _sub_progress(progress, lo, hi, "shadow", f"batch {gi + 1}/{len(todo)} ({len(group)} runs)", started)
        try:
            factors, records = _train_batch(pair, models, config, group, examples, work, sub, finetune_fn)
            wall = time.monotonic() - t0
            for run in group:
                _write_run(out, manifest, config, run, indices[run.run_id], factors[run.run_id],
                           records[run.run_id], wall / len(group))
            manifest["version"] = set_version(manifest)
            manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            atomic_write_json(out / MANIFEST, manifest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        finished += len(group)
        tracker.update(finished, f"finished batch {gi + 1}/{len(todo)}: {finished} of {n_runs} runs")
    return PairSet.load(out)


def assemble(out_dir: str | Path, parts: Sequence[str | Path]) -> PairSet:
    """Add the runs of other pair-set folders of the same recipes and settings (batches made
    apart, e.g. by fanned-out jobs) to the pair set in ``out_dir`` (which ``open_or_create``
    made); returns it. Each part's shards are checked against its manifest's sha256."""
    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / "runs").mkdir(exist_ok=True)
    for part in map(Path, parts):
        sub = json.loads((part / MANIFEST).read_text())
        if sub["recipes"] != manifest["recipes"] or {**LEGACY_SETTINGS, **sub["settings"]} != \
                {**LEGACY_SETTINGS, **manifest["settings"]}:
            raise ValueError(f"{part}: made with other recipes or settings than {out}; it cannot join it")
        for run_id, entry in sub["runs"].items():
            data = (part / entry["shard"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError(f"{part / entry['shard']}: contents do not match its manifest's sha256")
            tmp = out / (entry["shard"] + ".partial")
            tmp.write_bytes(data)
            os.replace(tmp, out / entry["shard"])
            manifest["runs"][run_id] = entry
    manifest["version"] = set_version(manifest)
    manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(out / MANIFEST, manifest)
    return PairSet.load(out)
