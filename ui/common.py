"""Small helpers shared by the tab builders: status lines, error handling, tables."""

from __future__ import annotations

import functools
import html
import math
from typing import Any, Callable, Iterable, Optional, Sequence

from ui.service import user_message

OK_MARK, ERR_MARK = "✔", "✖"  # in DejaVu Sans too (no emoji font needed)


def status(ok: bool, text: str) -> str:
    """A one-line status in Markdown (the text is escaped: it may quote user input)."""
    return f"{OK_MARK if ok else ERR_MARK} {md_escape(text)}"


def md_escape(text: str) -> str:
    text = html.escape(str(text), quote=False)
    for ch in ("\\", "`", "*", "_", "[", "]", "#", "|"):
        text = text.replace(ch, "\\" + ch)
    return text


def guarded(status_output: Any = None, n_outputs: int = 1, status_index: int = 0,
            on_error: Optional[Callable[[], Sequence]] = None) -> Callable:
    """Wrap a handler so that an exception becomes an error status line at
    ``status_index`` of its outputs, never a traceback. The other outputs are left as they
    are, or set to ``on_error()`` (values for all outputs; the status slot is replaced)."""
    import gradio as gr

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - turned into words for the user
                msg = status(False, user_message(e))
                if n_outputs == 1:
                    return msg
                out = list(on_error()) if on_error else [gr.skip()] * n_outputs
                out[status_index] = msg
                return tuple(out)
        return wrapper
    return deco


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> dict:
    """{"headers", "data"} for a gr.Dataframe from dict rows; ``columns``: (key, header)."""
    return {"headers": [h for _, h in columns],
            "data": [[fmt(r.get(k)) for k, _ in columns] for r in rows] or [["" for _ in columns]]}


def choices(rows: Iterable[dict], label: Callable[[dict], str], value: str = "id") -> list[tuple[str, Any]]:
    return [(label(r), r[value]) for r in rows]


def first(values: Sequence[tuple[str, Any]], current: Optional[Any] = None) -> Optional[Any]:
    ids = [v for _, v in values]
    if current in ids:
        return current
    return ids[0] if ids else None
