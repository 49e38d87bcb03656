"""GTMapper: the Gradient Transformer as a mapper (its typed config, its training on shadow pairs).

Loss, per pair, in *factored* form (never a dense dW):

    L_prod = 1/M * sum_m ||B^_m A^_m - B*_m A*_m||_F^2 / E||B*_m A*_m||^2

over the M LLM LoRA modules, each term from r x r Gram matrices (gtapp.lora.factors.product_sqdist),
each module weighted by its mean squared update norm on the training pairs, so every module
counts alike and L_prod = 1 means "as far as predicting zero". (The LoRA scale cancels.)
Optionally ``mse_weight`` x the MSE of the normalised factors (dA, B) -- it pins the gauge
inside the shared seeded basis -- and ``functional_weight`` x the LLM's answer NLL on the
pair's shadow data with the predicted adapter (gtapp.mapper.functional).

Targets and inputs are normalised per module (space.Normaliser: minus the shadow mean, over
a per-module scale). The GT predicts a *residual* on top of a base map (``base``):
``"ridge"`` (default: a RidgeMapper fitted on the same training runs, its alpha chosen on the
same validation runs) or ``"mean"`` (the shadow mean). Its output heads start at zero, so an
untrained GT *is* the base map -- the bar to clear -- and early stopping on held-out runs
keeps the transformer's correction only as far as it helps on runs it never saw (step 0,
the base map alone, is a candidate checkpoint). During training the ridge base's predictions
for the training pairs are out of fold by shadow run (``base_folds``; stacking), so the
transformer learns the base map's errors on unseen runs rather than its in-sample residuals.

Validation on held-out shadow runs every ``eval_every`` steps; the best checkpoint (lowest
validation L_prod) is kept, training stops after ``patience`` evaluations without
improvement. With a single shadow run there is no validation and the last state is kept.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch

from gtapp.devices import resolve_device
from gtapp.mapper.base import Mapper
from gtapp.mapper.functional import FunctionalLoss
from gtapp.mapper.ridge import RidgeMapper
from gtapp.lora.factors import product_sqdist
from gtapp.mapper.space import Tensors, index
from gtapp.mapper.gt.network import GradientTransformer, GTConfig
from gtapp.progress import ProgressFn, Tracker

MODEL_KEYS = tuple(GTConfig().to_dict())


@dataclass(frozen=True)
class GTMapperConfig:
    """Every setting of a Gradient Transformer mapper, typed; saved as ``config.json`` beside its
    weights in the mapper version folder (peft's habit), and read back from there."""

    # which shadow runs validate (every mapper's)
    val_fraction: float = 0.2
    split_seed: int = 0
    # the network (GTConfig)
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    mlp_mult: int = 4
    dropout: float = 0.0
    d_rank: Optional[int] = None
    n_freq: int = 6
    # training
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    eval_every: int = 25
    patience: int = 20
    grad_clip: float = 1.0
    mse_weight: float = 0.1
    mixup: float = 0.5
    functional_weight: float = 0.0
    functional_model: Optional[str] = None
    functional_examples: int = 8
    functional_max_length: int = 64
    seed: int = 0
    max_time_s: Optional[float] = None
    device: str = "cpu"
    num_threads: Optional[int] = None
    # the base map the transformer corrects
    base: str = "ridge"
    ridge_max_components: int = 16
    base_folds: int = 5

    @classmethod
    def from_dict(cls, d: dict) -> "GTMapperConfig":
        """Checked: unknown keys and values of the wrong type are refused, saying which."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"gt mapper: unknown config keys {unknown}; known: {sorted(known)}")
        out = {}
        for k, v in d.items():
            want = known[k].type.replace("Optional[", "").rstrip("]")
            if v is None and "Optional" in known[k].type:
                out[k] = v
                continue
            ok = {"int": isinstance(v, int) and not isinstance(v, bool),
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool),
                  "str": isinstance(v, str)}[want]
            if not ok:
                raise ValueError(f"gt mapper: config '{k}' must be {known[k].type}, got {v!r}")
            out[k] = float(v) if want == "float" else v
        cfg = cls(**out)
        if cfg.base not in ("ridge", "mean"):
            raise ValueError(f"gt mapper: base must be 'ridge' or 'mean', got {cfg.base!r}")
        return cfg

    def network(self) -> GTConfig:
        return GTConfig(**{k: getattr(self, k) for k in MODEL_KEYS})

    def to_dict(self) -> dict:
        return asdict(self)


def _device(name: str) -> torch.device:
    return torch.device(resolve_device(name))


def _to(tensors: Tensors, device) -> Tensors:
    return {t: (a.to(device), b.to(device)) for t, (a, b) in tensors.items()}


class GTMapper(Mapper):
    kind = "gt"

    @classmethod
    def default_config(cls) -> dict:
        return GTMapperConfig().to_dict()

    def __init__(self, recipes, config=None):
        super().__init__(recipes, config)
        self.cfg = GTMapperConfig.from_dict(self.config)
        self.config = self.cfg.to_dict()  # what config.json holds: every setting, typed
        self.gt_config = self.cfg.network()
        torch.manual_seed(int(self.cfg.seed))
        self.model = GradientTransformer(self.tiny.describe(), self.llm.describe(), self.gt_config)
        self.device = _device(self.cfg.device)
        self.history: list[dict] = []
        self.base = None
        if self.cfg.base == "ridge":
            self.base = RidgeMapper(recipes, {"max_components": self.cfg.ridge_max_components})
            self.base.norm_in, self.base.norm_out = self.norm_in, self.norm_out  # shared normalisers

    def _base_n(self, xn: Tensors) -> Tensors:
        """The base map's prediction in normalised LLM space (zeros = the shadow mean)."""
        if self.base is None:
            first = next(iter(xn.values()))[0]
            n, dev = first.shape[0], first.device
            return {t: (torch.zeros(n, *ma.shape, device=dev), torch.zeros(n, *mb.shape, device=dev))
                    for t, (ma, mb) in self.norm_out.mean.items()}
        with torch.no_grad():
            return self.base.predict_normalised(xn)

    # ----------------------------------------------------------------- forward
    def _depths(self, device):
        return ({t: self.tiny.depth(t).to(device) for t in self.tiny.types},
                {t: self.llm.depth(t).to(device) for t in self.llm.types})

    def _forward_normalised(self, xn: Tensors, base_n: Tensors) -> Tensors:
        dt, dl = self._depths(next(self.model.parameters()).device)
        out = self.model(xn, dt, dl)
        if base_n is None:  # the shadow mean: zero in normalised space
            return out
        return {t: (a + base_n[t][0], b + base_n[t][1]) for t, (a, b) in out.items()}

    def predict_tensors(self, tiny: Tensors) -> Tensors:
        self.model.eval()
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            xn = _to(self.norm_in.normalise(tiny), dev)
            out = self._forward_normalised(xn, self._base_n(xn) if self.base is not None else None)
        out = {t: (a.float().cpu(), b.float().cpu()) for t, (a, b) in out.items()}
        return self.norm_out.denormalise(out)

    def _base_train(self, train_x: Tensors, pairs) -> Tensors:
        """The base map's predictions for the *training* pairs, out of fold by shadow run.

        An in-sample ridge fit is nearly exact on its own training pairs, so the residuals
        the transformer would learn from would be far smaller than on new runs. Instead each
        training run gets the prediction of a ridge fitted (same alpha) on the other folds'
        runs -- stacking -- so the transformer learns to correct the base map's errors on
        runs it has not seen. With fewer than 2 runs (or base_folds < 2) it is in-sample.
        """
        xn = self.norm_in.normalise(train_x)
        folds = int(self.cfg.base_folds or 0)
        runs = list(dict.fromkeys(p.run_id for p in pairs)) if pairs else []
        if self.base is None or folds < 2 or len(runs) < 2:
            return self._base_n(xn)

        g = torch.Generator().manual_seed(int(self.cfg.seed))
        order = [runs[i] for i in torch.randperm(len(runs), generator=g)]
        fold_of = {r: i % min(folds, len(runs)) for i, r in enumerate(order)}
        fold = torch.tensor([fold_of[p.run_id] for p in pairs])
        yn = self.norm_out.normalise(self._train_y)
        parts: dict[int, Tensors] = {}
        for f in fold.unique():
            te, tr = fold == f, fold != f
            r = RidgeMapper(self.recipes, {"max_components": self.cfg.ridge_max_components})
            r.norm_in, r.norm_out = self.norm_in, self.norm_out
            r._solve(index(xn, tr), index(yn, tr), self.base.chosen_lam)
            parts[int(f)] = r.predict_normalised(index(xn, te))
        out = {t: (torch.zeros_like(a), torch.zeros_like(b)) for t, (a, b) in yn.items()}
        for f, pred in parts.items():
            te = fold == f
            for t, (a, b) in pred.items():
                out[t][0][te], out[t][1][te] = a, b
        return out

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
        if self.cfg.mse_weight:
            total = total + self.cfg.mse_weight * mse_num / mse_den
        return total, prod.detach()

    def _denorm_dev(self, zn: Tensors) -> Tensors:
        out = {}
        for t, (za, zb) in zn.items():
            ma, mb = self._norm_dev[t]["mean"]
            out[t] = (za * self._norm_dev[t]["s_a"] + ma, zb * self._norm_dev[t]["s_b"] + mb)
        return out

    # ----------------------------------------------------------------- fit
    def _fit(self, train_x, train_y, val_x, val_y, progress: Optional[ProgressFn], pairs=()) -> dict:
        threads = self.cfg.num_threads
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        try:
            return self._train(train_x, train_y, val_x, val_y, progress, pairs)
        finally:
            torch.set_num_threads(old)

    def _train(self, train_x, train_y, val_x, val_y, progress: Optional[ProgressFn], pairs=()) -> dict:
        cfg = self.cfg
        dev = self.device
        torch.manual_seed(int(cfg.seed))
        gen = torch.Generator().manual_seed(int(cfg.seed))
        self.model.to(dev)
        self._norm_dev = {t: {"mean": tuple(m.to(dev) for m in self.norm_out.mean[t]),
                              "s_a": self.norm_out.s_a[t].to(dev)[:, None, None],
                              "s_b": self.norm_out.s_b[t].to(dev)[:, None, None]} for t in self.llm.types}
        base_report = {}
        self._train_y = train_y
        if self.base is not None:
            base_report = self.base._fit(train_x, train_y, val_x, val_y, None)
            base_report = {"lambda": base_report["lambda"], "components": base_report["components"]}
        a0 = {t: self.llm.a0(t).to(dev) for t in self.llm.types}
        w = {t: (1.0 / self.norm_out.prod2[t]).to(dev) for t in self.llm.types}
        xn = _to(self.norm_in.normalise(train_x), dev)
        y = _to(train_y, dev)
        yn = _to(self.norm_out.normalise(train_y), dev)
        bn = _to(self._base_train(train_x, pairs), dev)
        if val_x is not None:
            vxn = _to(self.norm_in.normalise(val_x), dev)
            vy, vyn = _to(val_y, dev), _to(self.norm_out.normalise(val_y), dev)
            vbn = _to(self._base_n(self.norm_in.normalise(val_x)), dev)
        functional = None
        if cfg.functional_weight:

            functional = FunctionalLoss(cfg.functional_model, self.recipes.llm, pairs,
                                        n_examples=int(cfg.functional_examples),
                                        max_length=int(cfg.functional_max_length), device=dev)
        n = next(iter(train_x.values()))[0].shape[0]
        steps, bs = int(cfg.steps), min(int(cfg.batch_size), n)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
        tracker = Tracker(progress, "train mapper", steps)
        t0 = time.monotonic()
        # step 0 = the base map alone: the transformer must beat it on held-out runs to be kept
        score0 = self._eval_prod(vxn, vy, vyn, vbn, a0, w) if val_x is not None else self._eval_prod(xn, y, yn, bn, a0, w)
        best = {"val": score0, "step": 0, "state": copy.deepcopy(self.model.state_dict())}
        base_score = score0
        first_loss = None
        bad_evals = 0
        self.history = []
        stopped = "steps"
        step = 0
        for step in range(1, steps + 1):
            self.model.train()
            idx = torch.randperm(n, generator=gen)[:bs]
            full = (xn, y, yn, bn)
            batch = [index(d, idx.to(dev)) for d in full]
            if cfg.mixup:
                batch = self._mixup(batch, full, float(cfg.mixup), gen)
            bx, by, byn, bbn = batch
            pred = self._forward_normalised(bx, bbn)
            loss, prod = self._loss(pred, by, byn, a0, w)
            if functional is not None:  # on the batch's real (unmixed) pairs only
                n_plain = len(idx) - (int(round(float(cfg.mixup) * len(idx))) if cfg.mixup and n > 1 else 0)
                if n_plain > 0:
                    run_ids = [pairs[int(i)].run_id for i in idx[:n_plain]]
                    pred_raw = self._denorm_dev({t: (a[:n_plain], b[:n_plain]) for t, (a, b) in pred.items()})
                    loss = loss + cfg.functional_weight * functional(pred_raw, a0, run_ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if first_loss is None:
                first_loss = float(prod.mean())
            if step % int(cfg.eval_every) == 0 or step == steps:
                rec = {"step": step, "train_prod": self._eval_prod(xn, y, yn, bn, a0, w)}
                if val_x is not None:
                    rec["val_prod"] = self._eval_prod(vxn, vy, vyn, vbn, a0, w)
                self.history.append(rec)
                score = rec.get("val_prod", rec["train_prod"])
                if score < best["val"] - 1e-12:
                    best = {"val": score, "step": step, "state": copy.deepcopy(self.model.state_dict())}
                    bad_evals = 0
                else:
                    bad_evals += 1
                msg = f"train {rec['train_prod']:.4g}" + (f" val {rec['val_prod']:.4g}" if "val_prod" in rec else "")
                if val_x is not None:
                    # without a better score in the next evaluations, patience ends the run there: an ETA
                    # over the whole step budget said 5.3 s where 2.3 s were left (2026-12-02)
                    tracker.retarget(min(steps, step + (int(cfg.patience) - bad_evals) * int(cfg.eval_every)))
                tracker.update(step, msg, **{"train L_prod": rec["train_prod"], "val L_prod": rec.get("val_prod")})
                if val_x is not None and bad_evals >= int(cfg.patience):
                    stopped = "early_stopping"
                    break
                if cfg.max_time_s and time.monotonic() - t0 > float(cfg.max_time_s):
                    stopped = "max_time"
                    break
        self.model.load_state_dict(best["state"])
        self.model.to("cpu").eval()
        tracker.update(steps, "done")
        final_train = self.history[-1]["train_prod"] if self.history else float("nan")
        return {"steps_run": step, "stopped": stopped, "best_step": best["step"],
                "base": cfg.base, "base_fit": base_report, "base_score": base_score,
                "best_score": best["val"], "selected_on": "validation" if val_x is not None else "train",
                "loss_first": first_loss, "loss_last_train": final_train,
                "parameters": self.model.num_parameters(), "device": str(dev),
                "wall_s": round(time.monotonic() - t0, 3),
                "history": self.history[-200:],
                "train": {"prod_loss_first": first_loss, "prod_loss_best": self._best_train(best["step"])}}

    @staticmethod
    def _mixup(batch: list, full: list, frac: float, gen: torch.Generator) -> list:
        """Replace a fraction of the batch by convex combinations of two random training pairs.

        In the shared seeded basis a weighted average of updates is itself a meaningful
        update (it is how clients' updates are pooled), the normalisation and the base map
        are affine, so mixing inputs, targets and base predictions alike encodes the prior
        that nearby inputs map to nearby outputs -- the regulariser a map learned from a few
        dozen runs needs.
        """
        n_all = next(iter(full[0].values()))[0].shape[0]
        bs = next(iter(batch[0].values()))[0].shape[0]
        k = int(round(frac * bs))
        if k == 0 or n_all < 2:
            return batch
        i = torch.randint(0, n_all, (k,), generator=gen)
        j = torch.randint(0, n_all, (k,), generator=gen)
        lam = torch.rand(k, generator=gen)

        def mix(whole, part):
            out = {}
            for t, fs in whole.items():
                new = []
                for f, b in zip(fs, part[t]):
                    l = lam.to(f).view(-1, *([1] * (f.dim() - 1)))
                    m = l * f[i.to(f.device)] + (1 - l) * f[j.to(f.device)]
                    new.append(torch.cat([b[: bs - k], m]))
                out[t] = tuple(new)
            return out

        return [mix(w, p) for w, p in zip(full, batch)]

    def _best_train(self, step: int) -> Optional[float]:
        for h in self.history:
            if h["step"] == step:
                return h["train_prod"]
        return None

    def _eval_prod(self, xn, y, yn, bn, a0, w, chunk: int = 256) -> float:
        self.model.eval()
        n = next(iter(xn.values()))[0].shape[0]
        total = 0.0
        with torch.no_grad():
            for s in range(0, n, chunk):
                sl = slice(s, s + chunk)
                pred = self._forward_normalised(index(xn, sl), index(bn, sl))
                _, prod = self._loss(pred, index(y, sl), index(yn, sl), a0, w)
                total += float(prod.sum())
        return total / max(n, 1)

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, torch.Tensor]:
        sd = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.base is not None:
            sd.update({f"base.{k}": v for k, v in self.base._state().items()})
        return sd

    def _load_state(self, sd) -> None:
        self.model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
        if self.base is not None:
            self.base._load_state({k[len("base."):]: v for k, v in sd.items() if k.startswith("base.")})
        self.model.to(self.device).eval()
