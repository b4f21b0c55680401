"""Fitting inputs to a model's working size, and mapping outputs back.

`letterbox` (the default everywhere): an aspect-preserving resize so the input fits inside the
target, centred and padded; outputs are cropped back to the content box and resized to the input
size. `stretch`: resize to the target ignoring the aspect ratio, outputs resized back. A model
trained on full frames of one aspect ratio may do better stretched (it never saw padding bars;
measured in `docs/depth_quality.md`). `frame(x, size, how)` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    """Where the content sits inside the letterboxed frame (pixels), and the original size."""

    top: int
    left: int
    height: int
    width: int
    orig_height: int
    orig_width: int


def letterbox(
    x: torch.Tensor, size: tuple[int, int], pad_value: float = 0.0, mode: str = "bilinear"
) -> tuple[torch.Tensor, Box]:
    """Fit x [B, C, H, W] inside `size` (h, w) keeping its aspect ratio, centred, padded.

    Returns:
        (framed [B, C, h, w], box of the content).
    """
    h, w = size
    _, _, oh, ow = x.shape
    scale = min(h / oh, w / ow)
    ch, cw = max(1, min(h, round(oh * scale))), max(1, min(w, round(ow * scale)))
    kwargs = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    resized = F.interpolate(x.float(), size=(ch, cw), mode=mode, **kwargs)
    top, left = (h - ch) // 2, (w - cw) // 2
    framed = F.pad(resized, (left, w - cw - left, top, h - ch - top), value=pad_value)
    return framed, Box(top, left, ch, cw, oh, ow)


def unletterbox(y: torch.Tensor, box: Box, mode: str = "bilinear") -> torch.Tensor:
    """Crop y [B, C, h, w] to the content box and resize to the original (H, W)."""
    crop = y[..., box.top : box.top + box.height, box.left : box.left + box.width]
    if (box.height, box.width) == (box.orig_height, box.orig_width):
        return crop
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(crop.float(), size=(box.orig_height, box.orig_width), mode=mode, **kwargs)


def stretch(
    x: torch.Tensor, size: tuple[int, int], pad_value: float = 0.0, mode: str = "bilinear"
) -> tuple[torch.Tensor, Box]:
    """Resize x [B, C, H, W] to `size` ignoring the aspect ratio; the box is the whole frame, so
    `unletterbox` resizes outputs back to the input size. (`pad_value` is unused.)"""
    h, w = size
    _, _, oh, ow = x.shape
    kwargs = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x.float(), size=(h, w), mode=mode, **kwargs), Box(0, 0, h, w, oh, ow)


FRAMES = {"letterbox": letterbox, "stretch": stretch}


def frame(
    x: torch.Tensor, size: tuple[int, int], how: str = "letterbox", pad_value: float = 0.0,
    mode: str = "bilinear",
) -> tuple[torch.Tensor, Box]:  # fmt: skip
    """Fit x to `size` with `how` (`letterbox` | `stretch`); returns (framed, box)."""
    if how not in FRAMES:
        raise ValueError(f"unknown frame '{how}'; choose from {sorted(FRAMES)}")
    return FRAMES[how](x, size, pad_value=pad_value, mode=mode)
