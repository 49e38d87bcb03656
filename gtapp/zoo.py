"""The model zoo: a TinyLM/LLM pair of one family, pretrained from scratch on generated text.

No weights can be downloaded where gtapp runs its tests (and on air-gapped sites), so gtapp
builds its own pair: one BPE tokenizer (``tokenizers``) shared by both models, two Llama
models of different width and depth (the LLM uses grouped-query attention, so module
shapes differ as they do between real model sizes), pretrained on the task universe's
text, saved as ordinary Hugging Face folders plus ``recipe.json``:

    OUT/tiny/   config.json, model.safetensors, tokenizer files
    OUT/llm/    the same
    OUT/recipe.json   the RecipePair (seeded LoRA init, fingerprints)
    OUT/zoo.json      preset, seed, sizes, pretraining losses, wall time
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from gtapp import __version__
from gtapp.progress import ProgressFn, Tracker
from gtapp.lora.recipe import RecipePair, make_recipe

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


@dataclass(frozen=True)
class ModelSize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


@dataclass(frozen=True)
class ZooPreset:
    """Sizes and pretraining budget of one zoo preset."""

    name: str
    vocab_size: int
    tiny: ModelSize
    llm: ModelSize
    corpus_docs: int  # generated documents for tokenizer + pretraining
    seq_len: int
    batch_size: int
    tiny_steps: int
    llm_steps: int
    lr: float
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_rank: int = 4
    lora_alpha: float = 8.0
    notes: str = ""


ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PRESETS: dict[str, ZooPreset] = {
    # Seconds; for unit tests of plumbing (weights barely trained).
    "micro": ZooPreset("micro", 384, ModelSize(16, 2, 2, 2, 32), ModelSize(32, 3, 4, 2, 64),
                       corpus_docs=600, seq_len=64, batch_size=8, tiny_steps=10, llm_steps=10, lr=3e-3,
                       lora_targets=("q_proj", "v_proj"), lora_rank=2, lora_alpha=4.0),
    # Under 60 s on 2 CPU cores; for integration tests and `bench --preset ci`.
    "ci": ZooPreset("ci", 768, ModelSize(32, 2, 2, 2, 64), ModelSize(96, 4, 4, 2, 256),
                    corpus_docs=4000, seq_len=96, batch_size=16, tiny_steps=150, llm_steps=250, lr=3e-3,
                    lora_targets=ALL_LINEAR, lora_rank=4, lora_alpha=8.0),
    # Minutes on 2 CPU cores; the demo and the benchmark's reference setting.
    "demo": ZooPreset("demo", 1024, ModelSize(48, 2, 4, 2, 128), ModelSize(192, 6, 6, 2, 384),
                      corpus_docs=12000, seq_len=128, batch_size=16, tiny_steps=400, llm_steps=700, lr=2e-3,
                      lora_targets=ALL_LINEAR, lora_rank=4, lora_alpha=8.0),
    # For a GPU.
    "gpu": ZooPreset("gpu", 4096, ModelSize(128, 4, 4, 2, 384), ModelSize(512, 12, 8, 4, 1536),
                     corpus_docs=200000, seq_len=256, batch_size=64, tiny_steps=4000, llm_steps=8000, lr=1e-3,
                     lora_targets=ALL_LINEAR, lora_rank=8, lora_alpha=16.0),
}


def corpus(n_docs: int, seed: int) -> list[str]:
    """Pretraining text: documents drawn from the task universe (all families and variants)."""
    from gtapp.tasks.universe import pretraining_corpus

    return pretraining_corpus(n_docs, seed)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=1024)


def llama_config(size: ModelSize, vocab_size: int, tokenizer: PreTrainedTokenizerFast,
                 max_positions: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, architectures=["LlamaForCausalLM"],
    )


def pack(texts: list[str], tokenizer: PreTrainedTokenizerFast, seq_len: int) -> torch.Tensor:
    """Concatenate documents (each ended by EOS) and cut into rows of ``seq_len`` token ids."""
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def pretrain(model: LlamaForCausalLM, data: torch.Tensor, steps: int, batch_size: int, lr: float,
             seed: int, tracker: Optional[Tracker] = None) -> list[float]:
    """Plain next-token pretraining with AdamW and a cosine schedule; returns the loss curve."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    model.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        batch = data[idx]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if tracker is not None:
            tracker.update(step + 1, f"loss {loss.item():.3f}")
    model.eval()
    return losses


@dataclass
class ZooInfo:
    preset: str
    seed: int
    params: dict[str, int] = field(default_factory=dict)
    pretrain_loss: dict[str, float] = field(default_factory=dict)  # mean of the last 10 steps
    wall_s: float = 0.0
    gtapp_version: str = __version__
    torch_version: str = torch.__version__


def _n_params(config) -> int:
    """Parameters of a model of ``config``, counted without allocating it (meta device)."""
    with torch.device("meta"):
        return sum(t.numel() for t in LlamaForCausalLM(config).parameters())


def build(preset: str | ZooPreset = "ci", out: str | Path = "zoo", seed: int = 0,
          progress: Optional[ProgressFn] = None) -> Path:
    """Build the TinyLM/LLM pair of ``preset`` into ``out``; deterministic from ``seed``."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown zoo preset '{preset}'; choose one of {sorted(PRESETS)}")
    out = Path(out)
    t0 = time.monotonic()
    random.seed(seed)
    texts = corpus(p.corpus_docs, seed)
    tokenizer = train_tokenizer(texts, p.vocab_size)
    data = pack(texts, tokenizer, p.seq_len)
    info = ZooInfo(preset=p.name, seed=seed)
    configs = {which: llama_config(size, len(tokenizer), tokenizer, max_positions=max(512, p.seq_len))
               for which, size in (("tiny", p.tiny), ("llm", p.llm))}
    # progress in proportion to work: a step of the LLM costs its parameter count, not a tiny step's
    work = {"tiny": p.tiny_steps * _n_params(configs["tiny"]), "llm": p.llm_steps * _n_params(configs["llm"])}
    total = sum(work.values())
    recipes = {}
    done = 0
    for which, steps in (("tiny", p.tiny_steps), ("llm", p.llm_steps)):
        torch.manual_seed(seed * 1000 + (0 if which == "tiny" else 1))
        model = LlamaForCausalLM(configs[which])
        tracker = Tracker(progress, f"pretrain {which}", steps,
                          start=done / max(total, 1), end=(done + work[which]) / max(total, 1))
        losses = pretrain(model, data, steps, p.batch_size, p.lr, seed, tracker)
        done += work[which]
        folder = out / which
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        info.params[which] = sum(t.numel() for t in model.parameters())
        info.pretrain_loss[which] = float(sum(losses[-10:]) / max(len(losses[-10:]), 1)) if losses else float("nan")
        recipes[which] = make_recipe(model, base_model=which, target_modules=p.lora_targets,
                                     rank=p.lora_rank, alpha=p.lora_alpha, init_seed=seed)
    RecipePair(recipes["tiny"], recipes["llm"]).save(out / "recipe.json")
    info.wall_s = time.monotonic() - t0
    (out / "zoo.json").write_text(json.dumps({**asdict(info), "preset_config": asdict(p)}, indent=2))
    return out
