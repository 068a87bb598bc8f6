"""DIW-format ordinal-depth data: reader + validation, dense-depth companion files,
a Dataset for training/evaluation, and a procedural generator of DIW-format scenes.

Importing this package does not import torch; ``mobiledepth.data.dataset`` does, lazily.
"""

from mobiledepth.data.depthmap import depth_path_for, find_depth, load_depth, save_depth
from mobiledepth.data.diw import (
    DiwData,
    OrdinalPair,
    Problem,
    Sample,
    ValidationReport,
    load_dataset,
    load_image,
    map_points,
    read_annotations,
    resolve_annotations,
    validate,
)

__all__ = [
    "DiwData",
    "OrdinalPair",
    "Problem",
    "Sample",
    "ValidationReport",
    "depth_path_for",
    "find_depth",
    "load_dataset",
    "load_depth",
    "load_image",
    "map_points",
    "read_annotations",
    "resolve_annotations",
    "save_depth",
    "validate",
]
