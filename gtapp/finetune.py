"""LoRA fine-tuning of a causal LM from a recipe, optionally with DP-SGD (Opacus).

:func:`finetune` trains the recipe's LoRA adapter (seeded initial A, zero B, so every run
starts from the same point and updates are comparable) with AdamW on the LoRA parameters
only, deterministically from ``config.seed``, and writes

    out_dir/adapter_config.json, adapter_model.safetensors   a stock peft adapter folder
    out_dir/finetune.json                                    the record (data, config, ε, losses, versions)
    out_dir/snapshots/step_{k}/                              peft adapters along the trajectory

Everything is written into a staging folder and moved into place at the end, so a
failure or a :class:`~gtapp.progress.Cancelled` raised by the progress callback leaves no
adapter behind.

DP-SGD: Poisson sampling with rate q = batch_size / N (so the expected batch is
batch_size), one example (one sequence) as the privacy unit, per-example gradient
clipping to ``max_grad_norm`` and Gaussian noise of std ``noise_multiplier ×
max_grad_norm`` (Opacus ``PrivacyEngine``), a fixed number of steps (epochs = steps × q).
The noise multiplier comes from the target ε via :func:`gtapp.privacy.noise_multiplier_for`
and the reported ε from :func:`gtapp.privacy.epsilon` for the δ used. The per-example loss
is that example's mean NLL over its own answer tokens, so an example's gradient does not
depend on the other examples in its batch (a batch-wide token mean would couple them and
break the clipping argument).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from gtapp import __version__
from gtapp.data import EncodedDataset, data_fingerprint, trim
from gtapp.devices import resolve_device
from gtapp.evaluate import sequence_nll
from gtapp.lora.peft_format import CONFIG_NAME, WEIGHTS_NAME
from gtapp.progress import ProgressFn, Tracker
from gtapp.lora.recipe import LoraRecipe
from gtapp.tasks.base import Example

RECORD_FORMAT = 1
RECORD_FILE = "finetune.json"


class FinetuneError(RuntimeError):
    """Training ran but produced no usable adapter (e.g. the LoRA weights never moved)."""


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: give exactly one of ``target_epsilon`` or ``noise_multiplier``."""

    target_epsilon: Optional[float] = None
    delta: float = 1e-5
    noise_multiplier: Optional[float] = None
    max_grad_norm: float = 1.0

    def __post_init__(self):
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("DPConfig: give exactly one of target_epsilon or noise_multiplier")
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"DPConfig: target_epsilon must be > 0, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"DPConfig: noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"DPConfig: delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"DPConfig: max_grad_norm must be > 0, got {self.max_grad_norm}")


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0
    dp: Optional[DPConfig] = None
    snapshot_steps: tuple[int, ...] = ()
    weight_decay: float = 0.0
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    log_every: int = 10  # loss curve: the mean of every log_every steps

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        object.__setattr__(self, "snapshot_steps", tuple(sorted(set(int(k) for k in self.snapshot_steps))))
        bad = [k for k in self.snapshot_steps if not 1 <= k <= self.steps]
        if bad:
            raise ValueError(f"snapshot_steps must lie in 1..{self.steps}, got {bad}")
        if isinstance(self.dp, dict):
            object.__setattr__(self, "dp", DPConfig(**self.dp))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["snapshot_steps"] = list(self.snapshot_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        d = dict(d)
        if d.get("dp") is not None:
            d["dp"] = DPConfig(**d["dp"])
        d["snapshot_steps"] = tuple(d.get("snapshot_steps", ()))
        return cls(**d)


@dataclass
class FinetuneResult:
    adapter_dir: Path
    record: dict
    snapshots: dict[int, Path] = field(default_factory=dict)
    model: Optional[torch.nn.Module] = field(default=None, repr=False)  # the trained PeftModel (keep_model=True)

    @property
    def epsilon(self) -> Optional[float]:
        return self.record.get("epsilon")


def versions() -> dict:
    out = {"gtapp": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "opacus"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - optional at record time
            out[name] = None
    return out


def epoch_batches(n: int, batch_size: int, generator: torch.Generator):
    """The example indices of each step (non-DP): a fresh permutation per epoch, cut into
    full batches (the last partial one dropped; with fewer than ``batch_size`` examples, all
    of them each step). Endless. The batched engine (gtapp.batched_finetune) draws the same."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for s in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[s:s + batch_size]


def _resolve_device(device: str) -> torch.device:
    return torch.device(resolve_device(device))


def _lora_parameters(peft_model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = []
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            if "lora_" not in name:
                raise FinetuneError(f"unexpected trainable parameter '{name}' (only LoRA weights may train)")
            params.append(p)
    if not params:
        raise FinetuneError("the model has no trainable LoRA parameters")
    return params


def _check_moved(init: dict, final: dict) -> dict:
    """Raise unless training changed the adapter; return summary numbers of the change."""
    if set(init) != set(final):
        raise FinetuneError(f"LoRA modules changed during training: {sorted(set(init) ^ set(final))[:5]}")
    max_b, max_da, bad = 0.0, 0.0, []
    for m in init:
        a0, b0 = init[m]
        a1, b1 = final[m]
        if not (torch.isfinite(a1).all() and torch.isfinite(b1).all()):
            bad.append(m)
            continue
        max_b = max(max_b, float(b1.abs().max()))
        max_da = max(max_da, float((a1 - a0).abs().max()), float((b1 - b0).abs().max()))
    if bad:
        raise FinetuneError(f"training diverged: non-finite LoRA weights in {bad[:5]} "
                            f"(lower the learning rate or the noise)")
    if max_b == 0.0 or max_da == 0.0:
        raise FinetuneError(
            "the LoRA adapter did not change during training (B is still all zero / factors equal "
            "their initial values): gradients never reached the LoRA weights. With Opacus this happens "
            "when the model is moved to a device after wrapping, or when the optimizer holds other "
            "parameter objects than the wrapped model")
    return {"max_abs_B": max_b, "max_abs_change": max_da}


def _save_adapter(peft_model, folder: Path) -> None:
    """Save a stock peft adapter folder (standard keys, safetensors)."""
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise FinetuneError(f"peft did not write {WEIGHTS_NAME} and {CONFIG_NAME} in {folder}")
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        keys = list(f.keys())
    wrapped = [k for k in keys if "_module." in k]
    if wrapped or not keys:
        raise FinetuneError(f"adapter keys are not standard peft keys: {wrapped[:3] or 'none saved'}")


def _stage_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def _publish(stage: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the staged result into ``out_dir``; finetune.json goes last (it marks completion)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = [p for p in (WEIGHTS_NAME, CONFIG_NAME, RECORD_FILE, "snapshots") if (out_dir / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a fine-tune result ({', '.join(existing)}); "
                              f"choose another folder or pass overwrite=True")
    if (out_dir / RECORD_FILE).exists():
        (out_dir / RECORD_FILE).unlink()  # the old record must not describe the new weights
    if (out_dir / "snapshots").exists():
        shutil.rmtree(out_dir / "snapshots")
    names = sorted(os.listdir(stage), key=lambda n: n == RECORD_FILE)
    for name in names:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(stage / name, target)
    stage.rmdir()


class _Curve:
    """Loss curve: the mean of every ``k`` steps, plus first and last."""

    def __init__(self, k: int):
        self.k, self.buf, self.points, self.first, self.last = k, [], [], None, None

    def add(self, step: int, loss: Optional[float]) -> None:
        if loss is None:
            return
        if self.first is None:
            self.first = loss
        self.last = loss
        self.buf.append(loss)
        if step % self.k == 0:
            self.points.append([step, sum(self.buf) / len(self.buf)])
            self.buf = []

    def to_dict(self, total: int) -> dict:
        if self.buf:
            self.points.append([total, sum(self.buf) / len(self.buf)])
            self.buf = []
        return {"first": self.first, "last": self.last, "every": self.k, "curve": self.points}


def finetune(model_path: str, recipe: LoraRecipe, examples: Sequence[Example], config: FinetuneConfig,
             out_dir: Path, progress: Optional[ProgressFn] = None, *, overwrite: bool = False,
             keep_model: bool = False) -> FinetuneResult:
    """Fine-tune the recipe's LoRA on ``examples``; save the adapter, snapshots and record.

    Raises :class:`~gtapp.progress.Cancelled` if the progress callback does (nothing is
    left in ``out_dir``), :class:`FinetuneError` if the adapter did not move or diverged,
    ``ValueError`` for bad inputs, ``FileExistsError`` if ``out_dir`` already holds a result
    (unless ``overwrite``). ``keep_model=True`` returns the trained PeftModel in the result.
    """
    from gtapp.lora.peft_model import attach_lora, lora_factors
    from gtapp.models import load_model, load_tokenizer

    t0 = time.monotonic()
    examples = list(examples)
    if not examples:
        raise ValueError("no training examples")
    n = len(examples)
    dp = config.dp
    if dp is not None and config.batch_size > n:
        raise ValueError(f"DP-SGD needs batch_size <= number of examples ({config.batch_size} > {n})")
    out_dir = Path(out_dir)
    if not overwrite and any((out_dir / p).exists() for p in (WEIGHTS_NAME, RECORD_FILE)):
        raise FileExistsError(f"{out_dir} already holds a fine-tune result; choose another folder "
                              f"or pass overwrite=True")
    tracker = Tracker(progress, "finetune", config.steps)
    tracker.update(0, "loading model")

    device = _resolve_device(config.device)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(model_path)
    # The model goes to its device BEFORE LoRA and Opacus wrap it: moving afterwards can
    # leave the optimizer and Opacus's hooks on different parameter objects.
    model = load_model(model_path, device=device)
    peft_model = attach_lora(model, recipe)
    peft_model.to(device)
    peft_model.train()
    init = lora_factors(peft_model)
    params = _lora_parameters(peft_model)
    dataset = EncodedDataset(tokenizer, examples, max_length=config.max_length)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    data_gen = torch.Generator().manual_seed(config.seed)

    privacy: dict = {}
    engine = None
    train_model = peft_model
    if dp is not None:
        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader

        from gtapp import privacy as P

        q = config.batch_size / n
        z = dp.noise_multiplier if dp.noise_multiplier is not None else P.noise_multiplier_for(
            dp.target_epsilon, dp.delta, q, config.steps)
        if dp.delta >= 1.0 / n:
            warnings.warn(f"DP delta {dp.delta} is not below 1/N = {1.0 / n:.3g}: the guarantee is weak "
                          f"(a mechanism that publishes one random example meets it)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Secure RNG turned off": seeded runs are the point here
            engine = PrivacyEngine(accountant="rdp")
        # gtapp builds the Poisson loader itself so that q is exactly batch_size / N
        # (Opacus's own conversion uses 1 / ceil(N / batch_size)), then points the
        # optimizer's normaliser and the accountant at that q.
        loader = DPDataLoader(dataset, sample_rate=q, generator=data_gen)
        noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        train_model, optimizer, loader = engine.make_private(
            module=peft_model, optimizer=optimizer, data_loader=loader, noise_multiplier=z,
            max_grad_norm=dp.max_grad_norm, poisson_sampling=False, noise_generator=noise_gen,
            loss_reduction="mean", grad_sample_mode="hooks")
        train_model.forbid_grad_accumulation()
        optimizer.expected_batch_size = config.batch_size  # = q * N
        optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=q))
        privacy = {"noise_multiplier": float(z), "sample_rate": q, "delta": dp.delta}

        def batches():
            while True:
                yield from loader
    else:
        def batches():
            for idx in epoch_batches(n, config.batch_size, data_gen):
                yield dataset[idx]

    stage = _stage_dir(out_dir)
    ok = False
    snapshots: dict[int, Path] = {}
    curve = _Curve(config.log_every)
    n_empty = 0
    try:
        with warnings.catch_warnings():
            # Opacus's hooks on LoRA layers fire with frozen (no-grad) inputs: harmless, noisy.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            it = batches()
            for step in range(1, config.steps + 1):
                ids, mask, labels = next(it)
                if ids.shape[0] == 0:
                    # Empty Poisson batch: the step still happens (noise only), as the accountant assumes.
                    n_empty += 1
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss_value = None
                else:
                    ids, mask, labels = trim(ids, mask, labels)
                    s, cnt = sequence_nll(train_model, ids.to(device), mask.to(device), labels.to(device))
                    loss = (s / cnt.clamp(min=1)).mean()
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise FinetuneError(f"loss became {loss_value} at step {step} (lower the learning rate)")
                curve.add(step, loss_value)
                if step in config.snapshot_steps:
                    folder = stage / "snapshots" / f"step_{step}"
                    _save_adapter(peft_model, folder)
                    snapshots[step] = out_dir / "snapshots" / f"step_{step}"
                tracker.update(step, f"loss {loss_value:.4f}" if loss_value is not None else "empty batch",
                               **({"train loss": loss_value} if loss_value is not None else {}))

        if engine is not None:
            train_model = train_model.to_standard_module()  # strip Opacus's wrapper and hooks
            history = [tuple(h) for h in engine.accountant.history]
            expected = [(privacy["noise_multiplier"], privacy["sample_rate"], config.steps)]
            if history != expected:
                raise FinetuneError(f"Opacus accounted {history}, expected {expected}: the privacy "
                                    f"report would not match the training")
        peft_model.eval()
        final = lora_factors(peft_model)
        change = _check_moved(init, final)
        _save_adapter(peft_model, stage)

        record = {
            "format": RECORD_FORMAT,
            "kind": "finetune",
            "model_path": str(model_path),
            "recipe": {"base_model": recipe.base_model, "base_fingerprint": recipe.base_fingerprint,
                       "init_fingerprint": recipe.init_fingerprint, "init_seed": recipe.init_seed,
                       "rank": recipe.rank, "alpha": recipe.alpha, "target_modules": list(recipe.target_modules)},
            "examples": n,
            "data_fingerprint": data_fingerprint(examples),
            "data_multiset_fingerprint": data_fingerprint(examples, ordered=False),
            "answer_tokens": dataset.n_answer_tokens,
            "truncated_examples": dataset.n_truncated,
            "sequence_length": dataset.length,
            "steps": config.steps,
            "seed": config.seed,
            "config": config.to_dict(),
            "dp": dp is not None,
            "epsilon": None, "delta": None, "noise_multiplier": None, "sample_rate": None,
            "loss": curve.to_dict(config.steps),
            "adapter_change": change,
            "snapshots": {str(k): f"snapshots/step_{k}" for k in sorted(snapshots)},
            "device": str(device),
            "versions": versions(),
        }
        if dp is not None:
            from gtapp import privacy as P

            eps = P.epsilon(privacy["noise_multiplier"], privacy["sample_rate"], config.steps, dp.delta)
            record.update({
                "epsilon": eps, "delta": dp.delta, "noise_multiplier": privacy["noise_multiplier"],
                "sample_rate": privacy["sample_rate"],
                "privacy": {"mechanism": "DP-SGD (Opacus PrivacyEngine, per-example clipping + Gaussian noise)",
                            "accountant": "rdp", "privacy_unit": "one example (one sequence)",
                            "neighbouring": "add/remove one example", "sampling": "poisson",
                            "target_epsilon": dp.target_epsilon, "max_grad_norm": dp.max_grad_norm,
                            "epochs": config.steps * privacy["sample_rate"], "empty_batches": n_empty},
            })
        record["wall_s"] = round(time.monotonic() - t0, 3)
        (stage / RECORD_FILE).write_text(json.dumps(record, indent=2))
        _publish(stage, out_dir, overwrite)
        ok = True
    finally:
        if not ok:
            shutil.rmtree(stage, ignore_errors=True)
            if engine is not None and hasattr(train_model, "to_standard_module"):
                try:
                    train_model.to_standard_module()
                except Exception:  # pragma: no cover - best-effort cleanup
                    pass
    return FinetuneResult(adapter_dir=out_dir, record=record, snapshots=snapshots,
                          model=peft_model if keep_model else None)


def load_record(adapter_dir: str | Path) -> dict:
    """The finetune.json record saved beside an adapter."""
    path = Path(adapter_dir) / RECORD_FILE
    return json.loads(path.read_text())
