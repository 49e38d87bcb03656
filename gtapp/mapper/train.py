"""GTMapper: training the Gradient Transformer on shadow pairs.

Loss, per pair, in *factored* form (never a dense dW):

    L_prod = 1/M * sum_m ||B^_m A^_m - B*_m A*_m||_F^2 / E||B*_m A*_m||^2

over the M LLM LoRA modules, each term from r x r Gram matrices (space.product_sqdist),
each module weighted by its mean squared update norm on the training pairs, so every module
counts alike and L_prod = 1 means "as far as predicting zero". (The LoRA scale cancels.)
Optionally ``mse_weight`` x the MSE of the normalised factors (dA, B) -- it pins the gauge
inside the shared seeded basis -- and ``functional_weight`` x the LLM's answer NLL on the
pair's shadow data with the predicted adapter (gtapp.mapper.functional).

Targets and inputs are normalised per module (space.Normaliser: minus the shadow mean, over
a per-module scale) and the output heads start at zero, so an untrained GT predicts exactly
the mean of the shadow LLM updates -- the MeanMapper -- and training learns the residual.

Validation on held-out shadow runs every ``eval_every`` steps; the best checkpoint (lowest
validation L_prod) is kept, training stops after ``patience`` evaluations without
improvement. With a single shadow run there is no validation and the last state is kept.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Optional

import torch

from gtapp.mapper.base import Mapper
from gtapp.mapper.space import Tensors, index, product_sqdist
from gtapp.mapper.transformer import GradientTransformer, GTConfig
from gtapp.progress import ProgressFn, Tracker

MODEL_KEYS = tuple(GTConfig().to_dict())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to(tensors: Tensors, device) -> Tensors:
    return {t: (a.to(device), b.to(device)) for t, (a, b) in tensors.items()}


class GTMapper(Mapper):
    kind = "gt"

    @classmethod
    def default_config(cls) -> dict:
        return {**super().default_config(), **GTConfig().to_dict(),
                "steps": 2000, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.01, "warmup": 50,
                "eval_every": 25, "patience": 20, "grad_clip": 1.0, "mse_weight": 0.1,
                "functional_weight": 0.0, "functional_model": None, "functional_examples": 8,
                "functional_max_length": 64, "seed": 0, "max_time_s": None, "device": "cpu"}

    def __init__(self, recipes, config=None):
        super().__init__(recipes, config)
        self.gt_config = GTConfig(**{k: self.config[k] for k in MODEL_KEYS})
        torch.manual_seed(int(self.config["seed"]))
        self.model = GradientTransformer(self.tiny.describe(), self.llm.describe(), self.gt_config)
        self.device = _device(self.config["device"])
        self.history: list[dict] = []

    # ----------------------------------------------------------------- forward
    def _depths(self, device):
        return ({t: self.tiny.depth(t).to(device) for t in self.tiny.types},
                {t: self.llm.depth(t).to(device) for t in self.llm.types})

    def _forward_normalised(self, xn: Tensors) -> Tensors:
        dt, dl = self._depths(next(self.model.parameters()).device)
        return self.model(xn, dt, dl)

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        self.model.eval()
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            out = self._forward_normalised(_to(self.norm_in.normalise(tiny), dev))
        out = {t: (a.float().cpu(), b.float().cpu()) for t, (a, b) in out.items()}
        return self.norm_out.denormalise(out)

    # ----------------------------------------------------------------- loss
    def _loss(self, pred_n: Tensors, y: Tensors, yn: Tensors, a0: dict, w: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, per-pair L_prod [N]) for normalised predictions against raw targets."""
        pred = self._denorm_dev(pred_n)
        prod, n_mod = 0.0, 0
        mse_num, mse_den = 0.0, 0
        for t in self.llm.types:
            pa, pb = pred[t]
            ya, yb = y[t]
            d = product_sqdist(pa + a0[t], pb, ya + a0[t], yb)  # [N, L]
            prod = prod + (d * w[t]).sum(1)
            n_mod += d.shape[1]
            for p_, q_ in zip(pred_n[t], yn[t]):
                mse_num = mse_num + (p_ - q_).pow(2).sum()
                mse_den += q_.numel()
        prod = prod / n_mod
        total = prod.mean()
        if self.config["mse_weight"]:
            total = total + self.config["mse_weight"] * mse_num / mse_den
        return total, prod.detach()

    def _denorm_dev(self, zn: Tensors) -> Tensors:
        out = {}
        for t, (za, zb) in zn.items():
            ma, mb = self._norm_dev[t]["mean"]
            out[t] = (za * self._norm_dev[t]["s_a"] + ma, zb * self._norm_dev[t]["s_b"] + mb)
        return out

    # ----------------------------------------------------------------- fit
    def _fit(self, train_x, train_y, val_x, val_y, progress: Optional[ProgressFn], pairs=()) -> dict:
        cfg = self.config
        dev = self.device
        torch.manual_seed(int(cfg["seed"]))
        gen = torch.Generator().manual_seed(int(cfg["seed"]))
        self.model.to(dev)
        self._norm_dev = {t: {"mean": tuple(m.to(dev) for m in self.norm_out.mean[t]),
                              "s_a": self.norm_out.s_a[t].to(dev)[:, None, None],
                              "s_b": self.norm_out.s_b[t].to(dev)[:, None, None]} for t in self.llm.types}
        a0 = {t: self.llm.a0(t).to(dev) for t in self.llm.types}
        w = {t: (1.0 / self.norm_out.prod2[t]).to(dev) for t in self.llm.types}
        xn = _to(self.norm_in.normalise(train_x), dev)
        y = _to(train_y, dev)
        yn = _to(self.norm_out.normalise(train_y), dev)
        if val_x is not None:
            vxn = _to(self.norm_in.normalise(val_x), dev)
            vy, vyn = _to(val_y, dev), _to(self.norm_out.normalise(val_y), dev)
        functional = None
        if cfg["functional_weight"]:
            from gtapp.mapper.functional import FunctionalLoss

            functional = FunctionalLoss(cfg["functional_model"], self.recipes.llm, pairs,
                                        n_examples=int(cfg["functional_examples"]),
                                        max_length=int(cfg["functional_max_length"]), device=dev)
        n = next(iter(train_x.values()))[0].shape[0]
        steps, bs = int(cfg["steps"]), min(int(cfg["batch_size"]), n)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        warm = max(1, int(cfg["warmup"]))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
        tracker = Tracker(progress, "train mapper", steps)
        t0 = time.monotonic()
        best = {"val": math.inf, "step": 0, "state": copy.deepcopy(self.model.state_dict())}
        first_loss = None
        bad_evals = 0
        self.history = []
        stopped = "steps"
        step = 0
        for step in range(1, steps + 1):
            self.model.train()
            idx = torch.randperm(n, generator=gen)[:bs]
            bx = index(xn, idx.to(dev))
            pred = self._forward_normalised(bx)
            loss, prod = self._loss(pred, index(y, idx.to(dev)), index(yn, idx.to(dev)), a0, w)
            if functional is not None:
                run_ids = [pairs[int(i)].run_id for i in idx]
                loss = loss + cfg["functional_weight"] * functional(self._denorm_dev(pred), a0, run_ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg["grad_clip"])
            opt.step()
            sched.step()
            if first_loss is None:
                first_loss = float(prod.mean())
            if step % int(cfg["eval_every"]) == 0 or step == steps:
                rec = {"step": step, "train_prod": self._eval_prod(xn, y, yn, a0, w)}
                if val_x is not None:
                    rec["val_prod"] = self._eval_prod(vxn, vy, vyn, a0, w)
                self.history.append(rec)
                score = rec.get("val_prod", rec["train_prod"])
                if score < best["val"] - 1e-12:
                    best = {"val": score, "step": step, "state": copy.deepcopy(self.model.state_dict())}
                    bad_evals = 0
                else:
                    bad_evals += 1
                msg = f"train {rec['train_prod']:.4g}" + (f" val {rec['val_prod']:.4g}" if "val_prod" in rec else "")
                tracker.update(step, msg)
                if val_x is not None and bad_evals >= int(cfg["patience"]):
                    stopped = "early_stopping"
                    break
                if cfg["max_time_s"] and time.monotonic() - t0 > float(cfg["max_time_s"]):
                    stopped = "max_time"
                    break
        self.model.load_state_dict(best["state"])
        self.model.to("cpu").eval()
        tracker.update(steps, "done")
        final_train = self.history[-1]["train_prod"] if self.history else float("nan")
        return {"steps_run": step, "stopped": stopped, "best_step": best["step"],
                "best_score": best["val"], "selected_on": "validation" if val_x is not None else "train",
                "loss_first": first_loss, "loss_last_train": final_train,
                "parameters": self.model.num_parameters(), "device": str(dev),
                "wall_s": round(time.monotonic() - t0, 3),
                "history": self.history[-200:],
                "train": {"prod_loss_first": first_loss, "prod_loss_best": self._best_train(best["step"])}}

    def _best_train(self, step: int) -> Optional[float]:
        for h in self.history:
            if h["step"] == step:
                return h["train_prod"]
        return None

    def _eval_prod(self, xn, y, yn, a0, w, chunk: int = 256) -> float:
        self.model.eval()
        n = next(iter(xn.values()))[0].shape[0]
        total = 0.0
        with torch.no_grad():
            for s in range(0, n, chunk):
                sl = slice(s, s + chunk)
                pred = self._forward_normalised(index(xn, sl))
                _, prod = self._loss(pred, index(y, sl), index(yn, sl), a0, w)
                total += float(prod.sum())
        return total / max(n, 1)

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def _load_state(self, sd) -> None:
        self.model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
        self.model.to(self.device).eval()
