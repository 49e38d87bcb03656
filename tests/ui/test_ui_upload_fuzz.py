"""Hostile dataset uploads through the Upload tab (ui.upload.upload_dataset -> Service.ingest_dataset):
every file is either stored or refused with UploadError whose message names the file (never a
server path) and says what was wrong; a refusal leaves no dataset row and no stored object;
Gradio's temporary copy and the server's private upload folder are always deleted; links,
pipes and devices are refused without being read."""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.models import Dataset
from ui import upload
from ui.service import KNOWN_FORMATS, USER_FORMAT, UploadError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GOOD = "".join(json.dumps({"prompt": f"q{i}?", "answer": str(i)}) + "\n" for i in range(5)).encode()
_SAYS_WHAT = re.compile(r"expected|limit|empty|need at least|invalid|not valid|unsupported|malformed|missing|"
                        r"nested|NUL|link|not a regular file|could not be read|already has")
_counter = itertools.count()


def _state(svc) -> tuple:
    with svc.session() as s:
        rows = s.scalar(select(func.count()).select_from(Dataset))
    objects = sorted(str(p) for p in svc.store.objects_dir.rglob("*") if p.is_file())
    return rows, objects


def _leftover_uploads(svc) -> list:
    root = svc.dashboard_dir / "uploads"
    return sorted(os.listdir(root)) if root.exists() else []


def gradio_file(tmp_path: Path, name: str, data: bytes | None = None) -> Path:
    """Where Gradio puts an upload: <tmp>/gradio/<hash>/<the browser's file name>."""
    d = tmp_path / "gradio" / f"h{next(_counter)}"
    d.mkdir(parents=True)
    p = d / name
    if data is not None:
        p.write_bytes(data)
    return p


def submit(svc, users, path: Path, fmt: str = USER_FORMAT, metric: str = "exact_match", name: str | None = None):
    """Upload like the dashboard does; returns the status line or the (checked) UploadError."""
    before = _state(svc)
    name = name if name is not None else f"fuzz-{next(_counter)}"
    try:
        msg, _preview = upload.upload_dataset(svc, str(path), fmt, metric, name, None, 1e-5, users["alice"])
    except UploadError as e:
        text = str(e)
        assert _state(svc) == before, "a refused upload changed the database or the artifact store"
        assert Path(path.name).stem[:20].replace(" ", "_") in text or path.suffix in text, \
            f"message does not name the file: {text!r}"
        assert _SAYS_WHAT.search(text), f"message does not say what was wrong: {text!r}"
        assert str(svc.settings.data_dir.resolve()) not in text and str(path.parent) not in text, text
        assert "Traceback" not in text and len(text) < 700 and text.isprintable(), text
        result = e
    else:
        rows, _ = _state(svc)
        assert rows == before[0] + 1 and msg.startswith("✔"), msg
        result = msg
    assert not os.path.lexists(path), "Gradio's temporary copy was not deleted"
    assert _leftover_uploads(svc) == [], "the server's private upload folder was not deleted"
    return result


# ------------------------------------------------------------------------ properties

NAMES = ["mine.jsonl", "mine.json", "mine.csv", "mine.tsv", "model.bin", "model.pt", "data.pkl", "data.zip",
         "train.jsonl", "drop_dataset_train.json", "noext", "UP.JSONL", "weird name!.csv"]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=2000) | st.sampled_from([GOOD, GOOD[:-7], GOOD.replace(b"\n", b"\x00\n"),
                                                         GOOD.decode().encode("utf-16"), b"\xff" + GOOD]),
       name=st.sampled_from(NAMES), fmt=st.sampled_from([USER_FORMAT, *KNOWN_FORMATS]))
def test_random_uploads(svc, users, tmp_path, data, name, fmt):
    submit(svc, users, gradio_file(tmp_path, name, data), fmt=fmt)


# ------------------------------------------------------------------------ explicit cases

def _torch_like_zip() -> bytes:  # torch.save writes a zip holding a pickle
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"weight": [1.0, 2.0]}, protocol=2))
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _zip_of_good() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mine.jsonl", GOOD)
    return buf.getvalue()


PICKLE = pickle.dumps({"prompt": "a", "answer": "b"}, protocol=4)


MODEL_FILES = [  # (browser's file name, content, what the refusal says)
    ("model.bin", PICKLE, "unsupported file type ('.bin')"),
    ("model.pt", _torch_like_zip(), "unsupported file type ('.pt')"),
    ("data.pkl", PICKLE, "unsupported file type ('.pkl')"),
    ("data.zip", _zip_of_good(), "unsupported file type ('.zip')"),
    ("pickled.jsonl", PICKLE, "is a Python pickle"),
    ("pickled.json", PICKLE, "is a Python pickle"),
    ("weights.json", _torch_like_zip(), "is a zip archive"),
    ("zipped.json", _zip_of_good(), "is a zip archive"),
]


@pytest.mark.parametrize("fmt", [USER_FORMAT, "gsm8k", "drop"])
def test_model_files_and_archives_are_refused(svc, users, tmp_path, fmt):
    for name, data, says in MODEL_FILES:  # one deployment for all (its set-up is the slow part)
        e = submit(svc, users, gradio_file(tmp_path, name, data), fmt=fmt)
        assert isinstance(e, UploadError), (name, e)
        if fmt == "drop" and name.endswith(".jsonl"):
            says = "unsupported file type ('.jsonl')"  # DROP is one .json object
        assert says in str(e) and str(e).startswith(name), (name, str(e))


