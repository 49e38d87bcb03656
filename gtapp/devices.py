"""Which device a job's models run on: ``"auto"`` is CUDA when one is available, else the CPU.
The one place that decision is made."""

from __future__ import annotations


def resolve_device(device: str | None) -> str:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given; ``"auto"`` (or None) -> ``"cuda"`` if available else ``"cpu"``."""
    if device in (None, "", "auto"):
        import torch  # only here: choosing "cpu" or "cuda" explicitly never imports torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
