"""Image -> depth predictions from a checkpoint for the evaluation harness (`eval --ckpt`).

A thin adapter from the pipeline to `evaluate.score_predictions`' `sample -> depth [H, W]`
callable. Inputs are letterboxed (or stretched) to the model's working resolution and predicted
depth is mapped back (see `pipeline.py`); an ensemble is the aligned median of N samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .pipeline import ModalityForcingPipeline


@dataclass
class PredictConfig:
    num_steps: int = 10
    ensemble_size: int = 1
    seed: int = 0
    resolution: tuple[int, int] | None = None  # working size; default: the training resolution
    precision: str = "auto"  # `auto` | `bf16` | `fp32` (`precision.resolve_precision`)
    device: str | None = None  # None: cuda > mps > cpu
    frame: str = "letterbox"  # inputs of another size: `letterbox` | `stretch`


class DepthPredictor:
    """Callable `sample -> relative depth [H, W]` (unit mean)."""

    def __init__(self, ckpt: str | Path, cfg: PredictConfig | None = None) -> None:
        self.cfg = cfg or PredictConfig()
        self.pipe = ModalityForcingPipeline.from_pretrained(
            ckpt, torch_dtype=self.cfg.precision, device=self.cfg.device
        )
        if self.cfg.resolution is not None:
            self.pipe.resolution = self.cfg.resolution

    def __call__(self, sample: dict[str, Any]) -> np.ndarray:
        # No caption: benchmarks have none, and image -> depth must not lean on text.
        out = self.pipe(
            image=np.asarray(sample["image"]), mode="image_to_depth",
            num_inference_steps=self.cfg.num_steps, ensemble_size=self.cfg.ensemble_size,
            generator=torch.Generator().manual_seed(self.cfg.seed),
            frame=self.cfg.frame,
        )  # fmt: skip
        return out.depth[0]
