"""Safe, bounded readers for dataset files (JSON lines, JSON, CSV).

Everything here only *parses* data (``json``/``csv`` from the standard library): nothing from
a file is ever executed. Problems are reported as :class:`DatasetError` naming the file, the
line (or record) and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MAX_ROW_CHARS = 100_000          # one JSONL line / CSV row / JSON record, in characters
MAX_ROWS = 1_000_000             # examples (or raw rows) per file
MAX_FILE_BYTES = 2 * 1024 ** 3   # refuse to read bigger files into memory
MAX_DEPTH = 64                   # nesting levels of lists/objects in one JSON record
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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


def shorten(v: Any, n: int = 60) -> str:
    """``repr`` of a value from a file, cut to about ``n`` characters, for messages."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def show_names(names: list[str], most: int = 10, noun: str = "columns") -> str:
    """Names (columns, labels) for a message: plain when short and printable, else quoted and cut."""
    shown = [h if (h.isprintable() and len(h) <= 40) else shorten(h, 40) for h in names[:most]]
    more = f", ... ({len(names)} {noun})" if len(names) > most else ""
    return ", ".join(shown) + more


def check_extension(path: Path, allowed: tuple[str, ...], what: str = "") -> str:
    """Return the file's (lower-case) extension or raise if it is not one of ``allowed``."""
    ext = path.suffix.lower()
    if ext not in allowed:
        shown = f"'{ext}'" if ext else "no extension"
        raise DatasetError(f"{path}: unsupported file type ({shown}); expected "
                           f"{' or '.join(allowed)}{' for ' + what if what else ''}")
    return ext


def read_text(path: str | os.PathLike, limits: Limits) -> str:
    """Read a whole file as UTF-8 (a BOM is allowed) with a size bound.

    UTF-16/32 files, binary files (zip, pickle, safetensors, gzip), invalid UTF-8 and NUL
    bytes are refused with a message saying what the file looks like and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise DatasetError(f"{p}: is a folder; expected a file")
    if not p.is_file():
        raise DatasetError(f"{p}: is not a regular file (a device, pipe or socket); expected a text file")
    size = p.stat().st_size
    if size > limits.max_file_bytes:
        raise _too_big(p, size, limits)
    try:
        with open(p, "rb") as f:
            data = f.read(limits.max_file_bytes + 1)  # bounded even if the file grows meanwhile
    except OSError as e:
        raise DatasetError(f"{p}: cannot read the file ({e.strerror or e})") from None
    if len(data) > limits.max_file_bytes:
        raise _too_big(p, len(data), limits)
    return decode_text(p, data)


def _too_big(p: Path, size: int, limits: Limits) -> DatasetError:
    return DatasetError(f"{p}: file is {size:,} bytes; the limit is {limits.max_file_bytes:,} "
                        "(max_file_bytes): split it into smaller files")


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def binary_kind(data: bytes) -> str | None:
    """What a non-text file looks like ('a zip archive ...'), or None."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "a zip archive (a .zip, .xlsx or PyTorch .pt/.bin file)"
    if data[:2] == b"\x1f\x8b":
        return "gzip-compressed"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a Python pickle (e.g. a PyTorch .bin/.pt file)"
    if data[:6] == b"\x93NUMPY":
        return "a NumPy array file"
    if len(data) > 9 and data[8:9] == b"{" and 2 <= int.from_bytes(data[:8], "little") <= len(data) - 8:
        return "a safetensors file (model weights)"
    return None


def decode_text(p: Path, data: bytes) -> str:
    """``data`` (the bytes of file ``p``) as text; see :func:`read_text`."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            raise DatasetError(f"{p}: the file is {enc} text (it starts with a {enc} byte-order mark); "
                               "expected UTF-8: save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        kind = binary_kind(data)
        if kind:
            raise DatasetError(f"{p}: the file is {kind}, not text; expected a UTF-8 text file "
                               "(JSON lines, JSON or CSV)") from None
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{p} line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at "
                           f"column {col}); expected a UTF-8 text file: save it as UTF-8 (it may be "
                           "Latin-1 or Windows-1252 now)") from None
    nul = text.find("\x00")
    if nul >= 0:
        kind = binary_kind(data)
        if kind:
            raise DatasetError(f"{p}: the file is {kind}, not text; expected a UTF-8 text file "
                               "(JSON lines, JSON or CSV)")
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        hint = ("it looks like UTF-16 text: save it as UTF-8" if text.count("\x00") * 4 >= len(text)
                else "remove the NUL bytes (or write them as \\u0000 inside JSON strings)")
        raise DatasetError(f"{p} line {line}: contains a NUL byte (column {col}); expected a UTF-8 text "
                           f"file: {hint}")
    if not text.strip():
        raise DatasetError(f"{p}: file is empty (nothing but whitespace); expected at least one record")
    return text


class _BadValue(Exception):
    """A JSON value Python's parser accepts but a dataset must not hold (NaN, 1e999)."""


