"""Aspect-preserving resize + padding (letterbox) to a model's working size, and its inverse.

Never stretch: an input is scaled so it fits inside the target, centred, and padded; outputs are
cropped back to the content box and resized to the input size.
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
