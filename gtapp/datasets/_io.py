"""Safe, bounded readers for dataset files (JSON lines, JSON, CSV).

Everything here only *parses* data (``json``/``csv`` from the standard library): nothing from
a file is ever executed. Problems are reported as :class:`DatasetError` naming the file, the
line (or record) and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MAX_ROW_CHARS = 100_000          # one JSONL line / CSV row / JSON record, in characters
MAX_ROWS = 1_000_000             # examples (or raw rows) per file
MAX_FILE_BYTES = 2 * 1024 ** 3   # refuse to read bigger files into memory


class DatasetError(ValueError):
    """A dataset file is missing, malformed, too big or of the wrong kind."""


@dataclass(frozen=True)
class Limits:
    """Bounds applied while reading a file; pass bigger ones for unusually large data."""

    max_rows: int = MAX_ROWS
    max_row_chars: int = MAX_ROW_CHARS
    max_file_bytes: int = MAX_FILE_BYTES

    @classmethod
    def make(cls, max_rows: int | None = None, max_row_chars: int | None = None,
             max_file_bytes: int | None = None) -> "Limits":
        return cls(MAX_ROWS if max_rows is None else int(max_rows),
                   MAX_ROW_CHARS if max_row_chars is None else int(max_row_chars),
                   MAX_FILE_BYTES if max_file_bytes is None else int(max_file_bytes))


def type_name(v: Any) -> str:
    """JSON-ish name of a Python value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def check_extension(path: Path, allowed: tuple[str, ...], what: str = "") -> str:
    """Return the file's (lower-case) extension or raise if it is not one of ``allowed``."""
    ext = path.suffix.lower()
    if ext not in allowed:
        shown = f"'{ext}'" if ext else "no extension"
        raise DatasetError(f"{path}: unsupported file type ({shown}); expected "
                           f"{' or '.join(allowed)}{' for ' + what if what else ''}")
    return ext


def read_text(path: str | os.PathLike, limits: Limits) -> str:
    """Read a whole file as UTF-8 (a BOM is allowed) with a size bound."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise DatasetError(f"{p}: is a folder; expected a file")
    size = p.stat().st_size
    if size > limits.max_file_bytes:
        raise DatasetError(f"{p}: file is {size:,} bytes; the limit is {limits.max_file_bytes:,} "
                           "(max_file_bytes)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DatasetError(f"{p}: cannot read the file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{p} line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at "
                           f"column {col}); expected a UTF-8 text file") from None
    if not text.strip():
        raise DatasetError(f"{p}: file is empty")
    return text


def _loads(s: str, where: str) -> Any:
    try:
        return json.loads(s)
    except RecursionError:
        raise DatasetError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError and e.g. over-long integer literals
        if isinstance(e, json.JSONDecodeError):
            raise DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        raise DatasetError(f"{where}: invalid JSON ({e})") from None


def string_chars(obj: Any, _depth: int = 0) -> int:
    """Total characters of the strings (keys included) inside a parsed JSON value."""
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(len(str(k)) + string_chars(v, _depth + 1) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(string_chars(v, _depth + 1) for v in obj)
    return 8


def _too_long(where: str, n: int, limits: Limits) -> DatasetError:
    return DatasetError(f"{where}: row is {n:,} characters; the limit is {limits.max_row_chars:,} "
                        "(max_row_chars)")


def _too_many(path: Path, where: str, limits: Limits) -> DatasetError:
    return DatasetError(f"{path}: more than {limits.max_rows:,} rows (at {where}); "
                        "raise max_rows to load it")


def iter_records(path: str | os.PathLike, limits: Limits) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, value)`` for each record of a JSON-lines file or a JSON list.

    ``where`` is e.g. ``"data/train.jsonl line 7"`` or ``"data/train.json record 3"``. A file
    whose first non-blank character is ``[`` is read as one JSON list; otherwise one JSON value
    per non-blank line (blank lines are skipped).
    """
    p = Path(path)
    text = read_text(p, limits)
    if text.lstrip().startswith("["):
        data = _load_whole(p, text)
        if not isinstance(data, list):  # pragma: no cover - '[' always parses to a list
            raise DatasetError(f"{p}: expected a JSON list of records")
        if not data:
            raise DatasetError(f"{p}: file is empty (the JSON list has no records)")
        for i, rec in enumerate(data):
            where = f"{p} record {i}"
            if i >= limits.max_rows:
                raise _too_many(p, where, limits)
            n = string_chars(rec)
            if n > limits.max_row_chars:
                raise _too_long(where, n, limits)
            yield where, rec
        return
    count = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{p} line {lineno}"
        count += 1
        if count > limits.max_rows:
            raise _too_many(p, where, limits)
        if len(line) > limits.max_row_chars:
            raise _too_long(where, len(line), limits)
        try:
            value = _loads(line, where)
        except DatasetError:
            if count == 1 and line.strip() in ("{", "{\r"):
                raise DatasetError(f"{where}: expected one JSON object per line (JSON lines); "
                                   "the file looks like a single pretty-printed JSON object") from None
            raise
        yield where, value


