"""Alignment protocols that fit a relative depth prediction to metric ground truth before scoring.

Least squares in depth and disparity space follow Marigold's evaluation (Ke et al., CVPR 2024);
`robust` is MoGe's exact L1 fit of the relative error (Wang et al., CVPR 2025).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .depth import as_image_batch, depth_metrics, mean_over_images, region_abs_rel

PREDICTION_SPACES = ("depth", "disparity")

# A fit returns (scale [B], shift [B], degenerate [B] bool) from (pred, gt, mask) [B, H, W].
Fit = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# A prediction whose std over the valid pixels is below this fraction of its mean magnitude is
# treated as constant: no shift/scale fit can be told apart from another.
_CONST_RTOL = 1e-9
# Robust fit: pixels per image it solves on exactly; the cost grows as n^2 log n (1024: about
# 0.2 s per image on a 2-core CPU, far less on a GPU).
_ROBUST_MAX_PIXELS = 1024


@dataclass
class AlignResult:
    """Result of aligning a batch of predictions.

    Attributes:
        aligned: aligned and clipped depth [B, H, W] float64; NaN rows where degenerate.
        scale: [B] float64 scale s (NaN where degenerate).
        shift: [B] float64 shift t, in the space of the fit (depth or disparity).
        degenerate: [B] bool, true where the fit was impossible.
    """

    aligned: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    degenerate: torch.Tensor

    @property
    def num_degenerate(self) -> int:
        return int(self.degenerate.sum())


def _weighted_affine(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least squares y ~ s x + t per row of [B, N]; returns (s, t, constant_x) [B]."""
    sw = w.sum(dim=1)
    mx = (w * x).sum(dim=1) / sw
    my = (w * y).sum(dim=1) / sw
    # Centre before forming moments: a one-pass formula loses digits on far-from-zero depths.
    cx, cy = x - mx[:, None], y - my[:, None]
    var = (w * cx * cx).sum(dim=1)
    cov = (w * cx * cy).sum(dim=1)
    const = var <= (_CONST_RTOL * mx.abs().clamp_min(1e-300)) ** 2 * sw
    s = cov / torch.where(const, 1.0, var)
    return s, my - s * mx, const


