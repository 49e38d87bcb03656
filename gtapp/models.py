"""Loading causal LMs (local folder or hub id) and model pairs. LoRA on a loaded model (the
recipe's seeded init, reading its factors) is ``gtapp.lora.peft_model``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from gtapp.lora.recipe import LoraRecipe, RecipePair


def load_model(path_or_id: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load a causal LM from a local Hugging Face folder or a hub id."""
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=dtype)
    return model.to(device).eval()


def load_tokenizer(path_or_id: str | Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(path_or_id))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class ModelPair:
    """A TinyLM and an LLM of one family sharing a tokenizer, with their recipes."""

    tiny_path: str
    llm_path: str
    recipes: RecipePair

    @classmethod
    def from_dir(cls, root: str | Path) -> "ModelPair":
        """A zoo folder: ``root/tiny``, ``root/llm``, ``root/recipe.json``."""
        root = Path(root)
        return cls(str(root / "tiny"), str(root / "llm"), RecipePair.load(root / "recipe.json"))

    def path(self, which: str) -> str:
        return {"tiny": self.tiny_path, "llm": self.llm_path}[which]

    def recipe(self, which: str) -> LoraRecipe:
        return {"tiny": self.recipes.tiny, "llm": self.recipes.llm}[which]
