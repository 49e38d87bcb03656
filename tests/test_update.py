"""Update vectors: ΔW from adapters, gauge-free forms, Gram-matrix algebra, files, peft output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from gtapp.cli import main as cli_main
from gtapp.lora.peft_model import attach_lora
from gtapp.models import ModelPair, load_model
from gtapp.lora.peft_format import write_peft_adapter
from gtapp.lora.checkpoints import update_from_checkpoints
from gtapp.lora.update import ModuleUpdate, UpdateVector, flat_layout
from gtapp.lora.peft_format import PEFT_PREFIX, WEIGHTS_NAME
from gtapp.lora.validate import validate_adapter

TOL = 1e-5


def make_trained_adapter(zoo: Path, which: str, out: Path, seed: int, b_std: float = 0.05,
                         a_noise: float = 0.05) -> Path:
    """A 'fine-tuned' adapter without a training loop: recipe init, then seeded B and a nudged A."""
    pair = ModelPair.from_dir(zoo)
    recipe = pair.recipe(which)
    peft_model = attach_lora(load_model(pair.path(which)), recipe)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                a.add_(a_noise * a.abs().mean() * torch.randn(a.shape, generator=g))
                b.copy_(b_std * torch.randn(b.shape, generator=g))
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def pair(micro_zoo) -> ModelPair:
    return ModelPair.from_dir(micro_zoo)


@pytest.fixture(scope="module")
def tiny_adapter(micro_zoo, tmp_path_factory) -> Path:
    return make_trained_adapter(micro_zoo, "tiny", tmp_path_factory.mktemp("ad") / "tiny", seed=1)


@pytest.fixture(scope="module")
def llm_adapter(micro_zoo, tmp_path_factory) -> Path:
    return make_trained_adapter(micro_zoo, "llm", tmp_path_factory.mktemp("ad") / "llm", seed=2)


def ids_for(model_path: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 300, (2, 16), generator=g)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.detach().clone()


def add_dense(model, update: UpdateVector) -> None:
    sd = dict(model.named_parameters())
    with torch.no_grad():
        for m in update.module_names():
            sd[f"{m}.weight"].add_(update.dense(m))


def random_update(shapes: dict, rank: int, seed: int, scale: float = 2.0) -> UpdateVector:
    g = torch.Generator().manual_seed(seed)
    mods = {}
    for m, (o, i) in shapes.items():
        a0 = torch.rand(rank, i, generator=g) - 0.5
        mods[m] = ModuleUpdate(m, a0 + 0.1 * torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g),
                               a0, scale)
    return UpdateVector({"init_seed": None}, mods, {"source": "test"})


# ----------------------------------------------------------------------------- ΔW and logits


def test_extracted_update_dense_is_scale_b_a(pair, tiny_adapter):
    from safetensors.torch import load_file

    recipe = pair.recipes.tiny
    update = UpdateVector.from_adapter(tiny_adapter, recipe)
    raw = load_file(str(tiny_adapter / WEIGHTS_NAME))
    assert update.module_names() == recipe.modules()
    worst = 0.0
    for m in recipe.modules():
        a, b = raw[f"{PEFT_PREFIX}{m}.lora_A.weight"], raw[f"{PEFT_PREFIX}{m}.lora_B.weight"]
        worst = max(worst, float((update.dense(m) - recipe.scale * b @ a).abs().max()))
        assert torch.equal(update.modules[m].a0, update.modules[m].a - update.modules[m].delta_a)
        assert torch.equal(update.modules[m].delta_b, b)
    assert worst < 1e-6
    assert update.meta["source"] == "adapter" and len(update.meta["sha256"]) == 64


@pytest.mark.parametrize("which", ["tiny", "llm"])
def test_merged_unmerged_and_dense_logits_match(pair, tiny_adapter, llm_adapter, which):
    adapter = {"tiny": tiny_adapter, "llm": llm_adapter}[which]
    recipe, path = pair.recipe(which), pair.path(which)
    ids = ids_for(path)
    base_logits = logits(load_model(path), ids)
    peft_model = PeftModel.from_pretrained(load_model(path), str(adapter)).eval()
    unmerged = logits(peft_model, ids)
    merged = logits(peft_model.merge_and_unload(), ids)
    dense_model = load_model(path)
    add_dense(dense_model, UpdateVector.from_adapter(adapter, recipe))
    via_dense = logits(dense_model, ids)
    d_merge = float((merged - unmerged).abs().max())
    d_dense = float((via_dense - unmerged).abs().max())
    print(f"[{which}] max|merged-unmerged|={d_merge:.3g} max|base+dense-adapter|={d_dense:.3g} "
          f"max|adapter-base|={float((unmerged - base_logits).abs().max()):.3g}")
    assert d_merge < TOL and d_dense < TOL
    assert float((unmerged - base_logits).abs().max()) > 1e-3  # the adapter does change the model


# ----------------------------------------------------------------------------- gauge and algebra


def test_canonical_is_gauge_invariant():
    g = torch.Generator().manual_seed(3)
    a0 = torch.rand(4, 24, generator=g) - 0.5
    a, b = a0 + 0.1 * torch.randn(4, 24, generator=g), torch.randn(40, 4, generator=g)
    mu = ModuleUpdate("model.layers.0.self_attn.q_proj", a, b, a0, 0.5)
    m = torch.randn(4, 4, generator=g) + 3 * torch.eye(4)
    mu2 = ModuleUpdate(mu.module, torch.linalg.solve(m, a), b @ m, a0, 0.5)
    bc, ac = mu.canonical()
    bc2, ac2 = mu2.canonical()
    print(f"gauge: max|Bc-Bc'|={float((bc - bc2).abs().max()):.3g} max|Ac-Ac'|={float((ac - ac2).abs().max()):.3g}")
    assert torch.allclose(bc, bc2, atol=TOL) and torch.allclose(ac, ac2, atol=TOL)
    assert float((bc @ ac - mu.dense()).abs().max()) < TOL
    u, s, v = mu.canonical("svd")
    assert torch.allclose(u.T @ u, torch.eye(4), atol=1e-5) and torch.allclose(v.T @ v, torch.eye(4), atol=1e-5)
    assert bool((s[:-1] >= s[1:]).all())
    ref = torch.linalg.svdvals(mu.dense().double()).float()[:4]
    assert torch.allclose(s, ref, rtol=1e-4)
    # rank-deficient update: zero component stays zero, no NaN
    b_def = b.clone()
    b_def[:, 3] = 0
    bcd, acd = ModuleUpdate(mu.module, a, b_def, a0, 0.5).canonical()
    assert torch.isfinite(bcd).all() and float(bcd[:, 3].abs().max()) == 0.0


def test_gram_norm_distance_cosine_equal_dense():
    shapes = {"model.layers.0.self_attn.q_proj": (32, 16), "model.layers.1.self_attn.v_proj": (8, 16)}
    u1, u2 = random_update(shapes, 3, seed=4), random_update(shapes, 3, seed=5, scale=0.7)
    d1 = {m: u1.dense(m).double() for m in shapes}
    d2 = {m: u2.dense(m).double() for m in shapes}
    norm = math.sqrt(sum(float((d ** 2).sum()) for d in d1.values()))
    dist = math.sqrt(sum(float(((d1[m] - d2[m]) ** 2).sum()) for m in shapes))
    inner = sum(float((d1[m] * d2[m]).sum()) for m in shapes)
    cos = inner / (norm * math.sqrt(sum(float((d ** 2).sum()) for d in d2.values())))
    print(f"gram vs dense: norm {abs(u1.frobenius_norm() - norm):.3g}, distance {abs(u1.distance(u2) - dist):.3g}, "
          f"cosine {abs(u1.cosine(u2) - cos):.3g}")
    assert u1.frobenius_norm() == pytest.approx(norm, rel=1e-6)
    assert u1.distance(u2) == pytest.approx(dist, rel=1e-6)
    assert u1.cosine(u2) == pytest.approx(cos, rel=1e-6, abs=1e-9)
    assert u1.distance(u1) < 1e-6 * norm and u1.cosine(u1) == pytest.approx(1.0)
    assert u1.scale_by(-1).cosine(u1) == pytest.approx(-1.0)
    assert u1.scale_by(2.5).frobenius_norm() == pytest.approx(2.5 * norm, rel=1e-6)
    # a different gauge is the same update
    gauged = {m: ModuleUpdate(m, 2.0 * mu.a, 0.5 * mu.b, mu.a0, mu.scale) for m, mu in u1.modules.items()}
    assert u1.distance(UpdateVector({}, gauged)) < 1e-5 * norm


def test_flat_round_trip_layout_and_average(pair, tiny_adapter):
    recipe = pair.recipes.tiny
    u = UpdateVector.from_adapter(tiny_adapter, recipe)
    flat = u.to_flat()
    layout = flat_layout(recipe.shapes, recipe.rank)
    assert flat.shape == (layout[-1].stop,) and [s.module for s in layout[::2]] == recipe.modules()
    seg = layout[1]
    assert torch.equal(flat[seg.start:seg.stop].reshape(seg.shape), u.modules[seg.module].b)
    back = UpdateVector.from_flat(flat, recipe)
    assert torch.equal(back.to_flat(), flat)
    assert back.distance(u) < 1e-6 * u.frobenius_norm()
    zero = UpdateVector.from_flat(torch.zeros_like(flat), recipe)
    assert zero.frobenius_norm() == 0.0 and u.cosine(zero) == 0.0
    # average: ΔA and B averaged separately, weights normalised
    v = UpdateVector.from_flat(2 * flat, recipe)
    avg = UpdateVector.average([u, v], [1, 3])
    assert torch.allclose(avg.to_flat(), 0.25 * flat + 0.75 * 2 * flat, atol=1e-6)
    assert avg.meta["weights"] == [0.25, 0.75]
    with pytest.raises(ValueError):
        UpdateVector.average([u, v], [1, -1])


def test_save_load_round_trip(pair, tiny_adapter, tmp_path):
    recipe = pair.recipes.tiny
    u = UpdateVector.from_adapter(tiny_adapter, recipe)
    path = u.save(tmp_path / "u.safetensors")
    assert path.exists() and (tmp_path / "u.json").exists()
    side = json.loads((tmp_path / "u.json").read_text())
    assert side["recipe_fingerprints"]["init_fingerprint"] == recipe.init_fingerprint
    assert all(d["init"] == "seeded" for d in side["modules"].values())
    back = UpdateVector.load(path)
    assert back.module_names() == u.module_names() and back.meta == u.meta
    for m, mu in u.modules.items():
        o = back.modules[m]
        assert torch.equal(o.a, mu.a) and torch.equal(o.b, mu.b) and torch.equal(o.a0, mu.a0)
        assert o.scale == mu.scale
    back.check_recipe(recipe)
    with pytest.raises(ValueError):
        back.check_recipe(pair.recipes.llm)
    # non-seeded initial A's are stored
    r = random_update({"model.layers.0.self_attn.q_proj": (8, 4)}, 2, seed=9)
    r2 = UpdateVector.load(r.save(tmp_path / "r"))
    assert torch.equal(r2.modules["model.layers.0.self_attn.q_proj"].a0, r.modules["model.layers.0.self_attn.q_proj"].a0)


# ----------------------------------------------------------------------------- peft output


def test_write_peft_adapter_loads_in_stock_peft(pair, llm_adapter, tmp_path):
    recipe, path = pair.recipes.llm, pair.llm_path
    update = UpdateVector.from_adapter(llm_adapter, recipe)
    out = write_peft_adapter(update, recipe, tmp_path / "out", base_model_name_or_path=path)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == recipe.rank and cfg["lora_alpha"] == recipe.alpha
    assert sorted(cfg["target_modules"]) == sorted(recipe.target_modules) and cfg["task_type"] == "CAUSAL_LM"
    assert (out / "gtapp_recipe.json").exists()
    ids = ids_for(path)
    stock = logits(PeftModel.from_pretrained(load_model(path), str(out)).eval(), ids)
    dense_model = load_model(path)
    add_dense(dense_model, update)
    diff = float((stock - logits(dense_model, ids)).abs().max())
    print(f"write_peft_adapter: max|stock peft - base+dense|={diff:.3g}")
    assert diff < TOL
    summary = validate_adapter(out, recipe)  # our own output passes our own validation, sidecar included
    assert summary.total_norm == pytest.approx(update.frobenius_norm(), rel=1e-6)
    # a scaled update (the scale folded into B) and raw factors also round-trip
    half = write_peft_adapter(update.scale_by(0.5), recipe, tmp_path / "half")
    assert UpdateVector.from_adapter(half, recipe).distance(update.scale_by(0.5)) < 1e-6 * update.frobenius_norm()
    raw = write_peft_adapter(update.factors(), recipe, tmp_path / "raw")
    assert UpdateVector.from_adapter(raw, recipe).distance(update) < 1e-6 * update.frobenius_norm()


def test_from_checkpoints_recovers_adapter_delta(pair, tiny_adapter, tmp_path):
    recipe, path = pair.recipes.tiny, pair.tiny_path
    update = UpdateVector.from_adapter(tiny_adapter, recipe)
    merged = PeftModel.from_pretrained(load_model(path), str(tiny_adapter)).merge_and_unload()
    merged.save_pretrained(str(tmp_path / "merged"))
    ck = update_from_checkpoints(path, tmp_path / "merged", recipe, rank=recipe.rank)
    worst = max(float((ck.dense(m) - update.dense(m)).abs().max()) for m in recipe.modules())
    rel = ck.distance(update) / update.frobenius_norm()
    print(f"from_checkpoints: max|ΔW_ck-ΔW_adapter|={worst:.3g}, relative distance {rel:.3g}, "
          f"dropped energy {ck.meta['dropped_energy']:.3g}")
    assert worst < TOL and rel < 1e-4
    assert ck.meta["dropped_energy"] < 1e-8
    # truncation below the adapter's rank drops energy, and says how much
    ck1 = update_from_checkpoints(load_model(path), merged, ("q_proj", "v_proj"), rank=1)
    assert set(ck1.modules) == set(recipe.shapes) and all(mu.rank == 1 for mu in ck1.modules.values())
    frac = ck1.meta["dropped_energy"]
    expect = ck1.distance(update) ** 2 / update.frobenius_norm() ** 2
    assert 0 < frac < 1 and frac == pytest.approx(expect, rel=1e-3)
    # a rank-1 update is written as a rank-1 stock adapter (alpha = r) that reproduces it
    out = write_peft_adapter(ck1, recipe, tmp_path / "r1")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 1
    ids = ids_for(path)
    stock = logits(PeftModel.from_pretrained(load_model(path), str(out)).eval(), ids)
    dense_model = load_model(path)
    add_dense(dense_model, ck1)
    assert float((stock - logits(dense_model, ids)).abs().max()) < TOL


# ----------------------------------------------------------------------------- CLI


def test_cli_validate_extract_show(micro_zoo, tiny_adapter, tmp_path, capsys):
    assert cli_main(["update", "validate", "--adapter", str(tiny_adapter), "--zoo", str(micro_zoo),
                     "--which", "tiny"]) == 0
    assert "adapter OK" in capsys.readouterr().out
    assert cli_main(["update", "validate", "--adapter", str(tiny_adapter), "--zoo", str(micro_zoo),
                     "--which", "llm"]) == 2
    assert "adapter refused" in capsys.readouterr().err
    out = tmp_path / "u.safetensors"
    assert cli_main(["update", "extract", "--adapter", str(tiny_adapter), "--zoo", str(micro_zoo),
                     "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["update", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model.layers.1.self_attn.v_proj" in text and "source: adapter" in text
    assert cli_main(["update", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modules"] == 4
