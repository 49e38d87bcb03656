"""The artifact store: content addressing, atomic writes, folders, confinement."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from storage.artifacts import ArtifactError, ArtifactStore, atomic_write_json


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_put_and_read_bytes_is_content_addressed(store):
    sha = store.put_bytes(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert store.read_bytes(sha) == b"hello" and store.has(sha) and store.size(sha) == 5
    assert store.put_bytes(b"hello") == sha  # dedup
    assert not os.access(store.path(sha), os.W_OK) or os.geteuid() == 0  # stored read-only
    assert oct(store.path(sha).stat().st_mode & 0o777) == oct(0o444)
    assert store.verify() == []


def test_streaming_writer_abort_leaves_no_object(store):
    with pytest.raises(RuntimeError):
        with store.writer() as w:
            w.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert list(store.iter_objects()) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_crashed_writer_leaves_only_tmp_which_is_swept(store):
    w = store.writer()
    w.write(b"half")  # never committed: as if the process died
    assert list(store.iter_objects()) == []
    assert store.sweep_tmp(older_than_s=0) == 1
    assert list(store.tmp_dir.iterdir()) == []


def test_tree_roundtrip_and_manifest(store, tmp_path):
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text('{"r": 2}')
    (src / "sub" / "w.bin").write_bytes(os.urandom(1000))
    sha = store.put_tree(src)
    files = store.manifest(sha)
    assert set(files) == {"adapter_config.json", "sub/w.bin"}
    out = store.materialize(sha, tmp_path / "copy")
    assert (out / "sub" / "w.bin").read_bytes() == (src / "sub" / "w.bin").read_bytes()
    assert store.put_tree(src) == sha  # same content, same id


def test_symlinks_are_refused(store, tmp_path):
    src = tmp_path / "evil"
    src.mkdir()
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="symlink"):
        store.put_tree(src)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "abc", "/etc/passwd", "A" * 64, "0" * 63 + "/", None, 5])
def test_lookups_by_hash_only(store, bad):
    with pytest.raises(ArtifactError):
        store.path(bad)


def test_manifest_with_escaping_names_is_refused(store, tmp_path):
    good = store.put_bytes(b"x")
    for name in ("../escape", "/abs", "a/../../b"):
        sha = store.put_json({"format": "gtapp-tree/1", "files": {name: {"sha256": good, "size": 1}}})
        with pytest.raises(ArtifactError):
            store.materialize(sha, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_run_dirs_are_confined_and_self_describing(store):
    d = store.run_dir(7)
    assert d == store.runs_dir / "7"
    for bad in (0, -1, "7", "../7", True):
        with pytest.raises(ArtifactError):
            store.run_dir(bad)
    with pytest.raises(ArtifactError):
        store.run_file(7, "../../secret")
    atomic_write_json(store.run_file(7, "results.json"), {"ok": True})
    assert json.loads(store.run_file(7, "results.json").read_text()) == {"ok": True}
    assert [p.name for p in d.iterdir()] == ["results.json"]  # no temp file left behind


def test_verify_detects_corruption(store):
    sha = store.put_bytes(b"data")
    p = store.path(sha)
    os.chmod(p, 0o644)
    p.write_bytes(b"tampered")
    assert store.verify() == [sha]
