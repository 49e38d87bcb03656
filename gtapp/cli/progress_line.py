"""A one-line live progress display for the terminal (percent, stage, ETA)."""

from __future__ import annotations

import sys

from gtapp.progress import Progress


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60:02d}:{seconds % 60:02d}"


def print_progress(p: Progress) -> None:
    bar = "#" * int(p.fraction * 20)
    sys.stderr.write(f"\r[{bar:<20}] {p.fraction * 100:5.1f}%  {p.stage:<16} ETA {format_eta(p.eta_s)}  {p.message[:40]:<40}")
    if p.fraction >= 1.0:
        sys.stderr.write("\n")
    sys.stderr.flush()
