"""What the noisy depth input holds where the sensor measured nothing (sparse depth training).

The loss never reads missing pixels (`flow/loss.py`), but the network still sees them in x_t.
Strategies, by name (`DataConfig.depth_fill`):
  `neutral`  x0 = 1.0 there (the unit mean after normalisation), noised as usual: the plain path.
  `noise`    x_t = noise there, as if t = 1 at those pixels: the input says "unknown".
  `nearest`  x0 = the nearest valid pixel's value there (a piecewise-constant guess), then noised
             as usual, so x_t looks like a noised dense map.
Only noised samples (t > 0) are changed: a held-clean depth (t = 0) is a given, and keeps the
neutral fill that `normalize_depth` also gives a given depth map with holes at inference. Valid
pixels of x0 and x_t are bit-identical to the plain path in every strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .path import expand_t, interpolate

Path = tuple[torch.Tensor, torch.Tensor]  # (x0, x_t)


def nearest_fill(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Replace each invalid pixel of x [B, C, H, W] by its nearest valid pixel (Euclidean).

    Samples with no valid pixel, or no invalid one, are returned unchanged. Runs on the CPU
    (an exact distance transform per sample) and returns a tensor on x's device.
    """
    from scipy.ndimage import distance_transform_edt

    out = x.clone()
    mask = valid.expand_as(x).detach().cpu().numpy()
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            m = mask[b, c]
            if m.all() or not m.any():
                continue
            # indices of the nearest valid (zero of ~m) pixel for every pixel: [2, H, W]
            rows, cols = distance_transform_edt(~m, return_distances=False, return_indices=True)
            idx = torch.from_numpy(np.ascontiguousarray(rows * m.shape[1] + cols)).to(x.device)
            out[b, c] = x[b, c].flatten()[idx.flatten()].view_as(x[b, c])
    return torch.where(valid.expand_as(x), x, out)


def _neutral(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> Path:
    return x0, interpolate(x0, noise, t)


def _noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> Path:
    xt = interpolate(x0, noise, t)
    replace = ~valid.expand_as(xt) & (expand_t(t, xt) > 0)
    return x0, torch.where(replace, noise, xt)


def _nearest(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> Path:
    noised = expand_t(t, x0) > 0
    x0 = torch.where(noised, nearest_fill(x0, valid), x0)
    return x0, interpolate(x0, noise, t)


FILLS: dict[str, Callable[..., Path]] = {
    "neutral": _neutral,
    "noise": _noise,
    "nearest": _nearest,
}


def check_fill(strategy: str) -> str:
    """Validate a strategy name (raises listing the choices)."""
    if strategy not in FILLS:
        raise ValueError(f"unknown depth fill '{strategy}'; choose from {list(FILLS)}")
    return strategy


def fill_missing(
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    valid: torch.Tensor,
    strategy: str = "neutral",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the depth path sample with missing pixels filled per `strategy` (module docstring).

    Args:
        x0: [B, 1, H, W] normalised depth (missing pixels already 1.0 from `normalize_depth`).
        noise: [B, 1, H, W] the noise of x_t.
        t: [B] noise levels.
        valid: [B, 1, H, W] bool, pixels with measured depth.
        strategy: a key of `FILLS`.

    Returns:
        (x0, x_t), both [B, 1, H, W]; equal to (x0, interpolate(x0, noise, t)) at valid pixels.
    """
    return FILLS[check_fill(strategy)](x0, noise, t, valid.bool())
