"""gtapp.choices (torch-free, what ui/ and workers/ offer) is exactly what the core accepts."""

from __future__ import annotations

import subprocess
import sys

from gtapp import choices


def test_every_list_is_what_the_core_accepts():
    from gtapp import combine, zoo
    from gtapp.baselines.common import METHODS
    from gtapp.bench.presets import ALL_METHODS, PRESETS
    from gtapp.datasets.formats import REGISTRY
    from gtapp.datasets.user import USER_METRICS
    from gtapp.mapper.registry import mapper_classes

    assert tuple(zoo.PRESETS) == choices.ZOO_PRESETS
    assert tuple(sorted(PRESETS)) == tuple(sorted(choices.BENCH_PRESETS))
    assert tuple(sorted(mapper_classes())) == tuple(sorted(choices.MAPPER_KINDS))
    assert set(choices.MAPPER_METHOD) == set(choices.MAPPER_KINDS)
    assert set(choices.MAPPER_METHOD.values()) <= set(ALL_METHODS)
    assert combine.ORGANISATIONS == choices.ORGANISATIONS and combine.METHODS == choices.COMBINE_METHODS
    assert tuple(sorted(REGISTRY)) == tuple(sorted(choices.DATASET_FORMATS))
    assert tuple(USER_METRICS) == choices.USER_METRICS
    assert METHODS == choices.BASELINE_METHODS and set(METHODS) <= set(ALL_METHODS)


def test_combine_accepts_each_weighting_and_refuses_others():
    import pytest

    from gtapp.combine import Contributor, resolve_weights

    cs = [Contributor("a", {}, examples=1), Contributor("b", {}, examples=3)]
    for w in choices.WEIGHTINGS:
        resolve_weights(cs, w)
    with pytest.raises(ValueError):
        resolve_weights(cs, "by_magic")


def test_choices_import_no_torch():
    code = "import sys, gtapp.choices, workers.jobs, ui.admin, ui.generate, ui.upload; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_dashboards_adapter_file_names_are_gtapps():
    from gtapp.lora import peft_format
    from ui.service import adapters

    assert (adapters.WEIGHTS_NAME, adapters.SIDECAR_NAME) == (peft_format.WEIGHTS_NAME, peft_format.SIDECAR_NAME)