def _load_whole(p: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise DatasetError(f"{p}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:
        raise DatasetError(f"{p}: invalid JSON ({e})") from None


def read_json_object(path: str | os.PathLike, limits: Limits) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(where, key, value)`` for each entry of a file holding one JSON object."""
    p = Path(path)
    text = read_text(p, limits)
    data = _load_whole(p, text)
    if not isinstance(data, dict):
        raise DatasetError(f"{p}: expected one JSON object (id -> record); got a {type_name(data)}")
    if not data:
        raise DatasetError(f"{p}: file is empty (the JSON object has no entries)")
    for i, (key, rec) in enumerate(data.items()):
        where = f"{p} record {i} ({key!r})"
        if i >= limits.max_rows:
            raise _too_many(p, where, limits)
        n = string_chars(rec)
        if n > limits.max_row_chars:
            raise _too_long(where, n, limits)
        yield where, key, rec


def iter_csv(path: str | os.PathLike, limits: Limits, required: tuple[str, ...],
             delimiter: str = ",") -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(where, row)`` for each data row of a CSV file with a header line."""
    p = Path(path)
    text = read_text(p, limits)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DatasetError(f"{p} line 1: malformed CSV header ({e})") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{p} line 1: missing column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(repr(c) for c in missing)}; expected a header with columns "
                           f"{', '.join(required)} (found: {', '.join(header) or 'nothing'})")
    count = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DatasetError(f"{p} line {start}: malformed CSV ({e})") from None
        if not any(c.strip() for c in row):
            continue
        where = f"{p} line {start}"
        count += 1
        if count > limits.max_rows:
            raise _too_many(p, where, limits)
        n = sum(len(c) for c in row)
        if n > limits.max_row_chars:
            raise _too_long(where, n, limits)
        if len(row) != len(header):
            raise DatasetError(f"{where}: expected {len(header)} fields ({', '.join(header)}); "
                               f"got {len(row)}")
        yield where, dict(zip(header, row))
    if count == 0:
        raise DatasetError(f"{p}: file is empty (a header but no rows)")


def require_object(where: str, value: Any, keys: tuple[str, ...]) -> dict:
    """Check ``value`` is a dict holding ``keys``; raise a message naming what was expected."""
    expected = f"expected a JSON object with keys {', '.join(keys)}"
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: {expected}; got a {type_name(value)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise DatasetError(f"{where}: {expected}; missing {', '.join(repr(k) for k in missing)}")
    return value


def require_str(where: str, obj: dict, key: str, *, allow_number: bool = False,
                allow_empty: bool = False, label: str | None = None) -> str:
    """``obj[key]`` as a string (numbers accepted when ``allow_number``)."""
    v = obj.get(key)
    name = label or key
    if allow_number and isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        kind = "a string or number" if allow_number else "a string"
        raise DatasetError(f"{where}: expected {name!r} to be {kind}; got a {type_name(v)}")
    if not allow_empty and not v.strip():
        raise DatasetError(f"{where}: expected {name!r} to be non-empty")
    return v
