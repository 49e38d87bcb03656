"""What every baseline shares: the compute budget, the result record, cost measurement,
and a small cached decoding loop (greedy or sampled) over any ``logits(ids, mask, pos, past)``.

Cost measurement (:class:`CostMeter`):

* wall time — ``time.monotonic`` around the whole method (model loading included);
* peak memory — on CUDA, ``torch.cuda.max_memory_allocated`` above the level at the start;
  on CPU, the process's resident set size (RSS) above the level at the start, its peak
  taken from a background sampler (every few ms) and from the kernel's high-water mark
  (``VmHWM``) whenever that rose during the run. Freed C-heap memory is returned to the OS
  first (glibc ``malloc_trim``), so the run's allocations show as growth rather than
  re-use of earlier frees. ``tracemalloc`` is not used: it only sees Python's allocator,
  not the tensors. The absolute peak RSS is kept in ``extra["peak_abs_mb"]``;
* tokens — every non-padding token position fed through a model forward pass (training
  and teacher/generation passes alike), counted by the method itself.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import torch

from gtapp.choices import BASELINE_METHODS

METHODS = BASELINE_METHODS
# Which base model a method's result is evaluated with.
EVAL_MODEL = {"oracle": "llm", "public_ft": "llm", "tiny_ft": "tiny", "kd_logit": "llm",
              "weak_to_strong": "llm", "proxy_tuning": "llm+tiny", "datafree_kd": "llm", "cross_lora": "llm"}
# Which data a method reads (for reports; "private" = the organisation's examples).
USES = {"oracle": "private prompts + gold answers", "public_ft": "provider public data only",
        "tiny_ft": "private data, via the TinyLM fine-tune only",
        "kd_logit": "private prompts + gold answers as KD inputs; targets = TinyLM logits",
        "weak_to_strong": "private prompts; labels = TinyLM greedy answers",
        "proxy_tuning": "no training; TinyLM logit offset at decode time",
        "datafree_kd": "no private data; text sampled from the TinyLM",
        "cross_lora": "no data, no training: the TinyLM update projected through both base models' weight subspaces"}


@dataclass(frozen=True)
class Budget:
    """The optimisation budget every trained baseline gets (the oracle's).

    ``steps`` optimizer steps of ``batch_size`` sequences at learning rate ``lr``;
    sequences are cut to ``max_length`` tokens.
    """

    steps: int
    batch_size: int
    lr: float
    max_length: int = 256

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"budget needs steps >= 1 and batch_size >= 1, got {self}")
        if not self.lr > 0:
            raise ValueError(f"budget lr must be > 0, got {self.lr}")

    @property
    def sequences(self) -> int:
        return self.steps * self.batch_size

    def to_dict(self) -> dict:
        return asdict(self) | {"sequences": self.sequences}


@dataclass
class BaselineResult:
    """One baseline run.

    ``adapter_dir`` is a stock peft adapter folder (``PeftModel.from_pretrained``) for the
    model named by ``model`` (``"llm"`` or ``"tiny"``); ``None`` for decode-time methods
    (``model == "llm+tiny"``, proxy-tuning). ``tokens`` counts the token positions that
    went through any forward pass; ``extra`` holds method details (budget, data used,
    losses, evaluation for decode-time methods).
    """

    method: str
    adapter_dir: str | None
    wall_s: float
    peak_mem_mb: float
    tokens: int
    model: str = "llm"
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaselineResult:
        return cls(**json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------
# Cost measurement

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the lifetime peak (best effort)
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _release_free_heap() -> None:
    """Give freed C-heap memory back to the OS (glibc ``malloc_trim``), so that memory a
    method allocates shows up as RSS growth instead of silently re-using earlier frees."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _hwm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class CostMeter:
    """Context manager measuring wall time, peak memory and tokens of one method run."""

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 0.005):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.interval_s = interval_s
        self.tokens = 0
        self.token_parts: dict[str, int] = {}
        self.wall_s = 0.0
        self.peak_mem_mb = 0.0
        self.peak_abs_mb = 0.0
        self._stop = threading.Event()
        self._peak = 0

    def add_tokens(self, n: int, part: str = "forward") -> None:
        n = int(n)
        self.tokens += n
        self.token_parts[part] = self.token_parts.get(part, 0) + n

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = _rss_bytes()
            self._peak = max(self._peak, rss)

    def __enter__(self) -> Self:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self._start = _rss_bytes()
            self._hwm0 = _hwm_bytes()
            self._peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.wall_s = time.monotonic() - self._t0
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
            hwm = _hwm_bytes()
            if hwm > self._hwm0:  # the process reached a new all-time peak during the run
                peak = max(peak, hwm)
        self.peak_abs_mb = peak / 2**20
        self.peak_mem_mb = max(peak - self._start, 0) / 2**20

    def fields(self) -> dict:
        """wall_s, peak_mem_mb, tokens, and the memory/token details for ``extra``."""
        return {"wall_s": round(self.wall_s, 4), "peak_mem_mb": round(self.peak_mem_mb, 3), "tokens": self.tokens}

    def details(self) -> dict:
        return {"mem_source": "cuda.max_memory_allocated" if self.cuda else "rss",
                "peak_abs_mb": round(self.peak_abs_mb, 3), "tokens_by_part": dict(self.token_parts)}


