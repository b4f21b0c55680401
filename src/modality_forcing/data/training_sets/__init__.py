"""Training-set readers by name: dense synthetic (Hypersim, Virtual KITTI 2, the procedural world)
and sparse real (KITTI depth, generic image + sparse points), each read from its distributed
layout into samples of the `data/batch.py` convention; `mixture` samples them by weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import KINDS, TrainingSet, check_crop, fit_to_size, random_crop
from .hypersim import Hypersim
from .kitti_depth import KITTIDepth
from .points import SparsePoints
from .procedural import ProceduralSet
from .vkitti2 import VirtualKITTI2

TRAINING_SETS: dict[str, type[TrainingSet]] = {
    cls.name: cls for cls in (Hypersim, VirtualKITTI2, KITTIDepth, SparsePoints, ProceduralSet)
}


def get_training_set(name: str, root: str | Path | None, **options: Any) -> TrainingSet:
    """Build a training-set reader by name.

    Args:
        name: a key of `TRAINING_SETS` (`hypersim`, `vkitti2`, `kitti_depth`, `points`,
            `procedural`).
        root: dataset root (ignored by `procedural`).
        **options: reader keywords, e.g. `tonemap` (hypersim), `raw_root` / `layer` (kitti_depth),
            `pixel_center` (points), `height` / `width` (procedural); see each class.

    Returns:
        The reader: a sized, indexable list of samples (`load(i)` is None for a bad sample).
    """
    if name not in TRAINING_SETS:
        raise ValueError(f"unknown training set '{name}'; choose from {list(TRAINING_SETS)}")
    if root is None and name != "procedural":
        raise ValueError(f"training set '{name}' needs a data root")
    return TRAINING_SETS[name](root, **options)


__all__ = [
    "KINDS",
    "TRAINING_SETS",
    "TrainingSet",
    "check_crop",
    "fit_to_size",
    "get_training_set",
    "random_crop",
]
