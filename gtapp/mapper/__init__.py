"""Mappers from a TinyLM update to an LLM update: the Gradient Transformer and baselines.

    from gtapp.mapper import GTMapper, RidgeMapper, MeanMapper, load_mapper
    mapper = GTMapper(pair_set.recipes, {"steps": 1000})
    card = mapper.fit(pair_set)              # split by shadow run, validated, best kept
    llm_update = mapper.predict(tiny_update)  # UpdateVector of the LLM
    mapper.save("mappers/gt-v1"); load_mapper("mappers/gt-v1")

See base.py (interface, version folders, OOD score), registry.py (kinds by name, loading a
version), gt/ (the Gradient Transformer: its network, and the mapper with its typed config),
ridge.py and mean.py (the baselines to beat), space.py (tensor layout), functional.py (the
optional answer-NLL loss).
"""

from gtapp.lora.factors import as_factors
from gtapp.ood import OOD_TASK_THRESHOLD, OOD_THRESHOLD
from gtapp.mapper.base import Mapper, OodReference, read_card, recipe_fingerprint, split_by_run
from gtapp.mapper.mean import MeanMapper
from gtapp.mapper.registry import learning_curve, load_mapper, make_mapper, mapper_classes
from gtapp.mapper.ridge import RidgeMapper
from gtapp.mapper.space import UpdateSpace, update_metrics
from gtapp.mapper.gt import GTMapper
from gtapp.mapper.gt import GradientTransformer, GTConfig

__all__ = ["Mapper", "GTMapper", "RidgeMapper", "MeanMapper", "GradientTransformer", "GTConfig", "OodReference",
           "UpdateSpace", "as_factors", "update_metrics", "load_mapper", "make_mapper", "mapper_classes",
           "read_card", "recipe_fingerprint", "split_by_run", "learning_curve", "OOD_THRESHOLD",
           "OOD_TASK_THRESHOLD"]
