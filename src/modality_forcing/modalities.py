"""Modality names and registry, and depth normalisation (unit mean + mip-NeRF 360 contraction).

Every per-modality dict in the project is keyed by the constants below. Adding a modality (e.g.
surface normals) means one `register_modality` call plus data that provides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

IMAGE = "image"
DEPTH = "depth"

Prediction = Literal["velocity", "x0"]


@dataclass(frozen=True)
class Modality:
    """What the network needs to know about one modality.

    Attributes:
        name: key used in every per-modality dict.
        channels: channels per pixel in the normalised space the network sees.
        prediction: what the modality's head predicts: `velocity` (noise - x0) or `x0`.
        masked: whether the modality carries a per-pixel `valid_mask` (sparse supervision).
        fp32_head: run the output head in float32 even under bf16 autocast (geometry needs it).

    Modalities other than `image` (which goes through the image codec) and `depth` (normalised
    below) are taken from the batch as they are, so their data must already be in a network
    range such as [-1, 1]: e.g. `register_modality(Modality("normals", 3, "x0"))` plus samples
    with a `normals` array ([H, W, 3]) is all a third modality needs.
    """

    name: str
    channels: int
    prediction: Prediction
    masked: bool = False
    fp32_head: bool = False


_REGISTRY: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """Add a modality to the registry; re-registering a name with other fields is an error."""
    if modality.prediction not in ("velocity", "x0"):
        raise ValueError(
            f"unknown prediction '{modality.prediction}' for modality '{modality.name}'; "
            "choose from ['velocity', 'x0']"
        )
    old = _REGISTRY.get(modality.name)
    if old is not None and old != modality:
        raise ValueError(f"modality '{modality.name}' is already registered as {old}")
    _REGISTRY[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    """Look up a registered modality by name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown modality '{name}'; choose from {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def modality_names() -> list[str]:
    """Registered modality names in registration order (image first, then depth)."""
    return list(_REGISTRY)


register_modality(Modality(IMAGE, channels=3, prediction="velocity"))
register_modality(Modality(DEPTH, channels=1, prediction="x0", masked=True, fp32_head=True))


# ---------------------------------------------------------------------------------------------
# Depth normalisation. Metric (or any-scale) depth -> relative depth with unit mean over valid
# pixels -> contracted into [0, 2). Both steps are invertible given the per-image scale, and the
# network only ever sees contracted values, which keeps far pixels (sky, long corridors) bounded.
# ---------------------------------------------------------------------------------------------

DEPTH_EPS = 1e-6


def valid_mean(depth: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """Mean depth over valid pixels per sample.

    Args:
        depth: [B, ...] depth, any positive unit. Values outside `valid_mask` are never read.
        valid_mask: [B, ...] bool, same shape as `depth`.

    Returns:
        [B] mean over valid pixels; 1.0 for samples with no valid pixel.
    """
    # Summed in float64: a float32 sum of large depths (1e38 in a corrupt file) overflows to inf.
    # MPS has no float64; there the sum stays in float32.
    acc = torch.float32 if depth.device.type == "mps" else torch.float64
    safe = torch.where(valid_mask, depth, torch.zeros_like(depth)).to(acc)
    total = safe.flatten(1).sum(1)
    count = valid_mask.flatten(1).sum(1).to(acc)
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))
    return mean.to(depth.dtype)


def contract(z: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360 contraction on non-negative scalars: z for z <= 1, 2 - 1/z above."""
    return torch.where(z <= 1, z, 2 - 1 / z.clamp_min(1))


def uncontract(c: torch.Tensor) -> torch.Tensor:
    """Inverse of `contract`; inputs are clamped just below 2 so the result stays finite."""
    c = c.clamp(0.0, 2.0 - DEPTH_EPS)
    return torch.where(c <= 1, c, 1 / (2 - c).clamp_min(DEPTH_EPS))


def normalize_depth(
    depth: torch.Tensor, valid_mask: torch.Tensor, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Metric depth -> network space: divide by the valid-pixel mean, then contract.

    Args:
        depth: [B, 1, H, W] depth (metres or any scale).
        valid_mask: [B, 1, H, W] bool.
        scale: [B] divisor instead of the valid-pixel mean (depth completion divides a dense
            map by the mean of its known points, the only scale known at inference).

    Returns:
        (normalised, scale): normalised [B, 1, H, W] in [0, 2), with invalid pixels set to 1.0
        (the unit mean, a neutral value; they must still be excluded from any loss), and scale
        [B], the per-sample mean that `denormalize_depth` multiplies back.
    """
    scale = valid_mean(depth, valid_mask) if scale is None else scale
    rel = depth / scale.view(-1, *([1] * (depth.dim() - 1)))
    rel = torch.where(valid_mask & torch.isfinite(rel), rel.clamp_min(0), torch.ones_like(rel))
    return contract(rel), scale


def denormalize_depth(normalised: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Network space -> relative depth (unit mean), times `scale` [B] when given."""
    rel = uncontract(normalised)
    if scale is None:
        return rel
    return rel * scale.view(-1, *([1] * (normalised.dim() - 1)))
