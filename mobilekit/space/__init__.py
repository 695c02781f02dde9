"""Stage 1: what can be built. Search spaces, layer types and architectures (all plain data)."""

from mobilekit.space.architecture import (
    Architecture,
    LayerSpec,
    largest_architecture,
    read_architecture,
    reference_architecture,
    sample_architecture,
)
from mobilekit.space.layer_types import SKIP, LayerType, parse_layer_type
from mobilekit.space.search_space import LayerPosition, SearchSpace, StageSpec, build_space, get_space, spnas_mnasnet

__all__ = [
    "Architecture", "LayerSpec", "LayerType", "LayerPosition", "SearchSpace", "StageSpec", "SKIP",
    "build_space", "get_space", "largest_architecture", "parse_layer_type", "read_architecture",
    "reference_architecture", "sample_architecture", "spnas_mnasnet",
]
