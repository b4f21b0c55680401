"""Depth, disparity and uncertainty colour maps (uint8 RGB), shared by data previews and exports.

Follows the official release (reference §7) for disparity: magma of 1/depth on the 5th-95th
percentile; depth uses Spectral (near = red) on the 2nd-98th percentile.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps


def valid_depth_mask(depth: np.ndarray, valid_mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with finite, positive depth (and `valid_mask`, if given): bool [H, W]."""
    depth = np.asarray(depth)
    valid = np.isfinite(depth) & (depth > 0)
    if valid_mask is not None:
        valid_mask = np.asarray(valid_mask, bool)
        if valid_mask.shape != depth.shape:
            raise ValueError(f"valid_mask shape {valid_mask.shape} != depth shape {depth.shape}")
        valid &= valid_mask
    return valid


def _apply_cmap(
    values: np.ndarray, valid: np.ndarray, lo: float, hi: float, cmap: str
) -> np.ndarray:
    """Map `values` [H, W] linearly from [lo, hi] through `cmap`; invalid pixels are black."""
    # Invalid pixels (possibly NaN/inf) are parked at `lo` so they raise no float warnings.
    t = np.clip((np.where(valid, values, lo) - lo) / max(hi - lo, 1e-8), 0, 1)
    rgb = (colormaps[cmap](t)[..., :3] * 255).round().astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def colorize_depth(
    depth: np.ndarray, valid_mask: np.ndarray | None = None, cmap: str = "Spectral",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:  # fmt: skip
    """Depth [H, W] -> uint8 [H, W, 3]: near = red, far = blue (Spectral), invalid = black.

    The range is the 2nd-98th percentile of valid depth, so one far pixel does not flatten it,
    or `value_range` (lo, hi), e.g. one range for maps that are compared side by side.
    """
    depth = np.asarray(depth, np.float32)
    valid = valid_depth_mask(depth, valid_mask)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo, hi = value_range or np.percentile(depth[valid], [2, 98])
    return _apply_cmap(depth, valid, float(lo), float(hi), cmap)


def colorize_disparity(depth: np.ndarray, valid_mask: np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] -> uint8 [H, W, 3]: magma of 1/depth (near = bright), invalid = black.

    As in the release, the range is the 5th-95th percentile of valid disparities; colours are
    rounded here rather than truncated (at most 1 level of difference).
    """
    depth = np.asarray(depth, np.float32)
    valid = valid_depth_mask(depth, valid_mask)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    disp = np.zeros(depth.shape, np.float64)
    disp[valid] = 1.0 / depth[valid]
    lo, hi = np.percentile(disp[valid], [5, 95])
    return _apply_cmap(disp, valid, float(lo), float(hi), "magma")


def colorize_uncertainty(
    unc: np.ndarray, valid_mask: np.ndarray | None = None, cmap: str = "viridis"
) -> np.ndarray:
    """Uncertainty [H, W] (>= 0) -> uint8 [H, W, 3] over 0..98th percentile; invalid = black."""
    unc = np.asarray(unc, np.float32)
    valid = np.isfinite(unc)
    if valid_mask is not None:
        valid &= np.asarray(valid_mask, bool)
    if not valid.any():
        return np.zeros((*unc.shape, 3), np.uint8)
    hi = float(np.percentile(unc[valid], 98))
    return _apply_cmap(unc, valid, 0.0, hi, cmap)
