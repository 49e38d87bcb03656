"""What a member may see of the server: messages and records with no server paths in them.

A job's error, its log tail and the JSON files inside the adapters it hands out reach the
organisation that ran it. Python's messages name files (``FileNotFoundError: '/srv/gtapp/
data/artifacts/...'``) and gtapp's records name folders; both are rewritten here to say
*what* without *where*: an absolute path becomes ``<server path>/<its last component>``.
Admins still have the whole story: the traceback is kept in the job's run folder
(``traceback.txt``) and shown on the Jobs tab to admins only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# an absolute POSIX path of two or more components (or a home-relative one), not a URL
_PATH = re.compile(r"(?<![\w:/.~])(?:~/|/)(?:[\w.@+-]+/)+([\w.@+-]*)")

REDACTED = "<server path>"


def redact(text: str) -> str:
    """``text`` with every absolute path replaced by ``<server path>/<last component>``."""
    if not text:
        return text
    return _PATH.sub(lambda m: f"{REDACTED}/{m.group(1)}" if m.group(1) else REDACTED, text)


def redact_obj(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v) for v in obj]
    return obj


def redact_json_files(folder: Path) -> list[str]:
    """Rewrite every JSON file under ``folder`` (an adapter about to be stored) without server
    paths; returns the files changed."""
    changed = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        clean = redact_obj(data)
        if clean != data:
            path.write_text(json.dumps(clean, indent=2))
            changed.append(str(path.relative_to(folder)))
    return changed
