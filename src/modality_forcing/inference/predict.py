"""Image -> depth (and depth completion) predictions from a checkpoint for the evaluation harness
(`eval --ckpt`, `eval --ckpt --sparse SPEC`).

A thin adapter from the pipeline to `evaluate.score_predictions`' `sample -> depth [H, W]`
callable. Inputs are letterboxed (or stretched, `SamplingConfig.frame`) to the model's working
resolution and predicted depth is mapped back (see `pipeline.py`); an ensemble is the aligned
median of N samples. Settings left at None take the checkpoint's own image -> depth defaults.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..data.sparse_points import parse_point_spec, point_mask
from ..data.sparsify import camera_pitch
from ..sampling.config import SamplingConfig
from .pipeline import ModalityForcingPipeline

MODE = "image_to_depth"
COMPLETION = "depth_completion"


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


class CompletionPredictor:
    """Callable `sample -> metric depth [H, W]` from the image and known points (`eval --sparse`).

    Args:
        ckpt: checkpoint directory.
        points: `given` (the sample's own `sparse_depth`, e.g. KITTI depth completion's LiDAR
            scan), `random:N` (N random valid ground-truth pixels, one fixed draw per sample key:
            Marigold-DC's NYUv2 protocol with N = 500) or `lidar:B` (a B-beam LiDAR simulated on
            the ground truth; procedural scenes, which carry their intrinsics).
        sampling, precision, device, resolution: as `DepthPredictor`.
    """

    def __init__(
        self,
        ckpt: str | Path,
        points: str,
        sampling: SamplingConfig | None = None,
        precision: str = "auto",
        device: str | None = None,
        resolution: tuple[int, int] | None = None,
    ) -> None:
        if points != "given":
            parse_point_spec(points)  # a bad spec fails before the checkpoint loads
        self.points = points
        self.pipe = ModalityForcingPipeline.from_pretrained(ckpt, torch_dtype=precision,
                                                            device=device)  # fmt: skip
        if resolution is not None:
            self.pipe.resolution = resolution
        sampling = sampling or SamplingConfig()
        if sampling.seed is None:
            sampling = dataclasses.replace(sampling, seed=0)
        self.sampling = self.pipe.sampling_for(COMPLETION, sampling)

    def known(self, sample: dict[str, Any]) -> np.ndarray:
        """The sample's known points: depth [H, W] in metres, 0 where unknown."""
        if self.points == "given":
            if sample.get("sparse_depth") is None:
                raise ValueError(f"sample '{sample.get('key')}' has no sparse_depth: --sparse "
                                 "given needs a benchmark that ships its sparse input "
                                 "(kitti_dc); use random:N or lidar:B")  # fmt: skip
            return np.asarray(sample["sparse_depth"], np.float32)
        depth = np.asarray(sample["depth"], np.float32)
        valid = np.asarray(sample["valid_mask"], bool) & (depth > 0)
        seed = zlib.crc32(str(sample.get("key", "")).encode())
        pitch = camera_pitch(sample)
        mask = point_mask(self.points, depth, valid, np.random.default_rng(seed),
                          sample.get("intrinsics"), pitch)  # fmt: skip
        return np.where(mask, depth, 0.0).astype(np.float32)

    def __call__(self, sample: dict[str, Any]) -> np.ndarray:
        out = self.pipe(image=np.asarray(sample["image"]), sparse_depth=self.known(sample),
                        mode=COMPLETION, sampling=self.sampling)  # fmt: skip
        return out.depth[0]
