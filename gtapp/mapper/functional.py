"""The optional functional loss: the LLM's answer NLL with the *predicted* adapter.

For a shadow pair, the LLM is run (frozen) with LoRA factors replaced by the GT's
prediction through ``torch.func.functional_call``, on a few examples of the pair's own
shadow subset (task, subset indices from the pair set's manifest), and the mean answer-token
NLL is added to the factored loss. Gradients flow into the GT through the factors only.
It costs an LLM forward/backward per pair in the batch, so it is off by default
(``functional_weight=0``) and meant for small LLMs or a GPU.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from gtapp.lora.recipe import LoraRecipe


class FunctionalLoss:
    def __init__(self, llm_path: str, recipe: LoraRecipe, pairs: Sequence, n_examples: int = 8,
                 max_length: int = 64, device: str | torch.device = "cpu"):
        from gtapp.data import IGNORE_INDEX, EncodedDataset
        from gtapp.mapper.space import UpdateSpace
        from gtapp.lora.peft_format import PEFT_PREFIX
        from gtapp.lora.peft_model import attach_lora
        from gtapp.models import load_model, load_tokenizer
        from gtapp.tasks.universe import make_task

        if not llm_path:
            raise ValueError("functional loss needs functional_model: the LLM's path (e.g. ZOO/llm)")
        self.ignore = IGNORE_INDEX
        self.space = UpdateSpace(recipe)
        tok = load_tokenizer(llm_path)
        model = attach_lora(load_model(llm_path, device=device), recipe)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.eval()
        names = {}
        for name, _ in model.named_parameters():
            if ".lora_A.default.weight" in name or ".lora_B.default.weight" in name:
                module = name.removeprefix(PEFT_PREFIX).rsplit(".lora_", 1)[0]
                names.setdefault(module, {})["A" if ".lora_A." in name else "B"] = name
        self.names = names
        self.batches = {}
        tasks = {}
        for p in pairs:
            if p.run_id in self.batches:
                continue
            meta = p.meta
            if not {"task", "indices", "task_seed", "n_train"} <= set(meta):
                raise ValueError(f"pair {p.pair_id} lacks its shadow data (task, indices): the functional "
                                 f"loss needs pairs from a pair set made by gtapp.shadow")
            key = (meta["task"], meta["task_seed"], meta["n_train"])
            if key not in tasks:
                tasks[key] = make_task(meta["task"], seed=meta["task_seed"], n_train=meta["n_train"], n_test=1)
            examples = [tasks[key].train[i] for i in meta["indices"][:n_examples]]
            ds = EncodedDataset(tok, examples, max_length=max_length)
            self.batches[p.run_id] = tuple(t.to(device) for t in ds.batch(list(range(len(ds)))))

    def __call__(self, pred: dict, a0: dict, run_ids: Sequence[str]) -> torch.Tensor:
        """Mean answer NLL over the batch; ``pred`` = raw predicted {type: (dA, B)} [N, L, ...]."""
        total = 0.0
        for i, run_id in enumerate(run_ids):
            params = {}
            for t in self.space.types:
                da, b = pred[t]
                for j, m in enumerate(self.space.by_type[t]):
                    params[self.names[m]["A"]] = da[i, j] + a0[t][j]
                    params[self.names[m]["B"]] = b[i, j]
            ids, mask, labels = self.batches[run_id]
            logits = torch.func.functional_call(self.model, params, args=(),
                                                kwargs={"input_ids": ids, "attention_mask": mask}).logits
            total = total + F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                            labels[:, 1:].reshape(-1), ignore_index=self.ignore)
        return total / max(len(run_ids), 1)
