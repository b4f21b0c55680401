"""The embedded procedural world as a training set: dense z-depth (sky invalid), rendered on demand
at the training size, so it can be a member of a dataset mixture (optionally sparsified there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import decode
from ..splits import SPLIT_RANGES
from .base import TrainingSet


class ProceduralSet(TrainingSet):
    """Scenes `0 .. N - 1` of a procedural split (`data/splits.py`), one render per `load`.

    Args:
        root: unused (the scenes are generated).
        split: `train` (default), `val` or `test`.
        height, width: render size.
        shadows: render cast shadows.
        scene: other `SceneConfig` fields (e.g. {"back_wall_prob": 0, "max_objects": 3}; they
            win over `shadows`): a world unlike the benchmark's, as synthetic training data is
            unlike real test data.
        stats: skip counter (nothing is ever skipped here).
    """

    name = "procedural"
    kind = "dense"
    renders_at_size = True

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        height: int = 32,
        width: int = 32,
        shadows: bool = True,
        scene: dict[str, Any] | None = None,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        from dataclasses import fields

        from ..procedural import SceneConfig

        if split not in SPLIT_RANGES:
            raise ValueError(f"unknown split '{split}'; choose from {sorted(SPLIT_RANGES)}")
        self.root = Path(root or ".")
        self.stats = stats if stats is not None else decode.SkipCounter()
        self.split = split
        known = {f.name for f in fields(SceneConfig)} - {"height", "width"}
        unknown = sorted(set(scene or {}) - known)
        if unknown:
            raise ValueError(
                f"procedural: unknown scene option(s) {unknown}; choose from {sorted(known)}"
            )
        options = {"shadows": shadows, **(scene or {})}
        self.scene = SceneConfig(height=height, width=width, **options)
        self.entries = range(SPLIT_RANGES[split][1])

    def _load(self, entry: int) -> dict[str, Any]:
        from ..procedural import render_split

        return render_split(self.split, entry, 1, self.scene)[0]
