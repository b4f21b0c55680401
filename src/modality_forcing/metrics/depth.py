"""Monocular depth error metrics (Eigen et al., NeurIPS 2014; KITTI SILog), computed per image.

Each metric is computed per image over its valid pixels in float64; a benchmark number is the mean
over images (`mean_over_images`), as in Marigold's evaluation, not a mean over pooled pixels.
"""

from __future__ import annotations

import math

import torch

# Predictions at or below zero on a valid pixel have no logarithm or ratio; they are clamped to
# this depth (metres) first, as Marigold's evaluation does, so they count as (very) wrong.
PRED_EPS = 1e-6

METRICS: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "delta1",
    "delta2",
    "delta3",
)

# Direction of "better", for tables and sanity checks.
HIGHER_IS_BETTER: dict[str, bool] = {m: m.startswith("delta") for m in METRICS}

METRIC_LABELS: dict[str, str] = {
    "abs_rel": "AbsRel ↓",
    "sq_rel": "SqRel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "log10": "log10 ↓",
    "silog": "SILog ↓",
    "delta1": "δ1 ↑",
    "delta2": "δ2 ↑",
    "delta3": "δ3 ↑",
}


def as_image_batch(x: torch.Tensor) -> torch.Tensor:
    """[H, W] -> [1, H, W]; [B, H, W] unchanged; [B, 1, H, W] -> [B, H, W]."""
    if x.dim() == 2:
        return x[None]
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"expected [H, W], [B, H, W] or [B, 1, H, W], got {tuple(x.shape)}")
    return x


def depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float = PRED_EPS
) -> dict[str, torch.Tensor]:
    """Per-image depth metrics over the masked pixels.

    With p the prediction and g the ground truth on the n valid pixels of one image:

    - `abs_rel`  = mean(|p - g| / g)
    - `sq_rel`   = mean((p - g)^2 / g)
    - `rmse`     = sqrt(mean((p - g)^2))                  (units of the depth, e.g. metres)
    - `rmse_log` = sqrt(mean((ln p - ln g)^2))
    - `log10`    = mean(|log10 p - log10 g|)
    - `silog`    = 100 * sqrt(mean(d^2) - mean(d)^2), d = ln p - ln g   (KITTI benchmark SILog;
      the variance is clamped at 0 against rounding)
    - `delta_k`  = fraction of pixels with max(p / g, g / p) < 1.25^k, k = 1, 2, 3

    Pixels count as valid where `mask` is true and g is finite and > 0. Predictions on valid
    pixels are clamped to at least `eps` (see `PRED_EPS`). An image with no valid pixel, or with a
    NaN/inf prediction on a valid pixel, gets NaN for every metric (never a silent 0 or 1).

    Args:
        pred: predicted depth [B, H, W] (or [H, W], [B, 1, H, W]); any float dtype, any device.
        gt: ground-truth depth, same shape.
        mask: bool, same shape; true where the pixel is scored.
        eps: lower clamp for predictions.

    Returns:
        Dict metric name (`METRICS`) -> float64 tensor [B] on the inputs' device.
    """
    pred, gt, mask = as_image_batch(pred), as_image_batch(gt), as_image_batch(mask).bool()
    if not (pred.shape == gt.shape == mask.shape):
        raise ValueError(
            f"pred {tuple(pred.shape)}, gt {tuple(gt.shape)} and mask {tuple(mask.shape)} differ"
        )
    g = gt.double()
    valid = mask & torch.isfinite(g) & (g > 0)
    p_raw = pred.double()
    bad_pred = (valid & ~torch.isfinite(p_raw)).flatten(1).any(dim=1)  # [B]
    # Invalid pixels get p = g = 1 so every per-pixel term below is finite; they are then zeroed.
    p = torch.where(valid, p_raw.nan_to_num(1.0, 1.0, 1.0).clamp_min(eps), 1.0)
    g = torch.where(valid, g, 1.0)
    w = valid.double()
    n = w.flatten(1).sum(dim=1)  # [B]

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(dim=1) / n

    diff = p - g
    d = torch.log(p) - torch.log(g)
    ratio = torch.maximum(p / g, g / p)
    out = {
        "abs_rel": mean(diff.abs() / g),
        "sq_rel": mean(diff.square() / g),
        "rmse": mean(diff.square()).sqrt(),
        "rmse_log": mean(d.square()).sqrt(),
        "log10": mean((torch.log10(p) - torch.log10(g)).abs()),
        "silog": (mean(d.square()) - mean(d).square()).clamp_min(0.0).sqrt() * 100.0,
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = mean((ratio < 1.25**k).double())
    nan_rows = (n == 0) | bad_pred
    return {name: torch.where(nan_rows, math.nan, out[name]) for name in METRICS}


def mean_over_images(values: torch.Tensor) -> tuple[float, int]:
    """Benchmark mean of one per-image metric, skipping NaN (degenerate) images.

    Args:
        values: [N] per-image values.

    Returns:
        (mean over the finite entries or NaN if none, number of finite entries).
    """
    values = values.double().flatten()
    finite = torch.isfinite(values)
    count = int(finite.sum())
    return (float(values[finite].mean()) if count else math.nan), count


def region_abs_rel(aligned: torch.Tensor, gt: torch.Tensor, region: torch.Tensor,
                   eps: float = 1e-3) -> torch.Tensor:  # fmt: skip
    """[N] AbsRel of an (already aligned) prediction over each image's `region` pixels (e.g.
    object pixels); NaN for an image without any."""
    rel = (aligned.double() - gt.double()).abs() / gt.double().clamp_min(eps)
    region = region.bool()
    count = region.flatten(1).sum(1)
    total = (rel * region).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))
