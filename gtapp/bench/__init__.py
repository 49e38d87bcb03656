"""The benchmark: does a TinyLM update make the LLM better, measured against every baseline.

``presets`` says what runs, ``protocol`` runs it (in-distribution and cross-task), ``report``
turns rows into summaries, targets and the cost table, ``plots`` draws the dashboard's charts.
"""

from gtapp.bench.presets import PRESETS, BenchPreset  # noqa: F401
