"""Untrusted adapter uploads: every class of bad adapter is refused, with a message that says why."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gtapp.lora.peft_model import attach_lora
from gtapp.models import ModelPair, load_model
from gtapp.lora.recipe import seeded_lora_a
from gtapp.lora.peft_format import CONFIG_NAME, PEFT_PREFIX, SIDECAR_NAME, WEIGHTS_NAME
from gtapp.lora.recipe import recipe_fingerprints
from gtapp.lora.validate import (AdapterError, AdapterSummary, Limits, extract_zip, load_adapter, read_safetensors_header, validate_adapter)


@pytest.fixture(scope="module")
def recipe(micro_zoo):
    return ModelPair.from_dir(micro_zoo).recipes.tiny


@pytest.fixture(scope="module")
def good(micro_zoo, tmp_path_factory) -> Path:
    """A valid 'trained' tiny adapter folder (stock peft save_pretrained)."""
    pair = ModelPair.from_dir(micro_zoo)
    peft_model = attach_lora(load_model(pair.tiny_path), pair.recipes.tiny)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for _, mod in peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                a = mod.lora_A["default"].weight
                a.add_(0.05 * a.abs().mean() * torch.randn(a.shape, generator=g))
                mod.lora_B["default"].weight.copy_(0.05 * torch.randn(mod.lora_B["default"].weight.shape, generator=g))
    out = tmp_path_factory.mktemp("good") / "adapter"
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture
def work(good, tmp_path) -> Path:
    """A fresh copy of the good adapter to mutate."""
    dst = tmp_path / "adapter"
    shutil.copytree(good, dst)
    return dst


def refused(source, recipe, *match: str, **kw) -> str:
    with pytest.raises(AdapterError) as e:
        validate_adapter(source, recipe, **kw)
    msg = str(e.value)
    for m in match:
        assert m.lower() in msg.lower(), msg
    return msg


def tensors(folder: Path) -> dict:
    return load_file(str(folder / WEIGHTS_NAME))


def write_tensors(folder: Path, t: dict) -> None:
    save_file(t, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> None:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)


def key(module: str, part: str) -> str:
    return f"{PEFT_PREFIX}{module}.{part}.weight"


Q0 = "model.layers.0.self_attn.q_proj"


# ----------------------------------------------------------------------------- accepted


def test_good_adapter_summary(good, recipe):
    s = validate_adapter(good, recipe)
    assert isinstance(s, AdapterSummary)
    assert s.modules == recipe.modules() and s.rank == recipe.rank and s.alpha == recipe.alpha
    assert s.dtype == "float32" and s.source_kind == "folder"
    assert s.num_parameters == sum(recipe.rank * (o + i) for o, i in recipe.shapes.values())
    assert set(s.layer_norms) == {0, 1} and all(v > 0 for v in s.layer_norms.values())
    assert max(s.init_distance.values()) < 0.2 and s.file_sizes[WEIGHTS_NAME] > 0
    json.dumps(s.to_dict())
    assert "adapter OK" in s.format()
    header = read_safetensors_header(good / WEIGHTS_NAME, 1 << 20)
    assert len(header.entries) == 2 * len(recipe.shapes) and header.metadata == {"format": "pt"}
    assert {e.dtype for e in header.entries.values()} == {"F32"}
    # the two files
    assert validate_adapter([good / CONFIG_NAME, good / WEIGHTS_NAME], recipe).source_kind == "files"


def test_half_precision_accepted(work, recipe):
    write_tensors(work, {k: v.to(torch.bfloat16) for k, v in tensors(work).items()})
    assert validate_adapter(work, recipe).dtype == "bfloat16"
    write_tensors(work, {k: v.to(torch.float16) for k, v in tensors(work).items()})
    checked = load_adapter(work, recipe)
    assert checked.summary.dtype == "float16"
    assert all(a.dtype == torch.float32 for a, _ in checked.factors.values())


def test_good_zip_at_top_and_in_one_folder(good, recipe, tmp_path):
    for prefix in ("", "my_adapter/"):
        z = tmp_path / f"a{len(prefix)}.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in good.iterdir():
                zf.write(f, prefix + f.name)
        dest = tmp_path / "uploads"
        s = validate_adapter(z, recipe, workdir=dest)
        assert s.source_kind == "zip"
        extracted = [p for p in dest.rglob("*") if p.is_file()]
        assert {p.name for p in extracted} <= {CONFIG_NAME, WEIGHTS_NAME, SIDECAR_NAME}  # README not extracted
        assert all(p.resolve().is_relative_to(dest.resolve()) for p in extracted)
        shutil.rmtree(dest)
    assert validate_adapter(z, recipe).source_kind == "zip"  # temporary extraction


# ----------------------------------------------------------------------------- pickle and format


def test_pickle_renamed_to_safetensors_is_refused(work, recipe):
    sd = tensors(work)
    (work / WEIGHTS_NAME).write_bytes(pickle.dumps(sd, protocol=4))
    refused(work, recipe, "pickle", "never loaded")
    torch.save(sd, work / WEIGHTS_NAME)  # torch.save's zip container
    refused(work, recipe, "zip archive", "not safetensors")
    torch.save(sd, work / WEIGHTS_NAME, _use_new_zipfile_serialization=False)  # legacy raw pickle
    refused(work, recipe, "pickle")


def test_bin_and_other_pickle_files_are_refused(work, recipe, tmp_path):
    torch.save(tensors(work), work / "adapter_model.bin")
    refused(work, recipe, ".bin", "pickle-based", "safetensors")
    only_bin = tmp_path / "only_bin"
    only_bin.mkdir()
    shutil.copy(work / CONFIG_NAME, only_bin)
    shutil.copy(work / "adapter_model.bin", only_bin)
    refused(only_bin, recipe, ".bin")
    refused(work / "adapter_model.bin", recipe, ".bin")
    refused([work / CONFIG_NAME, work / "adapter_model.bin"], recipe, ".bin")
    for suffix in (".pt", ".pkl", ".ckpt"):
        p = tmp_path / f"x{suffix}"
        p.write_bytes(b"\x80\x04.")
        refused(p, recipe, suffix)


def test_truncated_and_garbage_headers_are_refused(work, recipe):
    data = (work / WEIGHTS_NAME).read_bytes()
    (work / WEIGHTS_NAME).write_bytes(data[: len(data) - 10])
    refused(work, recipe, "data_offsets", "truncated")
    (work / WEIGHTS_NAME).write_bytes(data[:20])
    refused(work, recipe, "header length", "truncated")
    (work / WEIGHTS_NAME).write_bytes(data[:5])
    refused(work, recipe, "too short")
    raw_safetensors(work / WEIGHTS_NAME, b"{not json at all")
    refused(work, recipe, "not valid JSON")
    raw_safetensors(work / WEIGHTS_NAME, b"[1, 2, 3]")
    refused(work, recipe, "does not start with '{'")
    raw_safetensors(work / WEIGHTS_NAME, b'{"a": 1, "a": 2}')
    refused(work, recipe, "duplicate key")
    (work / WEIGHTS_NAME).write_bytes(os.urandom(4096))
    refused(work, recipe)


def test_oversized_header_length_is_refused(work, recipe):
    raw_safetensors(work / WEIGHTS_NAME, b"{}", length=1 << 40)
    refused(work, recipe, "header length", "limit")
    raw_safetensors(work / WEIGHTS_NAME, b"{}", length=(1 << 64) - 1)
    refused(work, recipe, "header length")


def test_header_bound_is_configurable(good, recipe):
    # a real header, within the file, but above the configured header bound
    refused(good, recipe, "header length", "limit", limits=Limits(max_header_bytes=64, max_weights_bytes=1 << 20))


def test_wrong_dtype_is_refused(work, recipe):
    t = tensors(work)
    t[key(Q0, "lora_B")] = (t[key(Q0, "lora_B")] * 100).to(torch.int8)
    write_tensors(work, t)
    refused(work, recipe, "dtype I8", "float32")
    t[key(Q0, "lora_B")] = t[key(Q0, "lora_B")].to(torch.float64)
    write_tensors(work, t)
    refused(work, recipe, "dtype F64")


def test_wrong_shape_is_refused(work, recipe):
    t = tensors(work)
    t[key(Q0, "lora_A")] = t[key(Q0, "lora_A")][:, :-1].contiguous()
    write_tensors(work, t)
    refused(work, recipe, "lora_A of model.layers.0.self_attn.q_proj", "shape", "recipe expects")


def test_missing_and_extra_keys_are_named(work, recipe):
    t = tensors(work)
    b = t.pop(key(Q0, "lora_B"))
    write_tensors(work, t)
    refused(work, recipe, "missing 1 key", "q_proj.lora_B")
    t[key(Q0, "lora_B")] = b
    t["base_model.model.lm_head.weight"] = torch.zeros(3, 3)
    write_tensors(work, t)
    refused(work, recipe, "unexpected 1 key", "lm_head")


def test_key_count_bound(work, recipe):
    t = tensors(work)
    for i in range(100):
        t[f"junk.{i}"] = torch.zeros(1)
    write_tensors(work, t)
    refused(work, recipe, "more than the limit")


# ----------------------------------------------------------------------------- config


def test_wrong_rank_is_refused(work, recipe):
    edit_config(work, r=recipe.rank * 2)
    refused(work, recipe, f"rank r={recipe.rank * 2}", f"recipe's rank is {recipe.rank}")


def test_rank_mismatch_between_config_and_tensors(work, recipe):
    t = tensors(work)
    t = {k: torch.cat([v, v], dim=0 if ".lora_A." in k else 1) for k, v in t.items()}
    write_tensors(work, t)
    refused(work, recipe, "shape", f"rank {recipe.rank}")


def test_wrong_alpha_is_refused(work, recipe):
    edit_config(work, lora_alpha=recipe.alpha * 2)
    refused(work, recipe, "lora_alpha", f"recipe's alpha is {recipe.alpha:g}")


def test_wrong_targets_are_refused(work, recipe):
    edit_config(work, target_modules=["q_proj", "k_proj"])
    refused(work, recipe, "target_modules", "differ")
    edit_config(work, target_modules=".*proj")
    refused(work, recipe, "pattern")


def test_unknown_and_forbidden_config_keys_are_refused(work, recipe, good):
    edit_config(work, my_hook="import os")
    refused(work, recipe, "unknown keys", "my_hook")
    shutil.copy(good / CONFIG_NAME, work / CONFIG_NAME)
    for k, v, msg in [("use_dora", True, "DoRA"), ("use_rslora", True, "rsLoRA"), ("bias", "all", "bias"),
                      ("modules_to_save", ["lm_head"], "modules_to_save"), ("peft_type", "IA3", "peft_type"),
                      ("init_lora_weights", "pissa", "init_lora_weights"), ("rank_pattern", {"q_proj": 8}, "rank"),
                      ("layers_to_transform", [0], "layers_to_transform"), ("eva_config", {"rho": 2}, "eva_config")]:
        shutil.copy(good / CONFIG_NAME, work / CONFIG_NAME)
        edit_config(work, **{k: v})
        refused(work, recipe, msg)
    shutil.copy(good / CONFIG_NAME, work / CONFIG_NAME)
    edit_config(work, lora_alpha=10 ** 400)
    refused(work, recipe, "lora_alpha", "finite number")
    (work / CONFIG_NAME).write_text("[]")
    refused(work, recipe, "JSON object")
    (work / CONFIG_NAME).write_text('{"r": NaN}')
    refused(work, recipe, "NaN")
    (work / CONFIG_NAME).write_text(" " * 70_000)
    refused(work, recipe, "limit")
    os.remove(work / CONFIG_NAME)
    refused(work, recipe, "no adapter_config.json")


def test_sidecar_fingerprints_must_match(work, recipe, micro_zoo):
    fps = {"gtapp_recipe": 1, **recipe_fingerprints(recipe)}
    (work / SIDECAR_NAME).write_text(json.dumps(fps))
    validate_adapter(work, recipe)
    other = ModelPair.from_dir(micro_zoo).recipes.llm
    (work / SIDECAR_NAME).write_text(json.dumps({"gtapp_recipe": 1, **recipe_fingerprints(other)}))
    refused(work, recipe, SIDECAR_NAME, "different recipe")
    (work / SIDECAR_NAME).write_text(json.dumps({"gtapp_recipe": 1}))
    refused(work, recipe, "missing 'base_fingerprint'")


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_refused(work, recipe, bad):
    t = tensors(work)
    t[key(Q0, "lora_B")][1, 0] = bad
    write_tensors(work, t)
    refused(work, recipe, "NaN" if bad != bad else "Inf", "diverged")


def test_random_init_is_refused(work, recipe):
    t = tensors(work)
    for m in recipe.modules():
        t[key(m, "lora_A")] = seeded_lora_a(recipe.init_seed + 1, m, recipe.rank, recipe.shapes[m][1])
    write_tensors(work, t)
    msg = refused(work, recipe, "LoRA A does not match the recipe's seeded initialisation",
                  f"init_fingerprint {recipe.init_fingerprint[:12]}", "fine-tune with the recipe's init")
    cosine = float(msg.split("cosine(A, A0) = ")[1].split(" ")[0])
    assert abs(cosine) < 0.2  # two independent uniform draws: about 0 (std 1/sqrt(N))
    assert validate_adapter(work, recipe, limits=Limits(init_min_cosine=-1.0, init_z=-1e9)).rank == recipe.rank


def test_large_drift_from_the_seeded_init_is_still_accepted(work, recipe):
    """A high learning rate can move A as far as its own norm; it stays correlated with A0."""
    t = tensors(work)
    g = torch.Generator().manual_seed(5)
    for m in recipe.modules():
        a0 = seeded_lora_a(recipe.init_seed, m, recipe.rank, recipe.shapes[m][1])
        t[key(m, "lora_A")] = a0 + torch.randn(a0.shape, generator=g) * a0.std() * 1.2
    write_tensors(work, t)
    s = validate_adapter(work, recipe)
    assert max(s.init_distance.values()) > 1.0 and 0.4 < s.init_cosine < 0.9


def test_an_adapter_of_known_init_is_not_held_to_the_init_check(work, recipe):
    """``Limits(init_known=True)`` (the server's own fine-tune made it): a drift that leaves A
    uncorrelated with A0 is accepted and its cosine still reported; every other check holds."""
    t = tensors(work)
    for m in recipe.modules():
        t[key(m, "lora_A")] = seeded_lora_a(recipe.init_seed + 7, m, recipe.rank, recipe.shapes[m][1])
    write_tensors(work, t)
    refused(work, recipe, "LoRA A does not match the recipe's seeded initialisation")
    s = validate_adapter(work, recipe, limits=Limits(init_known=True))
    assert abs(s.init_cosine) < 0.2
    t[key(Q0, "lora_B")][0, 0] = float("nan")
    write_tensors(work, t)
    refused(work, recipe, "NaN", limits=Limits(init_known=True))


def test_too_large_file_is_refused(work, recipe, good):
    with open(work / WEIGHTS_NAME, "ab") as f:
        f.write(b"\0" * 64)
    refused(work, recipe, "bytes after the last tensor")
    with open(work / WEIGHTS_NAME, "ab") as f:
        f.write(b"\0" * (Limits().weights_bytes(recipe)))
    refused(work, recipe, "more than the", "byte limit")
    shutil.copy(good / WEIGHTS_NAME, work / WEIGHTS_NAME)
    validate_adapter(work, recipe)
    refused(work, recipe, "more than the 100-byte limit", limits=Limits(max_weights_bytes=100))


def test_symlinked_file_in_folder_is_refused(work, recipe, tmp_path):
    target = tmp_path / "elsewhere.safetensors"
    shutil.move(work / WEIGHTS_NAME, target)
    os.symlink(target, work / WEIGHTS_NAME)
    refused(work, recipe, "symbolic link")


# ----------------------------------------------------------------------------- zips


def make_zip(path: Path, entries: list, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for e in entries:
            if isinstance(e, zipfile.ZipInfo):
                zf.writestr(e, b"")
            else:
                name, data = e
                zf.writestr(name, data)
    return path


def good_entries(good: Path, prefix: str = "") -> list:
    return [(prefix + f.name, f.read_bytes()) for f in (good / CONFIG_NAME, good / WEIGHTS_NAME)]


def test_zip_dotdot_entry_is_refused(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good) + [("../evil.txt", b"x")])
    refused(z, recipe, "'..'", workdir=tmp_path / "up")
    z = make_zip(tmp_path / "b.zip", good_entries(good, "a\\..\\..\\"))
    refused(z, recipe, "'..'", workdir=tmp_path / "up")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_absolute_path_is_refused(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good) + [("/etc/evil", b"x")])
    refused(z, recipe, "absolute path")
    z = make_zip(tmp_path / "b.zip", good_entries(good) + [("C:/evil", b"x")])
    refused(z, recipe, "absolute path")


def test_zip_symlink_is_refused(good, recipe, tmp_path):
    info = zipfile.ZipInfo("adapter_model.safetensors")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(good_entries(good)[0][0], good_entries(good)[0][1])
        zf.writestr(info, "/etc/passwd")
    refused(z, recipe, "symbolic link")


def test_zip_too_many_entries_is_refused(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good) + [(f"junk{i}.txt", b"x") for i in range(20)])
    refused(z, recipe, "entries", "limit of 16")


def test_zip_bomb_is_refused(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good) + [("README.md", b"\0" * (4 << 20))])
    refused(z, recipe, "zip bomb", "expands")
    # lower ratio but over the total uncompressed bound
    big = os.urandom(2 << 20)
    z = make_zip(tmp_path / "b.zip", good_entries(good) + [("README.md", big)], compression=zipfile.ZIP_STORED)
    refused(z, recipe, "limit", limits=Limits(max_zip_uncompressed=1 << 20, max_zip_bytes=8 << 20))
    z = make_zip(tmp_path / "c.zip", good_entries(good) + [("README.md", big)], compression=zipfile.ZIP_STORED)
    refused(z, recipe, "limit", limits=Limits(max_zip_bytes=1 << 20))


def test_zip_nesting_and_contents_rules(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good, "a/b/"))
    refused(z, recipe, "nested more than one folder")
    z = make_zip(tmp_path / "b.zip", good_entries(good) + [("adapter_model.bin", b"\x80\x04.")])
    refused(z, recipe, ".bin")
    z = make_zip(tmp_path / "c.zip", good_entries(good)[:1])
    refused(z, recipe, "found none")
    z = make_zip(tmp_path / "d.zip", good_entries(good) + good_entries(good, "x/"))
    refused(z, recipe, "several safetensors")
    (tmp_path / "e.zip").write_bytes(b"PK\x03\x04 not really a zip")
    refused(tmp_path / "e.zip", recipe, "zip")


def test_refused_zip_leaves_nothing_behind(good, recipe, tmp_path):
    cfg = json.loads((good / CONFIG_NAME).read_text())
    cfg["r"] = 7
    z = make_zip(tmp_path / "a.zip", [(CONFIG_NAME, json.dumps(cfg)), good_entries(good)[1]])
    dest = tmp_path / "uploads"
    refused(z, recipe, "rank r=7", workdir=dest)
    assert list(dest.iterdir()) == []
    z = make_zip(tmp_path / "b.zip", good_entries(good))
    checked = load_adapter(z, recipe, workdir=dest)
    assert checked.files.weights.parent.parent == dest.resolve() and checked.files.weights.exists()


def test_extract_zip_writes_only_fixed_names_under_dest(good, recipe, tmp_path):
    z = make_zip(tmp_path / "a.zip", good_entries(good, "adapter/") + [("adapter/notes.txt", b"hello")])
    out = extract_zip(z, tmp_path / "dest", Limits(), recipe)
    assert out.parent == (tmp_path / "dest").resolve()
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    out2 = extract_zip(z, tmp_path / "dest", Limits(), recipe)
    assert out2 != out  # a fresh folder each time


# ----------------------------------------------------------------------------- fuzz


def test_fuzzed_headers_raise_only_adapter_error(good, recipe, tmp_path_factory):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    folder = tmp_path_factory.mktemp("fuzz") / "adapter"
    shutil.copytree(good, folder)
    original = (good / WEIGHTS_NAME).read_bytes()
    n = struct.unpack("<Q", original[:8])[0]
    header = json.loads(original[8:8 + n])

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(10**310, 10**400)
        | st.floats(allow_nan=False) | st.text(max_size=8) | st.sampled_from(["LORA", "q_proj", "v_proj", "none"]),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)

    @st.composite
    def mutated(draw):
        kind = draw(st.sampled_from(["bytes", "flip", "field", "length", "json"]))
        if kind == "bytes":
            return draw(st.binary(max_size=300))
        if kind == "flip":
            data = bytearray(original)
            for _ in range(draw(st.integers(1, 8))):
                i = draw(st.integers(0, min(len(data) - 1, 8 + n + 16)))
                data[i] = draw(st.integers(0, 255))
            return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)
        if kind == "length":
            return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + original[8:]
        h = json.loads(json.dumps(header))
        if kind == "field":
            k = draw(st.sampled_from(sorted(h)))
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
            if field is None:
                h[k] = draw(json_values)
            else:
                h[k][field] = draw(json_values)
        else:
            h[draw(st.text(max_size=10))] = draw(json_values)
        body = json.dumps(h).encode()
        return struct.pack("<Q", len(body)) + body + original[8 + n:]

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutated())
    def check(data):
        (folder / WEIGHTS_NAME).write_bytes(data)
        try:
            validate_adapter(folder, recipe)
        except AdapterError:
            pass

    check()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.dictionaries(st.text(max_size=12), json_values, max_size=6) | json_values)
    def check_config(cfg):
        (folder / WEIGHTS_NAME).write_bytes(original)
        (folder / CONFIG_NAME).write_text(json.dumps(cfg))
        try:
            validate_adapter(folder, recipe)
        except AdapterError:
            pass

    check_config()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(["r", "lora_alpha", "target_modules", "peft_type", "bias", "lora_dropout"]), json_values)
    def check_config_field(field, value):
        cfg = json.loads((good / CONFIG_NAME).read_text())
        cfg[field] = value
        (folder / CONFIG_NAME).write_text(json.dumps(cfg))
        try:
            validate_adapter(folder, recipe)
        except AdapterError:
            pass

    check_config_field()
    shutil.copy(good / CONFIG_NAME, folder / CONFIG_NAME)

    fps = recipe_fingerprints(recipe)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.dictionaries(st.sampled_from(sorted(fps) + ["gtapp_recipe", "x"]), json_values, max_size=6))
    def check_sidecar(side):
        (folder / SIDECAR_NAME).write_text(json.dumps(side))
        try:
            validate_adapter(folder, recipe)
        except AdapterError:
            pass

    check_sidecar()
