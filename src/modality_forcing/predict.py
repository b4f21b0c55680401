"""Image -> depth prediction from a checkpoint, at any input size (the `eval --ckpt` predictor).

Inputs are letterboxed to the model's working resolution (never stretched), depth is sampled with
the image held clean, optionally as an ensemble (per-pixel median of unit-mean predictions), then
cropped and resized back to the input size. Predictions are relative depth (unit mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .data.batch import image_to_tensor
from .data.letterbox import letterbox, unletterbox
from .modalities import valid_mean
from .sampling.generate import generate


@dataclass
class PredictConfig:
    num_steps: int = 10
    ensemble_size: int = 1
    seed: int = 0
    resolution: tuple[int, int] | None = None  # working size; default: the training resolution
    bf16: bool = True


class DepthPredictor:
    """Callable `sample -> depth [H, W]` for `evaluate.score_predictions`."""

    def __init__(self, ckpt: str | Path, cfg: PredictConfig | None = None) -> None:
        self.cfg = cfg or PredictConfig()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(ckpt, device)
        res = self.cfg.resolution or self.model.cfg.resolution
        if res is None:
            raise ValueError(f"checkpoint '{ckpt}' records no resolution; pass one explicitly")
        self.resolution = (int(res[0]), int(res[1]))
        self.device = torch.device(device)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, caption: str = "") -> torch.Tensor:
        """image [1, 3, H, W] in [-1, 1] -> relative depth [1, 1, H, W] (unit mean)."""
        framed, box = letterbox(image, self.resolution, pad_value=-1.0)
        n = self.cfg.ensemble_size
        generator = torch.Generator().manual_seed(self.cfg.seed)
        out = generate(
            self.model, "image_to_depth", [caption] * n, *self.resolution,
            image=framed.expand(n, -1, -1, -1), num_steps=self.cfg.num_steps, generator=generator,
            autocast_dtype=torch.bfloat16 if self.cfg.bf16 else None,
        )  # fmt: skip
        depth = unletterbox(out.depth, box)  # [n, 1, H, W]
        depth = depth / valid_mean(depth, depth > 0)[:, None, None, None]
        return depth.median(dim=0, keepdim=True).values if n > 1 else depth

    def __call__(self, sample: dict[str, Any]) -> np.ndarray:
        image = image_to_tensor(np.asarray(sample["image"]))[None]
        # No caption: benchmarks have none, and image -> depth must not lean on text.
        return self.predict(image)[0, 0].cpu().numpy()
