"""Step 1, the container: a folder, a ``.zip`` or the peft files; pickle refused by name and
by content; zip entries that cannot escape, nest, multiply or explode; only the expected
files extracted, under fixed names, into a fresh folder."""

from __future__ import annotations

import dataclasses
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gtapp.lora.peft_format import CONFIG_NAME, SIDECAR_NAME, WEIGHTS_NAME
from gtapp.lora.recipe import LoraRecipe
from gtapp.lora.validate.common import AdapterError, Limits, _list_preview, _short

#: File suffixes of pickle-based (code-executing) or otherwise refused tensor formats.
FORBIDDEN_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib",
                                ".npy", ".npz", ".dill", ".mar"})

_PICKLE_MAGIC = re.compile(rb"\A\x80[\x01-\x05]")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_RATIO_CHECK_MIN_BYTES = 16 * 1024  # entries smaller than this cannot hurt whatever their ratio


def _sniff_pickle(head: bytes) -> str | None:
    if _PICKLE_MAGIC.match(head):
        return "a Python pickle (torch.save / pickle.dump)"
    if head.startswith(_ZIP_MAGICS):
        return "a zip archive (torch.save's default format)"


@dataclass(frozen=True)
class AdapterFiles:
    config: Path
    weights: Path
    sidecar: Path | None
    kind: str  # folder | zip | files