def _parse_constant(name: str) -> Any:
    raise _BadValue(f"{name} is not valid JSON; expected a string or a finite number")


def _parse_float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):
        raise _BadValue(f"the number {s[:30]}{'...' if len(s) > 30 else ''} is too large; expected a "
                        "finite number (or write it as a string)")
    return x


def _json(text: str) -> Any:
    return json.loads(text, parse_float=_parse_float, parse_constant=_parse_constant)


def _json_error(where: str, e: Exception, whole: bool = False) -> DatasetError:
    """The message for anything ``json.loads`` raised on the text at ``where``."""
    if isinstance(e, RecursionError):
        return DatasetError(f"{where}: JSON nested too deeply; expected records at most {MAX_DEPTH} "
                            "levels deep")
    if isinstance(e, _BadValue):
        return DatasetError(f"{where}: {e}")
    if isinstance(e, json.JSONDecodeError):
        if whole:
            hint = ("; expected one JSON list [...] (or one JSON object per line, JSON lines)"
                    if e.msg == "Extra data" else "")
            return DatasetError(f"{where} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno}){hint}")
        return DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); expected one JSON "
                            "object per line (JSON lines)")
    if "integer string conversion" in str(e):  # a number with more than sys.get_int_max_str_digits()
        return DatasetError(f"{where}: invalid JSON (a number has thousands of digits); expected numbers "
                            "of normal size (write long digit strings as strings)")
    return DatasetError(f"{where}: invalid JSON ({e})")


def _loads(s: str, where: str) -> Any:
    try:
        return _json(s)
    except (RecursionError, _BadValue, ValueError) as e:  # JSONDecodeError is a ValueError
        raise _json_error(where, e) from None


def _walk(obj: Any, depth_limit: int = MAX_DEPTH) -> tuple[int, int, str | None]:
    """(characters, nesting depth, first string with an unpaired surrogate) of a parsed JSON
    value, without recursion; stops descending past ``depth_limit``."""
    chars, depth, bad = 0, 0, None
    stack = [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            chars += len(v)
            if bad is None and _SURROGATE.search(v):
                bad = v
        elif isinstance(v, (dict, list)):
            depth = max(depth, d)
            if d > depth_limit:
                continue
            if isinstance(v, dict):
                for k, x in v.items():
                    k = str(k)
                    chars += len(k)
                    if bad is None and _SURROGATE.search(k):
                        bad = k
                    stack.append((x, d + 1))
            else:
                stack.extend((x, d + 1) for x in v)
        else:
            chars += 8
    return chars, depth, bad


def string_chars(obj: Any) -> int:
    """Total characters of the strings (keys included) inside a parsed JSON value."""
    return _walk(obj, depth_limit=10 ** 9)[0]


def check_record(where: str, value: Any, limits: Limits | None = None) -> Any:
    """Refuse a parsed record nested over :data:`MAX_DEPTH` levels, holding a string that is not
    valid Unicode (an unpaired ``\\ud800``-style escape), or (with ``limits``) longer than
    ``max_row_chars``."""
    n, depth, bad = _walk(value)
    if depth > MAX_DEPTH:
        raise DatasetError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels); expected "
                           "flat records")
    if bad is not None:
        raise DatasetError(f"{where}: a string holds an unpaired surrogate escape (like \\ud800), which "
                           "is not valid Unicode; expected plain UTF-8 text")
    if limits is not None and n > limits.max_row_chars:
        raise _too_long(where, n, limits)
    return value


def _too_long(where: str, n: int, limits: Limits) -> DatasetError:
    return DatasetError(f"{where}: row is {n:,} characters; the limit is {limits.max_row_chars:,} "
                        "(max_row_chars): shorten it")


def _too_many(path: Path, where: str, limits: Limits) -> DatasetError:
    return DatasetError(f"{path}: more than {limits.max_rows:,} rows (at {where}); "
                        "raise max_rows to load it")


