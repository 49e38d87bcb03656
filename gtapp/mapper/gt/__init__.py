"""The Gradient Transformer: the network (network.py) and the mapper that trains and uses it,
with its typed config (mapper.py)."""

from gtapp.mapper.gt.mapper import GTMapper, GTMapperConfig
from gtapp.mapper.gt.network import GradientTransformer, GTConfig

__all__ = ["GTMapper", "GTMapperConfig", "GradientTransformer", "GTConfig"]