def _check_suffix(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise AdapterError(f"{name}: {suffix} files are pickle-based (they can run code when loaded) and are "
                           f"never accepted; upload the adapter as safetensors (peft's save_pretrained with "
                           f"safe_serialization=True, the default)")


def _regular_file(path: Path, what: str) -> Path:
    if path.is_symlink():
        raise AdapterError(f"{what}: is a symbolic link; upload the file itself")
    if not path.is_file():
        raise AdapterError(f"{what}: not found or not a regular file ({path})")
    return path


def _from_folder(folder: Path) -> AdapterFiles:
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError as e:
        raise AdapterError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    for name in names:
        _check_suffix(name)
    tensors = [n for n in names if n.lower().endswith(".safetensors")]
    if WEIGHTS_NAME not in names:
        hint = f" (found {_list_preview(tensors, 3)})" if tensors else ""
        raise AdapterError(f"{folder}: no {WEIGHTS_NAME}{hint}; an adapter folder holds {CONFIG_NAME} and "
                           f"{WEIGHTS_NAME} as written by peft's save_pretrained")
    if len(tensors) > 1:
        raise AdapterError(f"{folder}: several safetensors files ({_list_preview(tensors, 3)}); upload one adapter "
                           f"with only {WEIGHTS_NAME}")
    if CONFIG_NAME not in names:
        raise AdapterError(f"{folder}: no {CONFIG_NAME}; upload the folder written by peft's save_pretrained")
    sidecar = folder / SIDECAR_NAME if SIDECAR_NAME in names else None
    return AdapterFiles(_regular_file(folder / CONFIG_NAME, CONFIG_NAME),
                        _regular_file(folder / WEIGHTS_NAME, WEIGHTS_NAME),
                        _regular_file(sidecar, SIDECAR_NAME) if sidecar else None, "folder")


def _from_files(paths: Sequence[str | Path]) -> AdapterFiles:
    config = weights = sidecar = None
    if len(paths) > 3:
        raise AdapterError(f"expected {CONFIG_NAME} and {WEIGHTS_NAME} (and optionally {SIDECAR_NAME}), got "
                           f"{len(paths)} files")
    for p in map(Path, paths):
        _check_suffix(p.name)
        name = p.name.lower()
        if name.endswith(".safetensors"):
            if weights is not None:
                raise AdapterError("two safetensors files given; upload one adapter_model.safetensors")
            weights = p
        elif name == SIDECAR_NAME:
            sidecar = p
        elif name.endswith(".json"):
            if config is not None:
                raise AdapterError(f"two config files given; upload one {CONFIG_NAME}")
            config = p
        else:
            raise AdapterError(f"{p.name}: not an adapter file; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    if weights is None:
        raise AdapterError(f"no .safetensors weights file given; upload {WEIGHTS_NAME} with {CONFIG_NAME}")
    if config is None:
        raise AdapterError(f"no {CONFIG_NAME} given; upload it with {WEIGHTS_NAME}")
    return AdapterFiles(_regular_file(config, CONFIG_NAME), _regular_file(weights, WEIGHTS_NAME),
                        _regular_file(sidecar, SIDECAR_NAME) if sidecar else None, "files")


_DRIVE = re.compile(r"^[A-Za-z]:")


def _zip_entry_parts(name: str) -> list[str]:
    """Validate a zip entry name; return its path components (no trailing empty one)."""
    if "\x00" in name or len(name) > 512:
        raise AdapterError(f"zip entry {_short(repr(name), 60)}: invalid name; re-create the zip")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise AdapterError(f"zip entry {name!r}: absolute path; zip the adapter folder with relative paths")
    parts = norm.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if any(p == ".." for p in parts):
        raise AdapterError(f"zip entry {name!r}: contains '..' (would escape its folder); re-create the zip from "
                           f"the adapter folder")
    if not parts or any(p in ("", ".") for p in parts):
        raise AdapterError(f"zip entry {name!r}: empty or '.' path components; re-create the zip")
    return parts


def extract_zip(zip_path: str | Path, dest: str | Path, limits: Limits, recipe: LoraRecipe) -> Path:
    """Check a zip's entries and extract only the adapter files into a fresh folder under ``dest``.

    The files are written under their fixed names (never the entry names), so nothing can land
    outside the new folder. Returns that folder.
    """
    zip_path = Path(zip_path)
    fix = "zip the folder written by peft's save_pretrained (at the top or inside one folder)"
    if zip_path.is_symlink() or not zip_path.is_file():
        raise AdapterError(f"{zip_path.name}: not found or not a regular file")
    size = zip_path.stat().st_size
    if size > limits.zip_bytes(recipe):
        raise AdapterError(f"{zip_path.name}: {size} bytes, more than the {limits.zip_bytes(recipe)}-byte limit; "
                           f"{fix}")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_entries:
                raise AdapterError(f"{zip_path.name}: {len(infos)} entries, more than the limit of "
                                   f"{limits.max_zip_entries}; {fix}")
            seen, total, wanted = set(), 0, {}
            for info in infos:
                parts = _zip_entry_parts(info.filename)
                key = "/".join(parts)
                if key in seen:
                    raise AdapterError(f"zip entry {info.filename!r} appears twice; re-create the zip")
                seen.add(key)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == stat.S_IFLNK:
                    raise AdapterError(f"zip entry {info.filename!r} is a symbolic link; zip the files themselves")
                if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise AdapterError(f"zip entry {info.filename!r} is a special file; {fix}")
                if info.flag_bits & 0x1:
                    raise AdapterError(f"zip entry {info.filename!r} is encrypted; upload an unencrypted zip")
                if parts[0] == "__MACOSX":
                    continue  # macOS resource forks: ignored, never extracted
                is_dir = info.is_dir()
                if len(parts) > (1 if is_dir else 2):
                    raise AdapterError(f"zip entry {info.filename!r} is nested more than one folder deep; {fix}")
                if is_dir:
                    continue
                _check_suffix(parts[-1])
                if info.file_size >= _RATIO_CHECK_MIN_BYTES and \
                        info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
                    raise AdapterError(
                        f"zip entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                        f"({info.compress_size} -> {info.file_size} bytes), more than the allowed "
                        f"{limits.max_compression_ratio:g}x: refused as a possible zip bomb; {fix}")
                total += info.file_size
                if total > limits.zip_uncompressed(recipe):
                    raise AdapterError(f"{zip_path.name}: entries expand to more than the "
                                       f"{limits.zip_uncompressed(recipe)}-byte limit; {fix}")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                              zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                    raise AdapterError(f"zip entry {info.filename!r} uses an unsupported compression method; {fix}")
                if parts[-1] in (CONFIG_NAME, WEIGHTS_NAME, SIDECAR_NAME):
                    folder = "/".join(parts[:-1])
                    wanted.setdefault(folder, {})[parts[-1]] = info
            tensors = [k for k in seen if k.lower().endswith(".safetensors")]
            if len(tensors) > 1:
                raise AdapterError(f"{zip_path.name}: several safetensors files ({_list_preview(tensors, 3)}); "
                                   f"upload one adapter")
            complete = {f: w for f, w in wanted.items() if CONFIG_NAME in w and WEIGHTS_NAME in w}
            if len(complete) != 1:
                raise AdapterError(f"{zip_path.name}: expected one folder (or the zip's top level) holding "
                                   f"{CONFIG_NAME} and {WEIGHTS_NAME}, found "
                                   f"{len(complete) or 'none'}; {fix}")
            files = next(iter(complete.values()))
            dest = Path(dest)
            dest.mkdir(parents=True, exist_ok=True)
            out = Path(tempfile.mkdtemp(prefix="adapter-", dir=dest)).resolve()
            if not out.is_relative_to(dest.resolve()):  # pragma: no cover - mkdtemp under dest
                raise AdapterError("extraction folder escaped its destination")
            try:
                _extract_members(zf, files, out, limits, recipe, fix)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            return out
    except AdapterError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError,
            ValueError, OverflowError) as e:
        raise AdapterError(f"{zip_path.name}: not a readable zip ({_short(e, 120)}); {fix}") from None
    except Exception as e:  # zlib.error, lzma/bz2 errors, struct.error ...
        raise AdapterError(f"{zip_path.name}: corrupt zip ({type(e).__name__}: {_short(e, 120)}); {fix}") from None


def _extract_members(zf: zipfile.ZipFile, files: dict, out: Path, limits: Limits, recipe: LoraRecipe,
                     fix: str) -> None:
    """Copy the chosen entries to fixed names in ``out``, never past their declared or allowed size."""
    limit = {CONFIG_NAME: limits.max_config_bytes, SIDECAR_NAME: limits.max_sidecar_bytes,
             WEIGHTS_NAME: limits.weights_bytes(recipe)}
    for name, info in files.items():
        cap = min(info.file_size, limit[name])
        if info.file_size > limit[name]:
            raise AdapterError(f"zip entry {info.filename!r}: {info.file_size} bytes, more than the "
                               f"{limit[name]}-byte limit for {name}; {fix}")
        written = 0
        with zf.open(info) as src, open(out / name, "xb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > cap:
                    raise AdapterError(f"zip entry {info.filename!r} expands beyond its declared size; "
                                       f"refused as a possible zip bomb")
                dst.write(chunk)


def locate_files(source: str | Path | Sequence[str | Path], recipe: LoraRecipe, limits: Limits,
                 workdir: str | Path) -> AdapterFiles:
    """Resolve an upload (folder / zip / files) to the adapter's files, extracting a zip into ``workdir``."""
    if isinstance(source, (list, tuple)):
        return _from_files(source)
    path = Path(source)
    if path.is_symlink():
        raise AdapterError(f"{path.name}: is a symbolic link; upload the adapter itself")
    if path.is_dir():
        return _from_folder(path)
    if not path.exists():
        raise AdapterError(f"{path}: no such file or folder")
    _check_suffix(path.name)
    if path.suffix.lower() == ".zip":
        folder = extract_zip(path, workdir, limits, recipe)
        files = _from_folder(folder)
        return dataclasses.replace(files, kind="zip")
    if path.suffix.lower() == ".safetensors":
        raise AdapterError(f"{path.name}: a weights file alone cannot be checked; upload it together with its "
                           f"{CONFIG_NAME} (the folder, a zip of it, or both files)")
    raise AdapterError(f"{path.name}: not an adapter; upload the folder written by peft's save_pretrained, a .zip "
                       f"of it, or its {CONFIG_NAME} and {WEIGHTS_NAME}")
