"""Upload: datasets and adapters validated at once, errors in words, stored per organisation,
Gradio's temporary copy deleted."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from ui_helpers import staged, write_jsonl

from ui import upload
from ui.service import UploadError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


def gradio_copy(tmp_path: Path, src: Path, name: str) -> str:
    """Stand-in for the file Gradio writes to its temp folder: <tmp>/<hash>/<browser's name>."""
    d = tmp_path / "gradio" / f"h{len(list((tmp_path).glob('gradio/*')))}"
    d.mkdir(parents=True, exist_ok=True)
    return str(shutil.copyfile(src, d / name))


def test_dataset_upload_stores_previews_and_deletes_the_temp_copy(svc, users, tmp_path):
    src = write_jsonl(tmp_path / "src.jsonl", [{"prompt": f"q{i}?", "answer": str(i)} for i in range(25)])
    path = gradio_copy(tmp_path, src, "sums.jsonl")
    msg, preview = upload.upload_dataset(svc, path, upload.USER_FORMAT, "numeric_exact_match", "", 3, 1e-5,
                                         users["alice"])
    assert msg.startswith("✔") and "25 examples" in msg and "ε=3" in msg, msg
    assert preview["headers"] == ["prompt", "answer", "references"] and len(preview["data"]) == 10
    assert not Path(path).exists()  # Gradio's copy is gone; the data lives in the artifact store
    (ds,) = svc.list_datasets(svc.who(users["alice"]))
    assert ds["name"] == "sums" and ds["examples"] == 25 and ds["budget"] == 3 and ds["metric"] == "numeric_exact_match"
    assert svc.dataset_preview(svc.who(users["carol"]), ds["id"])[0]["prompt"] == "q0?"  # same organisation


def test_bad_rows_are_reported_with_their_line_number(svc, users, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(UploadError, match=r"line 2.*answer") as e:
        svc.ingest_dataset(svc.who(users["alice"]), staged(svc, src), "mine.jsonl")
    assert str(tmp_path) not in str(e.value)  # no server paths in messages
    src.write_text('{"prompt": "a", "answer": "b"}\nnot json\n')
    with pytest.raises(UploadError, match="line 2"):
        svc.ingest_dataset(svc.who(users["alice"]), staged(svc, src), "mine.jsonl")
    csv = tmp_path / "x.csv"
    csv.write_text("question,answer\nq,a\n")
    with pytest.raises(UploadError, match="prompt"):
        svc.ingest_dataset(svc.who(users["alice"]), staged(svc, csv), "x.csv")
    assert svc.list_datasets(svc.who(users["alice"])) == []


def test_known_format_duplicate_name_and_size_limit(svc, users, tmp_path, settings):
    who = svc.who(users["alice"])
    res = svc.ingest_dataset(who, staged(svc, FIXTURES / "aqua_rat" / "train.json"), "train.json", "aqua_rat")
    assert res["format"] == "aqua_rat" and res["metric"] == "letter_exact_match" and res["examples"] > 3
    assert res["preview"][0]["answer"] in "ABCDE"
    with pytest.raises(UploadError, match="already has a dataset named 'train'"):
        svc.ingest_dataset(who, staged(svc, FIXTURES / "aqua_rat" / "train.json"), "train.json", "aqua_rat")
    # the other organisation may use the same name
    assert svc.ingest_dataset(svc.who(users["bob"]), staged(svc, FIXTURES / "aqua_rat" / "train.json"), "train.json",
                              "aqua_rat")["name"] == "train"
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"prompt": "p", "answer": "a"}\n' * 40_000)  # ~1.2 MiB
    svc.settings = settings.model_copy(update={"max_upload_mb": 1})
    with pytest.raises(UploadError, match="limited to 1 MiB"):
        svc.ingest_dataset(who, staged(svc, big), "big.jsonl")


def test_nothing_typed_becomes_a_path(svc, users, tmp_path):
    from ui.service import safe_filename

    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..\\..\\x.jsonl") == "x.jsonl"
    assert safe_filename(".hidden") == "hidden" and safe_filename("") == "upload"
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "answer": "a"}, {"prompt": "q", "answer": "b"}])
    res = svc.ingest_dataset(svc.who(users["alice"]), staged(svc, src), "../../evil name.jsonl", name="ok")
    assert res["id"] and not (tmp_path.parent / "evil name.jsonl").exists()
    with pytest.raises(UploadError, match="slashes"):
        svc.ingest_dataset(svc.who(users["alice"]), staged(svc, src), "a.jsonl", name="a/b")


def test_adapter_upload_zip_and_files_and_refusals(svc, users, pair_id, adapter_dir, tmp_path, recipes):
    who = svc.who(users["alice"])
    # a zip of the folder: accepted, stored, summarised
    zpath = tmp_path / "my-adapter.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(adapter_dir.iterdir()):
            zf.write(f, f"my-adapter/{f.name}")
    gz = gradio_copy(tmp_path, zpath, "my-adapter.zip")
    status, summary_md, fig, modules = upload.upload_adapter(svc, [gz], pair_id, "", users["alice"])
    assert status.startswith("✔") and "4 modules, rank 2" in status, status
    assert "matches the pair's TinyLM recipe" in summary_md and not Path(gz).exists()
    assert [t.type for t in fig.data] == ["bar"] and len(fig.data[0].y) == recipes.tiny.num_layers
    assert len(modules["data"]) == len(recipes.tiny.shapes)
    (a,) = svc.list_adapters(who)
    assert a["origin"] == "uploaded" and a["model"] == "tiny" and a["name"].startswith("my-adapter")
    name, data = svc.adapter_zip(who, a["id"])
    assert name.endswith(".zip")
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(zf.namelist())

    # a pickle named .safetensors, next to a valid config: refused, saying why
    pk = tmp_path / "pk"
    pk.mkdir()
    import pickle

    (pk / "adapter_model.safetensors").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    with pytest.raises(UploadError, match="pickle"):
        svc.ingest_adapter(who, [(staged(svc, adapter_dir / "adapter_config.json"), "adapter_config.json"),
                                 (staged(svc, pk / "adapter_model.safetensors"), "adapter_model.safetensors")], pair_id)
    # a .bin is refused by name; too many files are refused before anything runs
    with pytest.raises(UploadError, match="pickle-based"):
        svc.ingest_adapter(who, [(staged(svc, pk / "adapter_model.safetensors"), "adapter_model.bin")], pair_id)
    with pytest.raises(UploadError, match="at most 3 files"):
        svc.ingest_adapter(who, [(staged(svc, zpath), f"f{i}.json") for i in range(4)], pair_id)
    assert len(svc.list_adapters(who)) == 1


def test_adapter_of_another_recipe_is_refused(svc, users, pair_id, tmp_path):
    import torch

    from testkit.synthetic import random_factors, small_recipes
    from gtapp.lora.peft_format import write_peft_adapter

    other = small_recipes(rank=4).tiny
    out = write_peft_adapter(random_factors(other, generator=torch.Generator().manual_seed(1)), other, tmp_path / "o")
    paths = [(staged(svc, out / n), n) for n in ("adapter_config.json", "adapter_model.safetensors")]
    with pytest.raises(UploadError, match=r"(?i)rank"):
        svc.ingest_adapter(svc.who(users["alice"]), paths, pair_id)
