"""Image -> depth predictions from a checkpoint for the evaluation harness (`eval --ckpt`).

A thin adapter from the pipeline to `evaluate.score_predictions`' `sample -> depth [H, W]`
callable. Inputs are letterboxed (or stretched, `SamplingConfig.frame`) to the model's working
resolution and predicted depth is mapped back (see `pipeline.py`); an ensemble is the aligned
median of N samples. Settings left at None take the checkpoint's own image -> depth defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..sampling.config import SamplingConfig
from .pipeline import ModalityForcingPipeline

MODE = "image_to_depth"


class DepthPredictor:
    """Callable `sample -> relative depth [H, W]` (unit mean).

    Args:
        ckpt: checkpoint directory.
        sampling: image -> depth settings (None fields: the checkpoint's defaults; seed 0).
        precision, device: as in `ModalityForcingPipeline.from_pretrained`.
        resolution: working size (default: the training resolution).
    """

    def __init__(
        self,
        ckpt: str | Path,
        sampling: SamplingConfig | None = None,
        precision: str = "auto",
        device: str | None = None,
        resolution: tuple[int, int] | None = None,
    ) -> None:
        self.pipe = ModalityForcingPipeline.from_pretrained(ckpt, torch_dtype=precision,
                                                            device=device)  # fmt: skip
        if resolution is not None:
            self.pipe.resolution = resolution
        sampling = sampling or SamplingConfig()
        if sampling.seed is None:  # every image the same seed: a reproducible score
            sampling = dataclasses.replace(sampling, seed=0)
        self.sampling = self.pipe.sampling_for(MODE, sampling)

    def __call__(self, sample: dict[str, Any]) -> np.ndarray:
        # No caption: benchmarks have none, and image -> depth must not lean on text.
        out = self.pipe(image=np.asarray(sample["image"]), mode=MODE, sampling=self.sampling)
        return out.depth[0]
