"""The Gradient Transformer mapper's settings are a typed config, saved beside its weights."""

from __future__ import annotations

import json

import pytest

from gtapp.mapper.gt import GTConfig, GTMapper, GTMapperConfig
from testkit.synthetic import linear_pairs, small_recipes


def test_typed_config_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown config keys \\['stepz'\\]"):
        GTMapperConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="'steps' must be int"):
        GTMapperConfig.from_dict({"steps": "many"})
    with pytest.raises(ValueError, match="'lr' must be float"):
        GTMapperConfig.from_dict({"lr": True})
    with pytest.raises(ValueError, match="base must be 'ridge' or 'mean'"):
        GTMapperConfig.from_dict({"base": "oracle"})
    cfg = GTMapperConfig.from_dict({"lr": 1, "d_rank": None, "max_time_s": 5})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.max_time_s == 5.0
    assert cfg.network() == GTConfig(**{k: getattr(cfg, k) for k in GTConfig().to_dict()})
    # every setting the mapper reads is a field of the typed config
    assert set(GTMapper.default_config()) == set(GTMapperConfig().to_dict())


def test_config_json_beside_the_weights_is_the_whole_typed_config(tmp_path):
    rec = small_recipes()
    m = GTMapper(rec, {"steps": 3, "d_model": 16, "n_heads": 2, "eval_every": 1})
    m.fit(linear_pairs(rec, n_runs=3, seed=0))
    m.save(tmp_path / "v1")
    saved = json.loads((tmp_path / "v1" / "config.json").read_text())["config"]
    assert saved == GTMapperConfig.from_dict({"steps": 3, "d_model": 16, "n_heads": 2, "eval_every": 1}).to_dict()
    assert GTMapperConfig.from_dict(saved) == m.cfg
