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


# ---------------------------------------------------------------------------------------------
# Tiling: inputs much wider (or taller) than the working frame. Letterboxing a 3000x200 photo
# into 32x32 would leave a 32x2 strip of content; instead the image is cut into overlapping
# windows of the frame's aspect ratio, each predicted on its own and blended back.
# ---------------------------------------------------------------------------------------------

MAX_ASPECT = 4.0  # inputs within this aspect ratio of the working frame are framed whole


def aspect_excess(height: int, width: int, size: tuple[int, int]) -> float:
    """How many times more elongated (height, width) is than the frame `size` (>= 1)."""
    ratio = (width / height) / (size[1] / size[0])
    return max(ratio, 1 / ratio)


def tile_windows(
    height: int, width: int, size: tuple[int, int], overlap: float = 0.25
) -> list[tuple[int, int, int, int]]:
    """Overlapping windows (top, left, h, w) of `size`'s aspect ratio covering the input.

    Windows span the short side of the input and step along the long side with at least
    `overlap` of a window shared between neighbours; the last window ends at the border.
    """
    wide = width / height >= size[1] / size[0]
    if wide:
        win_h, win_w = height, min(width, max(1, round(height * size[1] / size[0])))
        length, win = width, win_w
    else:
        win_h, win_w = min(height, max(1, round(width * size[0] / size[1]))), width
        length, win = height, win_h
    stride = max(1, int(win * (1 - overlap)))
    count = max(1, -(-(length - win) // stride) + 1)  # ceil division
    starts = [round(i * (length - win) / max(count - 1, 1)) for i in range(count)]
    if wide:
        return [(0, s, win_h, win_w) for s in starts]
    return [(s, 0, win_h, win_w) for s in starts]


def blend_weights(h: int, w: int, ramp: int) -> torch.Tensor:
    """[1, 1, h, w] weights rising linearly over `ramp` pixels from every border (> 0 inside)."""
    ys = torch.arange(h, dtype=torch.float32)
    xs = torch.arange(w, dtype=torch.float32)
    wy = ((torch.minimum(ys, h - 1 - ys) + 1) / max(ramp, 1)).clamp(max=1.0)
    wx = ((torch.minimum(xs, w - 1 - xs) + 1) / max(ramp, 1)).clamp(max=1.0)
    return (wy[:, None] * wx[None, :])[None, None]