# ---------------------------------------------------------------------------------------
# Decoding

# step(input_ids, attention_mask, position_ids, past) -> (last-position logits [B, V], new past)
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, object]]


def _cache_arg(model: torch.nn.Module) -> str:
    """The KV-cache keyword of a transformers causal LM: ``cache`` (transformers >= 5.x) or
    ``past_key_values`` (older)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def cached_forward(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache):
    """(logits [B, L, V], new cache) of one forward pass continuing ``cache``."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{_cache_arg(model): cache})
    new = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.logits, new


def model_step(model: torch.nn.Module) -> StepFn:
    """A :data:`StepFn` for one transformers causal LM, with its own KV cache (or the model's
    own ``decode_step``: a combination of models such as proxy-tuning's)."""
    if hasattr(model, "decode_step"):
        return model.decode_step

    def step(ids, mask, pos, past):
        logits, cache = cached_forward(model, ids, mask, pos, past)
        return logits[:, -1, :].float(), cache

    return step


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def decode(step: StepFn, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           eos_token_id: int | None, pad_token_id: int, temperature: float = 0.0,
           generator: torch.Generator | None = None, min_new_tokens: int = 0) -> torch.Tensor:
    """Left-padded batch decoding with a KV cache: greedy when ``temperature == 0``, else
    sampling from softmax(logits / temperature) with ``generator``. EOS is forbidden for the
    first ``min_new_tokens`` steps.

    Returns the prompt followed by the new tokens (rows that hit EOS are padded with
    ``pad_token_id`` afterwards), like ``model.generate``. Position ids follow the
    attention mask (the first real token of every row is position 0), as transformers'
    generate does for left padding.
    """
    ids, mask = input_ids, attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    past = None
    cur_ids, cur_pos = ids, pos
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new = []
    for i in range(max_new_tokens):
        logits, past = step(cur_ids, mask, cur_pos, past)
        if i < min_new_tokens and eos_token_id is not None:
            logits = logits.clone()
            logits[:, eos_token_id] = float("-inf")
        if temperature and temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(ids.device)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
        new.append(nxt)
        if eos_token_id is not None:
            done = done | (nxt == eos_token_id)
        if bool(done.all()):
            break
        cur_ids = nxt[:, None]
        cur_pos = cur_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    if not new:
        return ids
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)


def cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    return row[:row.index(eos)] if eos is not None and eos in row else row


# ---------------------------------------------------------------------------------------
# Batching (the same schedule as gtapp.finetune without DP)

def batch_indices(n: int, batch_size: int, seed: int):
    """Endless row-index batches: a fresh permutation per epoch (generator seeded by ``seed``),
    cut into full batches (the remainder of an epoch is dropped; if ``n < batch_size`` every
    batch is the whole permutation) — the order :func:`gtapp.finetune.finetune` trains in."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[s:s + batch_size].tolist()


def sft_tokens(lengths: list[int], steps: int, batch_size: int, seed: int) -> int:
    """Non-padding tokens a non-DP fine-tune of ``steps`` steps feeds through the model, given
    each example's encoded length (``gtapp.finetune`` does not record it; this replays its
    batch order)."""
    it = batch_indices(len(lengths), batch_size, seed)
    return sum(sum(lengths[i] for i in next(it)) for _ in range(steps))
