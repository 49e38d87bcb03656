"""Small helpers shared by the tab builders: status lines, error handling, tables."""

from __future__ import annotations

import functools
import html
import math
import re
from typing import Any, Callable, Iterable, Optional, Sequence

from ui.service import user_message

OK_MARK, ERR_MARK = "✔", "✖"  # in DejaVu Sans too (no emoji font needed)

# The tabs, by the ids their builders give them, and the labels on their buttons. The page keeps
# the open tab in its URL (`?tab=jobs`, ui.app); a page load fills only that tab (when_open).
TABS = {"upload": "Upload", "finetune": "Fine-tune", "generate": "Generate", "collaborations": "Collaborations",
        "try": "Try it", "jobs": "Jobs", "compare": "Compare", "admin": "Admin", "account": "Account"}


def status(ok: bool, text: str) -> str:
    """A one-line status in Markdown (the text is escaped: it may quote user input)."""
    return f"{OK_MARK if ok else ERR_MARK} {md_escape(text)}"


# what can start or end Markdown inside a line: code, emphasis, links/images, raw HTML and entities,
# tables, strikethrough, LaTeX ($), escapes; ":" and "@" break http:// and e-mail autolinks
_MD_SPECIAL = frozenset("\\`*_[]<>()#|!~&$:@")


def md_escape(text: str) -> str:
    """User text for an inline place in Markdown: every character that could start or end
    Markdown there backslash-escaped (no link, image, code span, emphasis, table cell, HTML tag
    or LaTeX can begin or end inside it), a dot before a letter too (``www.x.y`` is not
    autolinked), list and heading markers at its start, and line breaks turned into spaces (no
    new block). It renders as the text itself."""
    text = str(text)
    out = []
    for k, ch in enumerate(text):
        nxt = text[k + 1] if k + 1 < len(text) else ""
        if ch in _MD_SPECIAL or (ch == "." and nxt.isascii() and nxt.isalpha()):
            out.append("\\" + ch)
        elif ch in "\r\n\u2028\u2029\x0b\x0c\x85":
            out.append(" ")
        else:
            out.append(ch)
    escaped = "".join(out)
    m = re.match(r"\s*(?:[-+=]|\d+[.)])", escaped)  # a list item or setext underline at the start
    if m:
        escaped = escaped[:m.end() - 1] + "\\" + escaped[m.end() - 1:]
    return escaped


def md_code(text: str, lang: str = "") -> str:
    """Text as a fenced code block, shown verbatim: the fence is longer than any run of
    backticks inside, so the text cannot close it."""
    text = str(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def html_text(text: str) -> str:
    """User text inside HTML (gr.HTML, a toast): escaped, quotes included."""
    return html.escape(str(text), quote=True)


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


def cli_command(kind: str, params: dict) -> str:
    """The `gtapp` command line that submits the same job as a form (copy, paste, script)."""
    import json
    import shlex

    clean = {k: v for k, v in params.items() if v is not None}
    return f"gtapp jobs submit {kind} --params-json {shlex.quote(json.dumps(clean, sort_keys=True))} --wait"


def clear_message() -> str:
    """An empty status line: a message about the last action no longer describes what is on
    screen once the user picks a new file or comes back to the tab."""
    return ""


def wire_saved_settings(save_btn, restore_btn, saved, keys: Sequence[str], fields: Sequence, msg) -> None:
    """"Save these settings" / "Load saved settings" for a form: ``fields`` (named ``keys``, in
    order) into and out of ``saved``, a gr.BrowserState (the user's own browser), with a status
    in ``msg``. Only settings, never the objects they were used on (datasets, adapters): those
    belong to an organisation, and a browser may be shared."""
    import gradio as gr

    @guarded(msg, n_outputs=2, status_index=1)
    def on_save(*values):
        stored = dict(zip(keys, values))
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in stored.items() if v not in (None, ""))
        return stored, status(True, f"settings saved in this browser: {shown}")

    @guarded(msg, n_outputs=len(keys) + 1, status_index=len(keys))
    def on_restore(stored):
        if not isinstance(stored, dict) or not any(k in stored for k in keys):
            raise ValueError("no saved settings in this browser yet: fill the form, then 'Save these settings'")
        shown = ", ".join(f"{k}={fmt(stored[k])}" for k in keys if k in stored and stored[k] not in (None, ""))
        return (*[stored[k] if k in stored else gr.skip() for k in keys],
                status(True, f"saved settings loaded: {shown}"))

    save_btn.click(on_save, list(fields), [saved, msg], api_name=False)
    restore_btn.click(on_restore, saved, [*fields, msg], api_name=False)


def when_open(tab_id: str, fn: Callable, n_outputs: int) -> Callable:
    """``fn`` as a page-load event of tab ``tab_id``: it runs when the page's URL names this tab,
    or names none (a bare / fills every tab, as it always did); otherwise the tab's components
    are left as they are, and the tab's own select event fills them when it is opened. A page
    load then costs the open tab's queries, not every tab's (under load, the queue of a dozen
    load events per page was the dashboard's latency).

    Only for page-load wirings: the URL a page sends with its events is the one it was loaded
    at, so a later event of the same page must not be judged by it."""
    import gradio as gr

    @functools.wraps(fn)  # the same handler for the tenancy test's enumeration
    def wrapper(*args, **kwargs):
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        named = dict(getattr(request, "query_params", None) or {}).get("tab")
        # ?tab=admin opens the Admin tab for admins only; a member's page shows the first tab,
        # so that URL fills every tab, as a bare / does
        if named in TABS and named != "admin" and named != tab_id:
            return gr.skip() if n_outputs == 1 else tuple(gr.skip() for _ in range(n_outputs))
        return fn(*args, **kwargs)
    return wrapper