BAD_CONTENT = [
    ("latin.csv", "prompt,answer\ncafé,crème\nb,c\n".encode("latin-1"),
     "latin.csv line 2: not valid UTF-8 (byte 0xe9 at column 4)"),
    ("bom16.jsonl", GOOD.decode().encode("utf-16"), "bom16.jsonl: the file is UTF-16 text"),
    ("le16.csv", "prompt,answer\na,b\nc,d\n".encode("utf-16-le"), "le16.csv line 1: contains a NUL byte"),
    ("be32.jsonl", GOOD.decode().encode("utf-32"), "be32.jsonl: the file is UTF-32 text"),
    ("broken.jsonl", GOOD[:40] + b"\xed\xa0\x80" + GOOD[40:], "broken.jsonl line 2: not valid UTF-8"),
    ("surrogate.jsonl", b'{"prompt": "\\ud800", "answer": "a"}\n' + GOOD, "unpaired surrogate"),
    ("nan.jsonl", b'{"prompt": "p", "answer": NaN}\n' + GOOD, "NaN is not valid JSON"),
    ("empty.csv", b"", "empty.csv: file is empty"),
    ("blank.jsonl", b" \n\t\r\n", "blank.jsonl: file is empty"),
    ("header.csv", b"prompt,answer\n", "header.csv: file is empty (a header but no rows)"),
    ("deep.jsonl", b'{"prompt": "p", "answer": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n" + GOOD,
     "nested too deeply"),
    ("long.jsonl", b'{"prompt": "' + b"x" * 1_000_000 + b'", "answer": "a"}\n' + GOOD, "row is 1,000,0"),
]


def test_bad_encodings_and_bad_content(svc, users, tmp_path):
    for name, data, says in BAD_CONTENT:
        e = submit(svc, users, gradio_file(tmp_path, name, data))
        assert isinstance(e, UploadError) and says in str(e), (name, str(e))


def test_a_symlink_is_refused_without_following_it(svc, users, tmp_path):
    secret = tmp_path / "server-secret.jsonl"
    secret.write_bytes(GOOD)
    link = gradio_file(tmp_path, "mine.jsonl")
    link.symlink_to(secret)
    e = submit(svc, users, link)
    assert isinstance(e, UploadError) and "mine.jsonl: the upload is a link, not a file" in str(e), str(e)
    assert secret.read_bytes() == GOOD  # the link was removed, not its target


def test_links_to_devices_and_pipes_are_refused_without_reading(svc, users, tmp_path):
    zero = gradio_file(tmp_path, "zero.jsonl")
    zero.symlink_to("/dev/zero")  # followed, this would be copied for ever
    assert "a link" in str(submit(svc, users, zero))
    if hasattr(os, "mkfifo"):
        fifo = gradio_file(tmp_path, "pipe.jsonl")
        os.mkfifo(fifo)  # opened without O_NONBLOCK, this would block for ever
        e = submit(svc, users, fifo)
        assert isinstance(e, UploadError) and "pipe.jsonl: the upload is not a regular file" in str(e), str(e)


def test_a_folder_is_refused(svc, users, tmp_path):
    d = gradio_file(tmp_path, "folder.jsonl")
    d.mkdir()
    before = _state(svc)
    with pytest.raises(UploadError, match="folder.jsonl: the upload is not a regular file"):
        upload.upload_dataset(svc, str(d), USER_FORMAT, "exact_match", "", None, 1e-5, users["alice"])
    assert _state(svc) == before and _leftover_uploads(svc) == []
    shutil.rmtree(d)


def test_over_size_uploads(svc, users, tmp_path, settings):
    svc.settings = settings.model_copy(update={"max_upload_mb": 1})
    big = gradio_file(tmp_path, "big.jsonl", b'{"prompt": "p", "answer": "a"}\n' * 40_000)  # ~1.2 MiB
    e = submit(svc, users, big)
    assert isinstance(e, UploadError) and re.search(r"big.jsonl is 1\.\d MiB; uploads are limited to 1 MiB", str(e))
    # a sparse file claiming 5 GiB is refused from its size, without reading it
    sparse = gradio_file(tmp_path, "sparse.csv")
    with open(sparse, "wb") as f:
        f.truncate(5 << 30)
    e = submit(svc, users, sparse)
    assert isinstance(e, UploadError) and "sparse.csv is 5120.0 MiB" in str(e), str(e)
    # exactly at the limit: read, then refused for its content, not its size
    edge = gradio_file(tmp_path, "edge.jsonl", b" " * (1 << 20))
    e = submit(svc, users, edge)
    assert isinstance(e, UploadError) and "edge.jsonl: file is empty" in str(e), str(e)


def test_a_good_upload_after_refusals_is_stored(svc, users, tmp_path):
    for name, data in [("a.bin", PICKLE), ("b.jsonl", b"\xff\xfe"), ("c.csv", b"prompt,answer\n")]:
        assert isinstance(submit(svc, users, gradio_file(tmp_path, name, data)), UploadError)
    msg = submit(svc, users, gradio_file(tmp_path, "good.jsonl", GOOD), name="good")
    assert isinstance(msg, str) and "5 examples" in msg
    (ds,) = svc.list_datasets(svc.who(users["alice"]))
    assert ds["name"] == "good" and ds["examples"] == 5


def test_a_failure_while_storing_leaves_no_half_row(svc, users, tmp_path, monkeypatch):
    def broken(data):
        raise OSError("disk full")

    monkeypatch.setattr(svc.store, "put_bytes", broken)
    path = gradio_file(tmp_path, "good.jsonl", GOOD)
    before = _state(svc)
    with pytest.raises(OSError, match="disk full"):
        upload.upload_dataset(svc, str(path), USER_FORMAT, "exact_match", "x", None, 1e-5, users["alice"])
    assert _state(svc) == before and not path.exists() and _leftover_uploads(svc) == []