def iter_records(path: str | os.PathLike, limits: Limits) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, value)`` for each record of a JSON-lines file or a JSON list.

    ``where`` is e.g. ``"data/train.jsonl line 7"`` or ``"data/train.json record 3"``. A file
    whose first non-blank character is ``[`` is read as one JSON list; otherwise one JSON value
    per non-blank line (blank lines are skipped; lines end with LF, CRLF or CR).
    """
    p = Path(path)
    text = read_text(p, limits)
    if text.lstrip().startswith("["):
        data = _load_whole(p, text)
        if not isinstance(data, list):  # pragma: no cover - '[' always parses to a list
            raise DatasetError(f"{p}: expected a JSON list of records")
        if not data:
            raise DatasetError(f"{p}: file is empty (the JSON list has no records); expected at least "
                               "one record")
        for i, rec in enumerate(data):
            where = f"{p} record {i}"
            if i >= limits.max_rows:
                raise _too_many(p, where, limits)
            yield where, check_record(where, rec, limits)
        return
    count = 0
    for lineno, line in enumerate(_LINE_BREAK.split(text), start=1):
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
            if count == 1 and line.strip() == "{":
                raise DatasetError(f"{where}: expected one JSON object per line (JSON lines); "
                                   "the file looks like a single pretty-printed JSON object") from None
            raise
        yield where, check_record(where, value)


def _load_whole(p: Path, text: str) -> Any:
    try:
        return _json(text)
    except (RecursionError, _BadValue, ValueError) as e:
        raise _json_error(str(p), e, whole=True) from None


def read_json_object(path: str | os.PathLike, limits: Limits) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(where, key, value)`` for each entry of a file holding one JSON object."""
    p = Path(path)
    text = read_text(p, limits)
    data = _load_whole(p, text)
    if not isinstance(data, dict):
        raise DatasetError(f"{p}: expected one JSON object (id -> record); got a {type_name(data)}")
    if not data:
        raise DatasetError(f"{p}: file is empty (the JSON object has no entries); expected at least "
                           "one id -> record entry")
    for i, (key, rec) in enumerate(data.items()):
        where = f"{p} record {i} ({shorten(key)})"
        if i >= limits.max_rows:
            raise _too_many(p, where, limits)
        check_record(where, key)
        yield where, key, check_record(where, rec, limits)


def _csv_error(p: Path, line: int, e: csv.Error, limits: Limits, delimiter: str) -> DatasetError:
    if "field larger than field limit" in str(e):
        return DatasetError(f"{p} line {line}: row is over {limits.max_row_chars:,} characters; the limit is "
                            f"{limits.max_row_chars:,} (max_row_chars): shorten it")
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    detail = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(e))  # e.g. "'\\t' expected"
    return DatasetError(f"{p} line {line}: malformed CSV ({detail}); expected fields separated by {sep}, "
                        "with a field that holds the separator, a quote or a line break in double "
                        "quotes (and quotes inside it doubled)")


def iter_csv(path: str | os.PathLike, limits: Limits, required: tuple[str, ...],
             delimiter: str = ",") -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(where, row)`` for each data row of a CSV file with a header line (blank lines
    before it are skipped; each column name must appear once)."""
    p = Path(path)
    text = read_text(p, limits)
    # the csv module refuses fields over a process-wide limit (131,072 by default): never below
    # ours, so that a long field is reported by the row-length check below
    want = min(limits.max_row_chars + 1, 2 ** 31 - 1)
    if csv.field_size_limit() < want:
        csv.field_size_limit(want)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise _csv_error(p, start, e, limits, delimiter) from None
            if any(c.strip() for c in row):
                yield start, row

    it = rows()
    first = next(it, None)
    if first is None:
        raise DatasetError(f"{p}: file is empty (no header); expected a header line with columns "
                           f"{', '.join(required)}")
    hline, header = first
    n = sum(len(c) for c in header)
    if n > limits.max_row_chars:
        raise _too_long(f"{p} line {hline} (the header)", n, limits)
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{p} line {hline}: missing column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(repr(c) for c in missing)}; expected a header with columns "
                           f"{', '.join(required)} (found: {show_names(header) or 'nothing'})")
    dups = [h for h, k in Counter(header).items() if h and k > 1]
    if dups:
        raise DatasetError(f"{p} line {hline}: column{'s' if len(dups) > 1 else ''} "
                           f"{', '.join(shorten(h, 40) for h in dups[:10])} appear{'' if len(dups) > 1 else 's'} "
                           "more than once in the header; expected each column once: rename or remove "
                           "the copies")
    count = 0
    for start, row in it:
        where = f"{p} line {start}"
        count += 1
        if count > limits.max_rows:
            raise _too_many(p, where, limits)
        n = sum(len(c) for c in row)
        if n > limits.max_row_chars:
            raise _too_long(where, n, limits)
        if len(row) != len(header):
            hint = ("; put a field that holds the separator in double quotes" if len(row) > len(header)
                    else "")
            raise DatasetError(f"{where}: expected {len(header)} fields ({show_names(header)}); "
                               f"got {len(row)}{hint}")
        yield where, dict(zip(header, row))
    if count == 0:
        raise DatasetError(f"{p}: file is empty (a header but no rows); expected rows of "
                           f"{', '.join(required)} under the header")


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
