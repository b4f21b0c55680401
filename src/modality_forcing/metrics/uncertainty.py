"""Does a predicted uncertainty map point at the errors? Spearman rank correlation per image."""

from __future__ import annotations

import math

import torch

from .depth import as_image_batch


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based) of a 1-D tensor; tied values share the mean of their ranks."""
    order = torch.argsort(x)
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    values, inverse = torch.unique(x, return_inverse=True)
    if values.numel() < x.numel():  # ties: replace ranks by their group means
        sums = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
        counts = torch.zeros(values.numel(), dtype=torch.float64).index_add_(
            0, inverse, torch.ones_like(ranks)
        )
        ranks = (sums / counts)[inverse]
    return ranks


def spearman_per_image(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spearman's rho between maps a and b over each image's masked pixels.

    Args:
        a, b: [B, H, W] (or [H, W]) maps, e.g. the uncertainty and the absolute relative error.
        mask: bool, same shape: the pixels that count (finite in both).

    Returns:
        [B] float64 correlations in [-1, 1]; NaN where an image has fewer than 3 pixels or one of
        the maps is constant on them.
    """
    a, b = as_image_batch(a).double(), as_image_batch(b).double()
    mask = as_image_batch(mask).bool() & torch.isfinite(a) & torch.isfinite(b)
    out = torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    for i in range(a.shape[0]):
        x, y = a[i][mask[i]], b[i][mask[i]]
        if x.numel() < 3:
            continue
        rx, ry = _ranks(x), _ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = (rx.square().sum() * ry.square().sum()).sqrt()
        if denom > 0:
            out[i] = (rx * ry).sum() / denom
    return out
