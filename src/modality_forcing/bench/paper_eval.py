"""The measurements of `bench paper`: every permutation of one checkpoint, scored on procedural
test scenes. Pure functions of (model, scenes, settings); the suite (`bench/paper.py`) decides
which models and settings.

- image -> depth: AbsRel / delta1 under every alignment protocol (least squares first).
- depth -> image, by cycle: the depth estimated from the generated image, scored against the
  input depth (least squares), with any estimator (the model itself, or a separate regressor).
- joint: consistency, the estimator's depth of the generated image scored against the generated
  depth (least squares), next to the same score against another sample's depth (a shuffled
  pairing: what "no agreement" looks like).

Depth -> image and joint also give, per estimator, the least-squares AbsRel of each image
(`per_image`, for paired intervals between models) and how many images scored NaN (`failures`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..metrics.alignment import aligned_metrics, aligned_scores
from ..metrics.depth import depth_metrics
from ..precision import resolve_precision
from ..sampling.config import SamplingConfig
from .common import Scenes, sample_depths

PROTOCOLS = ("least_squares", "least_squares_disparity", "median", "robust")
GENERATED_RANGE = (1e-3, 1e3)  # relative depths (unit mean): the clip range when they are the GT


def score_depth(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, depth_range: tuple[float, float],
    protocols: tuple[str, ...] = ("least_squares",), objects: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Mean AbsRel / delta1 over images for each protocol: {protocol: {abs_rel, delta1, image
    counts, and object_abs_rel given an `objects` mask}}."""
    return {p: aligned_scores(pred, gt, mask, depth_range, p, objects)[1] for p in protocols}


def _dtype(model: Any, precision: str) -> torch.dtype | None:
    """The autocast dtype the precision policy picks for `model`'s device."""
    return resolve_precision(precision, next(model.parameters()).device).autocast_dtype


class Estimator:
    """Image -> depth with a fixed setting (the yardstick of cycles and consistency)."""

    def __init__(self, model: Any, setting: SamplingConfig, size: tuple[int, int],
                 mode: str = "image_to_depth", precision: str = "auto") -> None:  # fmt: skip
        self.model, self.setting, self.size, self.mode = model, setting, size, mode
        self.precision = precision
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> relative depth [N, H, W]. Sampling is seeded, so the
        prediction for the same images tensor is kept and reused (the test scenes are scored
        by several measurements)."""
        if self._last is None or self._last[0] is not images:
            depth = sample_depths(self.model, images, self.setting, self.size, mode=self.mode,
                                  precision=self.precision)  # fmt: skip
            self._last = (images, depth[:, 0])
        return self._last[1]


def image_to_depth(
    estimator: Estimator, scenes: Scenes, protocols: tuple[str, ...] = PROTOCOLS
) -> dict[str, dict[str, float]]:
    """Image -> depth on the scenes' images, per protocol."""
    pred = estimator(scenes.images)
    return score_depth(pred, scenes.depth, scenes.mask, scenes.depth_range, protocols,
                       scenes.objects)  # fmt: skip


def abs_rel_per_image(estimator: Estimator, scenes: Scenes) -> torch.Tensor:
    """[N] least-squares AbsRel of each test image (for paired comparisons between models)."""
    return aligned_metrics(estimator(scenes.images), scenes.depth, scenes.mask,
                           scenes.depth_range)[1]["abs_rel"]  # fmt: skip


class _Scored:
    """What depth -> image and joint return: their mean scores, and for each scored pairing
    (`key`) the AbsRel of every image and the image counts."""

    def __init__(self) -> None:
        self.scores: dict[str, Any] = {}
        self.per_image: dict[str, list[float]] = {}
        self.failures: dict[str, dict[str, int]] = {}

    def add(self, key: str, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
            depth_range: tuple[float, float]) -> dict[str, float]:  # fmt: skip
        """Score `pred` against `gt` (least squares) under `key`; the means over images."""
        aligned, scores = aligned_scores(pred, gt, mask, depth_range)  # aligned once
        self.per_image[key] = depth_metrics(aligned, gt.double(), mask)["abs_rel"].tolist()
        self.failures[key] = {"images": scores["images"], "nan_images": scores["nan_images"]}
        return scores

    def result(self) -> dict[str, Any]:
        return {**self.scores, "per_image": self.per_image, "failures": self.failures}


@torch.no_grad()
def depth_to_image(
    model: Any, scenes: Scenes, steps: int, estimators: dict[str, Estimator], seed: int = 0,
    guidance_scale: float = 1.0, precision: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Generate an image from each scene's depth (and caption); the cycle AbsRel / delta1 of
    each estimator's depth of that image against the input depth (least squares)."""
    from ..sampling.generate import generate

    h, w = scenes.images.shape[-2:]
    out = generate(
        model, "depth_to_image", scenes.captions, h, w, depth=scenes.depth[:, None].float(),
        valid_mask=scenes.mask[:, None], num_steps=steps, guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed), autocast_dtype=_dtype(model, precision),
    )  # fmt: skip
    scored = _Scored()
    for name, estimate in estimators.items():
        key = f"cycle_abs_rel[{name}]"
        s = scored.add(key, estimate(out.image), scenes.depth, scenes.mask, scenes.depth_range)
        scored.scores[key] = s["abs_rel"]
        scored.scores[f"cycle_delta1[{name}]"] = s["delta1"]
    return scored.result()


@torch.no_grad()
def joint(
    model: Any, captions: list[str], size: tuple[int, int], steps: int,
    estimators: dict[str, Estimator], log2_alpha: float = 0.0, seed: int = 0,
    guidance_scale: float = 1.0, precision: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Generate image + depth per caption; consistency of each estimator's depth of the image
    with the generated depth, and the same against a shuffled pairing."""
    from ..sampling.generate import generate

    out = generate(
        model, "joint", captions, *size, num_steps=steps, log2_alpha=log2_alpha,
        guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
        autocast_dtype=_dtype(model, precision),
    )  # fmt: skip
    depth = out.depth[:, 0].double().clamp_min(GENERATED_RANGE[0])
    mask = torch.ones_like(depth, dtype=torch.bool)
    scored = _Scored()
    for name, estimate in estimators.items():
        est = estimate(out.image)
        for key, gt in ((f"consistency_abs_rel[{name}]", depth),
                        (f"shuffled_abs_rel[{name}]", depth.roll(1, dims=0))):  # fmt: skip
            scored.scores[key] = scored.add(key, est, gt, mask, GENERATED_RANGE)["abs_rel"]
    return scored.result()
