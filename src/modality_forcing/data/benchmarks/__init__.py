"""Depth benchmark readers (NYUv2, KITTI, KITTI depth completion, ETH3D, ScanNet, DIODE, folder,
procedural) by name.

Each reads the dataset's distributed format from a user-supplied root and yields samples in the
`data/batch.py` convention with `valid_mask` = the protocol's evaluation mask; see each module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Benchmark
from .diode import DIODE
from .folder import Folder, Procedural
from .kitti import KITTI
from .kitti_dc import KITTIDepthCompletion
from .listed import ETH3D, ScanNet
from .nyuv2 import NYUv2

BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls
    for cls in (NYUv2, KITTI, KITTIDepthCompletion, ETH3D, ScanNet, DIODE, Folder, Procedural)
}


def get_benchmark(
    name: str,
    root: str | Path | None,
    split: str | None = None,
    split_file: str | Path | None = None,
    **options: Any,
) -> Benchmark:
    """Build a benchmark reader by name.

    Args:
        name: a key of `BENCHMARKS`.
        root: dataset root (ignored by `procedural`).
        split: split name (each benchmark has a default).
        split_file: explicit split list (format in the benchmark's module docstring).
        **options: benchmark-specific keywords, e.g. `depth_range`, `eval_crop` (kitti),
            `depth_field` (nyuv2), `num`/`height`/`width` (procedural).

    Returns:
        The reader: a sized, indexable iterable of samples.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark '{name}'; choose from {list(BENCHMARKS)}")
    if root is None and name != "procedural":
        raise ValueError(f"benchmark '{name}' needs a data root (--data-root)")
    return BENCHMARKS[name](root, split=split, split_file=split_file, **options)


__all__ = ["BENCHMARKS", "Benchmark", "get_benchmark"]
