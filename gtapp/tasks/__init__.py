"""Task universe: generated task families mirroring the paper's datasets."""

from gtapp.tasks.base import Example, Task  # noqa: F401