def _fit_least_squares(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> Fit:
    return _weighted_affine(p.flatten(1), g.flatten(1), m.flatten(1).double())


def _fit_median(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> Fit:
    mp, mg = _masked_median(p, m), _masked_median(g, m)
    bad = ~(mp > 0)
    return mg / torch.where(bad, 1.0, mp), torch.zeros_like(mp), bad


def _masked_median(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Median of the masked entries of each row of [B, ...] (mean of the two middle ones)."""
    flat = torch.where(m, x, math.inf).flatten(1)
    srt = flat.sort(dim=1).values  # masked-out (+inf) sort last
    n = m.flatten(1).sum(dim=1)
    lo = ((n - 1).clamp_min(0) // 2)[:, None]
    hi = (n // 2).clamp_max(flat.shape[1] - 1)[:, None]
    med = 0.5 * (srt.gather(1, lo) + srt.gather(1, hi))[:, 0]
    return torch.where(n > 0, med, math.nan)


def _fit_robust(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> Fit:
    """Exact min_{s,t} sum_i |s p_i + t - g_i| / g_i on a fixed subsample of valid pixels.

    This is MoGe's affine depth alignment (L1 with weights 1 / g; MoGe fits on a 64 x 64
    nearest-neighbour resize of the valid pixels, we on evenly spaced ones). The optimum of an L1
    line fit passes through at least two data points, so each subsample pixel a is tried as a
    pivot (t = g_a - s p_a); the rest is a 1-D weighted L1 problem in s, solved exactly by the
    weighted median of the slopes (g_i - g_a) / (p_i - p_a) with weights |p_i - p_a| / g_i; the
    pivot with the lowest objective wins. L1 shrugs off a minority of bad ground-truth pixels
    (reflections, flying pixels) but, like any L1 regression, not gross outliers in the
    prediction itself (leverage points). The subsample is `_ROBUST_MAX_PIXELS` valid pixels
    evenly spaced in raster order (all if fewer): deterministic, O(n^2 log n) time and memory.
    """
    _, _, const = _weighted_affine(p.flatten(1), g.flatten(1), m.flatten(1).double())
    scale = torch.full_like(const, math.nan, dtype=torch.float64)
    shift = scale.clone()
    for b in range(p.shape[0]):
        idx = m[b].flatten().nonzero()[:, 0]
        if len(idx) < 2 or const[b]:
            continue
        if len(idx) > _ROBUST_MAX_PIXELS:
            idx = idx[torch.linspace(0, len(idx) - 1, _ROBUST_MAX_PIXELS, device=idx.device).long()]
        scale[b], shift[b] = _l1_affine(p[b].flatten()[idx], g[b].flatten()[idx])
    return scale, shift, const


def _l1_affine(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """min_{s,t} sum |s x + t - y| / y for [N] vectors, by pivots + weighted medians."""
    dx = x[None, :] - x[:, None]  # [A, N]: row a holds x_i - x_a
    dy = y[None, :] - y[:, None]
    weight = dx.abs() / y[None, :]
    # Pixels with x_i = x_a add a constant to row a's objective: weight 0, slope sorted last.
    slope = torch.where(dx == 0, math.inf, dy / torch.where(dx == 0, 1.0, dx))
    slope, order = slope.sort(dim=1)
    cum = weight.gather(1, order).cumsum(dim=1)
    k = (cum < 0.5 * cum[:, -1:]).sum(dim=1, keepdim=True).clamp_max(x.numel() - 1)
    s = slope.gather(1, k)[:, 0]  # [A] optimal slope per pivot
    t = y - s * x
    loss = ((s[:, None] * x[None, :] + t[:, None] - y[None, :]).abs() / y[None, :]).sum(dim=1)
    best = torch.where(torch.isfinite(loss), loss, math.inf).argmin()
    return s[best], t[best]


def _fit_identity(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> Fit:
    ones = torch.ones(p.shape[0], dtype=torch.float64, device=p.device)
    return ones, torch.zeros_like(ones), torch.zeros_like(ones, dtype=torch.bool)


@dataclass(frozen=True)
class Protocol:
    """One alignment protocol: its fit, the space it fits in, and its minimum valid pixels."""

    fit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Fit]
    disparity: bool = False
    min_valid: int = 2


PROTOCOLS: dict[str, Protocol] = {
    "least_squares": Protocol(_fit_least_squares),
    "least_squares_disparity": Protocol(_fit_least_squares, disparity=True),
    "median": Protocol(_fit_median, min_valid=1),
    "robust": Protocol(_fit_robust),
    "none": Protocol(_fit_identity, min_valid=1),
}


def get_protocol(name: str) -> Protocol:
    """Look up an alignment protocol by name."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}'; choose from {list(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocols_for(prediction_space: str) -> list[str]:
    """Protocols that make sense for predictions in `prediction_space` (`depth`/`disparity`)."""
    if prediction_space not in PREDICTION_SPACES:
        raise ValueError(
            f"unknown prediction space '{prediction_space}'; choose from {list(PREDICTION_SPACES)}"
        )
    if prediction_space == "disparity":
        return [n for n, p in PROTOCOLS.items() if p.disparity]
    return list(PROTOCOLS)


def _apply_fit(
    pred: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, proto: Protocol, space: str
) -> torch.Tensor:
    """Map the whole prediction [B, H, W] through a fit to depth (before range clipping)."""
    s, t = scale[:, None, None], shift[:, None, None]
    if not proto.disparity:
        return s * pred + t
    q = pred if space == "disparity" else 1.0 / pred
    # A non-positive fitted disparity means "beyond the far plane": clamp, invert, clip later.
    return 1.0 / (s * q + t).clamp_min(1e-12)


def align(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    protocol: str,
    depth_range: tuple[float, float],
    prediction_space: str = "depth",
) -> AlignResult:
    """Align predictions to ground truth per image, then clip to the depth range.

    Each fit uses one image's valid pixels only (p prediction, g ground truth), in float64:

    | protocol                  | fit                                               | min. pixels |
    |---------------------------|---------------------------------------------------|-------------|
    | `least_squares`           | s, t = argmin sum (s p + t - g)^2                 | 2           |
    | `least_squares_disparity` | s, t = argmin sum (s q + t - 1/g)^2, q = 1/p      | 2           |
    |                           | (q = p if `prediction_space == "disparity"`);     |             |
    |                           | depth = 1 / max(s q + t, 1e-12)                   |             |
    | `median`                  | s = median(g) / median(p), t = 0                  | 1           |
    | `robust`                  | s, t = argmin sum abs(s p + t - g) / g, exact L1  | 2           |
    |                           | on <= 1024 evenly spaced valid pixels             |             |
    | `none`                    | s = 1, t = 0 (metric prediction)                  | 1           |

    The aligned depth is then clipped to `depth_range` (Marigold). An image with fewer valid
    pixels than the protocol needs, a constant prediction (least squares, robust) or a
    non-positive median prediction (median) is *degenerate*: its aligned depth, scale and shift
    are NaN (so its metrics are NaN), a `RuntimeWarning` says how many, and
    `AlignResult.degenerate` flags it for counting. Nothing raises for bad data.

    Args:
        pred: prediction [B, H, W] (or [H, W]): depth (metric or relative), or affine-invariant
            disparity when `prediction_space == "disparity"`.
        gt: metric ground-truth depth [B, H, W].
        mask: bool [B, H, W]; the fit uses only pixels where it is true, gt is finite and > 0, and
            the prediction is finite (and > 0 for disparity fits of a depth prediction).
        protocol: a name in `PROTOCOLS`.
        depth_range: (min, max) depth of the dataset; the aligned depth is clipped to it.
        prediction_space: `depth` or `disparity` (disparity only with disparity protocols).

    Returns:
        AlignResult with aligned depth [B, H, W] float64, scale/shift/degenerate [B].
    """
    proto = get_protocol(protocol)
    if protocol not in protocols_for(prediction_space):
        raise ValueError(
            f"protocol '{protocol}' cannot align {prediction_space} predictions; "
            f"choose from {protocols_for(prediction_space)}"
        )
    p, g = as_image_batch(pred).double(), as_image_batch(gt).double()
    m = as_image_batch(mask).bool()
    if not (p.shape == g.shape == m.shape):
        shapes = [tuple(x.shape) for x in (p, g, m)]
        raise ValueError(f"pred, gt and mask shapes differ: {shapes}")
    m = m & torch.isfinite(g) & (g > 0) & torch.isfinite(p)
    if proto.disparity:
        if prediction_space == "depth":
            m = m & (p > 0)
            p = 1.0 / torch.where(m, p, 1.0)
        g = 1.0 / torch.where(m, g, 1.0)
    # Masked-out values must not reach the fits, even as 0 * inf; g = 1 there keeps 1/g finite.
    p, g = torch.where(m, p, 0.0), torch.where(m, g, 1.0)
    too_few = m.flatten(1).sum(dim=1) < proto.min_valid
    scale, shift, bad = proto.fit(p, g, m)
    degenerate = too_few | bad | ~torch.isfinite(scale) | ~torch.isfinite(shift)
    scale = torch.where(degenerate, math.nan, scale)
    shift = torch.where(degenerate, math.nan, shift)

    aligned = _apply_fit(as_image_batch(pred).double(), scale, shift, proto, prediction_space)
    aligned = aligned.clamp(min=depth_range[0], max=depth_range[1])
    aligned = torch.where(degenerate[:, None, None], math.nan, aligned)
    if bool(degenerate.any()):
        warnings.warn(
            f"alignment '{protocol}': {int(degenerate.sum())} of {len(degenerate)} image(s) "
            f"degenerate (fewer than {proto.min_valid} valid pixels or a constant prediction); "
            "their metrics are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return AlignResult(aligned=aligned, scale=scale, shift=shift, degenerate=degenerate)


def aligned_metrics(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, depth_range: tuple[float, float],
    protocol: str = "least_squares",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """Align predictions [N, H, W] per image with `protocol`; (aligned depth, per-image
    metrics {name: [N]})."""
    aligned = align(pred.double(), gt.double(), mask, protocol, depth_range).aligned
    return aligned, depth_metrics(aligned, gt.double(), mask)


def aligned_scores(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, depth_range: tuple[float, float],
    protocol: str = "least_squares", objects: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """`aligned_metrics`, averaged: (aligned depth, {abs_rel, delta1: means over the images
    that scored, images: how many were scored, nan_images: how many could not be (a degenerate,
    e.g. constant, prediction or too few valid pixels) and are left out of the means}); given
    an `objects` mask [N, H, W], also `object_abs_rel`: AbsRel over object pixels only (the
    same alignment, fitted on all valid pixels), a mean over the images that have any."""
    aligned, metrics = aligned_metrics(pred, gt, mask, depth_range, protocol)
    abs_rel, finite = mean_over_images(metrics["abs_rel"])
    images = int(metrics["abs_rel"].numel())
    out = {"abs_rel": abs_rel, "delta1": mean_over_images(metrics["delta1"])[0],
           "images": images, "nan_images": images - finite}  # fmt: skip
    if objects is not None:
        per_image = region_abs_rel(aligned, gt, objects.to(aligned.device) & mask.bool(),
                                   depth_range[0])  # fmt: skip
        out["object_abs_rel"] = mean_over_images(per_image)[0]
    return aligned, out
