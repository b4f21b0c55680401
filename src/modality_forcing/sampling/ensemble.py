"""Ensembling relative-depth samples: align scales, reduce, and measure the spread.

Several image -> depth samples of the same image differ in content and (slightly) in scale. Each is
scaled to best match the per-pixel median of all (least squares, scale only: the predictions are
already unit-mean relative depth, so no shift is introduced), then reduced by median or mean; the
per-pixel standard deviation of the aligned samples is the uncertainty.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("median", "mean")


def align_scales(depths: torch.Tensor, iterations: int = 2) -> torch.Tensor:
    """Scale each of N samples [N, 1, H, W] to the current median estimate (least squares)."""
    aligned = depths
    for _ in range(iterations):
        ref = aligned.median(dim=0, keepdim=True).values  # [1, 1, H, W]
        num = (depths * ref).flatten(1).sum(1)
        den = depths.square().flatten(1).sum(1).clamp_min(1e-12)
        aligned = depths * (num / den).view(-1, 1, 1, 1)
    return aligned


def ensemble_depth(
    depths: torch.Tensor, reduction: str = "median"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine N samples [N, 1, H, W] into (depth [1, 1, H, W], uncertainty [1, 1, H, W]).

    The result is renormalised to unit mean, like every single prediction.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown ensemble reduction '{reduction}'; choose from {list(REDUCTIONS)}"
        )
    if depths.shape[0] == 1:
        return depths, torch.zeros_like(depths)
    aligned = align_scales(depths.float())
    if reduction == "median":
        depth = aligned.median(dim=0, keepdim=True).values
    else:
        depth = aligned.mean(dim=0, keepdim=True)
    uncertainty = aligned.std(dim=0, keepdim=True)
    scale = depth.mean().clamp_min(1e-12)
    return depth / scale, uncertainty / scale
