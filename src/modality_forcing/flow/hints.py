"""Known depth points (depth completion) as data: normalisation, the hint input, and pasting.

Depth completion is image + a few known depth values -> dense metric depth. In Modality Forcing
terms the known pixels are clean (t = 0) while the rest of the depth map is generated. Two ways
they reach the network, measured by `bench completion`:
  hint   two channels per depth pixel, (normalised value where known else 0, known mask), into a
         bias-free, zero-initialised patch embedding added to the depth tokens (`depth_hint`);
         trained with `forcing.p_completion`.
  paste  every step's depth x0 prediction is overwritten at the known pixels (per-pixel t = 0
         inside the depth modality, enforced by the sampler; needs no training).
Both normalise by the mean of the known points: the scale the model's unit-mean depth space is
anchored to, so the output is metric without aligning to any ground truth.

Training draws known-point masks from the dense valid mask (`draw_known_mask`): uniformly random
points (a log-uniform count) or spinning-LiDAR scanlines (`data/sparsify.lidar`, when the sample
has intrinsics).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..modalities import normalize_depth

LIDAR_BEAMS = (16, 32, 64)


def known_points(depth: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise depth by the mean of its known pixels.

    Args:
        depth: [B, 1, H, W] depth in metres (values outside `known` never read).
        known: [B, 1, H, W] bool, at least one known pixel per sample.

    Returns:
        (normalised [B, 1, H, W] network-space depth, 1.0 at unknown pixels; scale [B] in
        metres: the known points' mean, which `denormalize_depth` multiplies back).
    """
    return normalize_depth(depth, known)


def hint_tensor(normalised: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W] hint input: (the normalised value where known, else 0; the known mask)."""
    known = known.bool()
    value = torch.where(known, normalised, torch.zeros_like(normalised))
    return torch.cat([value, known.to(value.dtype)], 1)


def paste_known(x0: torch.Tensor, normalised: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """An x0 prediction [B, 1, H, W] with its known pixels replaced by the known values."""
    return torch.where(known.bool(), normalised.to(x0.dtype), x0)


def paste_velocity(
    v: torch.Tensor, xt: torch.Tensor, normalised: torch.Tensor, known: torch.Tensor,
    t: torch.Tensor, t_min: float,
) -> torch.Tensor:  # fmt: skip
    """A velocity prediction with the velocity toward the known values at the known pixels."""
    from .path import x0_to_velocity

    return torch.where(known.bool(), x0_to_velocity(xt, normalised.to(xt.dtype), t, t_min), v)


# ---------------------------------------------------------------------------------------------
# training: which pixels of a dense sample are "known"
# ---------------------------------------------------------------------------------------------


def hint_rng(seed: int, index: int) -> np.random.Generator:
    """The known-point draws of one global sample index: a stream of its own, so turning depth
    completion on leaves every other draw of the run unchanged."""
    return np.random.default_rng([seed, index, 0x4B4E])


def random_known(valid: np.ndarray, rng: np.random.Generator, count: tuple[int, int]
                 ) -> np.ndarray:  # fmt: skip
    """bool [H, W]: a log-uniform number in `count` (lo, hi) of uniformly random valid pixels."""
    from ..data.sparsify import random_pixels

    total = int(valid.sum())
    lo, hi = max(1, count[0]), max(1, min(count[1], total))
    return random_pixels(valid, round(math.exp(rng.uniform(math.log(lo), math.log(max(lo, hi))))),
                         rng)  # fmt: skip


def draw_known_mask(
    depth: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    count: tuple[int, int],
    p_lidar: float,
    intrinsics: np.ndarray | None = None,
    pitch_deg: float = 0.0,
) -> np.ndarray:
    """bool [H, W] known pixels for one training sample (a subset of `valid`, never empty when
    `valid` has a pixel): LiDAR scanlines with probability `p_lidar` (when `intrinsics` are
    given and the scan hits something), else random points."""
    from ..data.sparsify import lidar

    if not valid.any():
        return valid.copy()
    if intrinsics is not None and rng.random() < p_lidar:
        beams = int(rng.choice(LIDAR_BEAMS))
        hit = lidar(depth, valid, intrinsics, rng, beams=beams, pitch_deg=pitch_deg)
        if hit.any():
            return hit
    return random_known(valid, rng, count)


def batch_known_masks(
    batch: dict[str, Any], valid: torch.Tensor, chosen: torch.Tensor,
    rngs: list[np.random.Generator], count: tuple[int, int], p_lidar: float,
) -> torch.Tensor:  # fmt: skip
    """[B, 1, H, W] bool known masks: drawn for the `chosen` samples (each from its own
    generator, `hint_rng`), empty for the others."""
    out = torch.zeros_like(valid, dtype=torch.bool)
    depth = batch["depth"].detach().float().cpu().numpy()
    masks = valid.detach().cpu().numpy()
    intrinsics = batch.get("intrinsics")
    pitch = batch.get("pitch_deg")
    for i in np.flatnonzero(chosen.cpu().numpy()):
        k = None if intrinsics is None else intrinsics[i].detach().cpu().numpy()
        p = 0.0 if pitch is None else float(pitch[i])
        mask = draw_known_mask(depth[i, 0], masks[i, 0], rngs[i], count, p_lidar, k, p)
        out[i, 0] = torch.from_numpy(mask)
    return out
