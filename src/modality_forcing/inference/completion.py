"""Depth completion: image + known depth points -> dense metric depth, and its baselines.

`complete` runs the model's `depth_completion` mode (`sampling/generate.py`, `flow/hints.py`): the
known points normalise the depth (their mean is the metric scale), enter a `depth_hint` model as
its hint input, and are pasted into every step's prediction. The baselines of issue 23, each a
function on the same inputs at the working size:
  (a) `fit_to_points`: image -> depth, then a least-squares scale and shift fitted to the points;
  (b) `guided_depth`: image -> depth with gradient guidance toward the points through the
      network at every step (Marigold-DC's idea: Viola et al. 2024), then the same fit;
  (c) `interpolate_points`: the known points alone, interpolated (linear inside their convex
      hull, nearest outside).
Inference compute is counted in network-evaluation units (`COST`): a forward pass 1, a forward
with a backward pass through the network 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.letterbox import Box
from ..data.letterbox import frame as fit_frame
from ..flow.path import x0_to_velocity
from ..modalities import DEPTH, IMAGE, uncontract
from ..sampling.config import COMPLETION_POSTS
from ..sampling.generate import generate
from ..sampling.schedules import scheduling_matrix

COST = {"forward": 1, "forward+backward": 3}
POSTS = COMPLETION_POSTS
MAX_CONTRACTED = 1.95  # network-space depth read by the guided baseline: 20x the mean at most


def frame_points(
    depth: torch.Tensor, known: torch.Tensor, size: tuple[int, int], how: str = "letterbox"
) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """Known points [B, 1, H, W] on the working grid `size`: each working pixel that covers at
    least one known point gets their mean depth (area resampling of depth x mask and of the mask,
    so no point is lost or invented by nearest-neighbour sampling)."""
    known = known.bool()
    num, box = fit_frame(torch.where(known, depth, 0.0), size, how, pad_value=0.0, mode="area")
    den, _ = fit_frame(known.float(), size, how, pad_value=0.0, mode="area")
    hit = den > 1e-6
    return torch.where(hit, num / den.clamp_min(1e-12), 0.0), hit, box


def sparse_batch(sparse: Any, mask: Any, batch: int, size: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Known points for a batch of `batch` images of `size` (H, W): one input (any form of
    `data/sparse_points.sparse_map`) for a single image, or a list with one per image.
    Returns (depth [B, 1, H, W] metres, 0 where unknown; known [B, 1, H, W] bool)."""
    from ..data.inputs import InputError
    from ..data.sparse_points import sparse_map

    if isinstance(sparse, list | tuple):
        masks = mask if isinstance(mask, list | tuple) else [mask] * len(sparse)
        if len(sparse) != batch or len(masks) != batch:
            raise InputError(f"got {len(sparse)} sparse depth inputs (and {len(masks)} masks) "
                             f"for {batch} images; give one per image")  # fmt: skip
        pairs = [sparse_map(s, m, size, f"`sparse_depth[{i}]`")
                 for i, (s, m) in enumerate(zip(sparse, masks, strict=True))]  # fmt: skip
    else:
        if batch != 1:
            raise InputError(f"one sparse depth input for {batch} images; pass a list, one "
                             "per image")  # fmt: skip
        pairs = [sparse_map(sparse, mask, size, "`sparse_depth`")]
    depth = torch.from_numpy(np.stack([d for d, _ in pairs]))[:, None]
    known = torch.from_numpy(np.stack([k for _, k in pairs]))[:, None]
    return depth, known


def complete(
    model: Any, image: torch.Tensor, depth: torch.Tensor, known: torch.Tensor, steps: int = 1,
    post: str = "paste", generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None, captions: list[str] | None = None, **kwargs: Any,
) -> torch.Tensor:  # fmt: skip
    """Dense metric depth [B, 1, H, W] from images [B, 3, H, W] in [-1, 1] and known points
    (depth [B, 1, H, W] metres, known [B, 1, H, W] bool) at the model's working size.

    `post`: how the points shape the result beyond the hint input (`SamplingConfig.
    completion_post`): `paste` (into every step's prediction: per-pixel t = 0), `fit` (the
    unpasted prediction fitted to them by least squares, scale and shift, then written in),
    `residual` (the unpasted prediction's errors at the points interpolated between them and
    added), or `none` (the model's own prediction, a design ablation).
    """
    if post not in (*POSTS, "none"):
        raise ValueError(f"unknown completion post-step '{post}'; choose from {list(POSTS)}")
    h, w = image.shape[-2:]
    captions = captions or [""] * image.shape[0]
    out = generate(model, "depth_completion", captions, h, w, image=image, depth=depth,
                   valid_mask=known, num_steps=steps, paste=post == "paste",
                   generator=generator, autocast_dtype=autocast_dtype, **kwargs).depth  # fmt: skip
    depth, known = depth.to(out.device), known.to(out.device).bool()
    if post == "fit":
        return torch.where(known, depth, fit_to_points(out.float(), depth, known))
    if post == "residual":
        return residual_interpolation(out.float(), depth, known)
    return out


def least_squares_to_points(rel: torch.Tensor, depth: torch.Tensor, known: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-image scale s and shift b minimising sum over known pixels of (s rel + b - depth)^2;
    where that fit is degenerate or gives s <= 0 (a single point, points on one depth), the
    scale alone (ratio of means) with b = 0. Returns (s [B], b [B]); differentiable in `rel`."""
    w = known.flatten(1).to(rel.dtype)
    x, y = rel.flatten(1), depth.flatten(1).to(rel.dtype)
    n = w.sum(1).clamp_min(1)
    mx, my = (w * x).sum(1) / n, (w * y).sum(1) / n
    var = (w * (x - mx[:, None]) ** 2).sum(1)
    cov = (w * (x - mx[:, None]) * (y - my[:, None])).sum(1)
    s = cov / var.clamp_min(1e-12)
    ok = (var > 1e-10 * mx.abs().clamp_min(1e-6) ** 2 * n) & (s > 0) & (w.sum(1) >= 2)
    ratio = my / mx.clamp_min(1e-12)
    return torch.where(ok, s, ratio), torch.where(ok, my - s * mx, torch.zeros_like(my))


def fit_to_points(rel: torch.Tensor, depth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Baseline (a)'s metric depth: relative depth [B, 1, H, W] fitted to the known points,
    clamped to stay positive."""
    s, b = least_squares_to_points(rel.double(), depth.double(), known)
    out = s.view(-1, 1, 1, 1) * rel.double() + b.view(-1, 1, 1, 1)
    return positive(out, depth).to(rel.dtype)


def positive(pred: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """A metric prediction kept above 1/1000 of the deepest known point (a fit or correction
    can cross zero far from the points; depth cannot)."""
    floor = 1e-3 * depth.flatten(1).amax(1).to(pred.dtype).view(-1, 1, 1, 1)
    return torch.maximum(pred, floor)


def guided_depth(
    model: Any, image: torch.Tensor, depth: torch.Tensor, known: torch.Tensor, steps: int,
    step_size: float, generator: torch.Generator | None = None, shift_mu: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:  # fmt: skip
    """Baseline (b): image -> depth with guidance toward the known points at every step.

    At each step the depth x0 prediction is fitted to the points (`least_squares_to_points`),
    the mean relative error of the fitted prediction on the points is differentiated through the
    network with respect to the noisy depth x_t, and the Euler step's result moves against that
    gradient, at most `step_size` at any pixel (the gradient over its largest magnitude;
    diffusion posterior sampling's form, so a single step is guided too); the result is fitted
    to the points. Depth is read within `MAX_CONTRACTED` (20x the mean), so one stray pixel
    cannot dominate the fit. Cost per step: one forward and one backward pass (`COST`).
    """
    b, _, h, w = image.shape
    device = next(model.parameters()).device
    x_img = model.codec.encode(image.to(device).float())
    schedule = scheduling_matrix("image_to_depth", steps, shift_mu)[:, 1].float()
    x = torch.randn((b, *model.grid_shape(DEPTH, h, w)), generator=generator).to(device)
    text = model.encode_text([""] * b)
    depth, known = depth.to(device).float(), known.to(device).bool()
    t_min = model.cfg.depth_t_min
    zeros = torch.zeros(b, device=device)
    for k in range(steps):
        t_now, t_next = schedule[k].expand(b).to(device), schedule[k + 1].expand(b).to(device)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):  # fmt: skip
                pred = model({IMAGE: x_img, DEPTH: x}, {IMAGE: zeros, DEPTH: t_now}, text)[DEPTH]
            rel = uncontract(pred.float().clamp(0.0, MAX_CONTRACTED))
            s, shift = least_squares_to_points(rel, depth, known)
            fitted = s.view(-1, 1, 1, 1) * rel + shift.view(-1, 1, 1, 1)
            err = ((fitted - depth).abs() / depth.clamp_min(1e-6))[known]
            loss = err.mean()
            (grad,) = torch.autograd.grad(loss, x)
        scale = grad.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = x.detach()
        v = x0_to_velocity(x, pred.detach().float(), t_now, t_min)
        x = x + (t_next - t_now).view(-1, 1, 1, 1) * v - step_size * grad / scale
    return fit_to_points(uncontract(x.clamp(0.0, MAX_CONTRACTED)), depth, known)


def interpolate_points(depth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Baseline (c): the known points alone, linearly interpolated inside their convex hull
    (Delaunay) and nearest-neighbour outside it; fewer than 3 points (or collinear ones): nearest
    everywhere. [B, 1, H, W] in, [B, 1, H, W] out."""
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    out = torch.zeros_like(depth, dtype=torch.float32)
    d, m = depth.detach().float().cpu().numpy(), known.detach().bool().cpu().numpy()
    h, w = d.shape[-2:]
    rows, cols = np.mgrid[0:h, 0:w]
    grid = (rows, cols)
    for i in range(d.shape[0]):
        pts = np.argwhere(m[i, 0])
        vals = d[i, 0][m[i, 0]]
        near = griddata(pts, vals, grid, method="nearest")
        try:
            lin = griddata(pts, vals, grid, method="linear") if len(pts) >= 3 else near
        except QhullError:  # all points on one line
            lin = near
        out[i, 0] = torch.from_numpy(np.where(np.isfinite(lin), lin, near).astype(np.float32))
    return out.to(depth.device)


def residual_interpolation(pred: torch.Tensor, depth: torch.Tensor, known: torch.Tensor
                           ) -> torch.Tensor:  # fmt: skip
    """A dense prediction [B, 1, H, W] corrected by its own errors at the known points,
    interpolated (`interpolate_points`) between them: exact at the points, the prediction's
    shape elsewhere (a classic depth-completion post-step, measured in `bench completion`),
    kept `positive`."""
    residual = torch.where(known.bool(), depth - pred.to(depth.dtype), 0.0)
    return positive(pred + interpolate_points(residual, known).to(pred), depth)
