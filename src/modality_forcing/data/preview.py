"""Contact sheet of samples: one row each with RGB | depth colour map | valid mask | caption."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colormap import colorize_depth

CAPTION_WIDTH = 260  # pixels of caption column at scale 1
PAD = 4

__all__ = ["colorize_depth", "contact_sheet", "write_preview"]


def _row(sample: dict[str, Any], scale: int, font: ImageFont.ImageFont) -> Image.Image:
    """One contact-sheet row for a sample (columns: RGB, depth, mask, caption)."""
    h, w = sample["image"].shape[:2]
    valid = np.asarray(sample["valid_mask"], bool)
    tiles = [
        np.asarray(sample["image"], np.uint8),
        colorize_depth(sample["depth"], valid),
        np.repeat((valid * 255).astype(np.uint8)[..., None], 3, axis=-1),
    ]
    th, tw = h * scale, w * scale
    row = Image.new("RGB", (3 * (tw + PAD) + CAPTION_WIDTH, th + PAD), "white")
    draw = ImageDraw.Draw(row)
    for i, tile in enumerate(tiles):
        # Nearest-neighbour keeps single LiDAR points visible instead of smearing them.
        img = Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST)
        x = i * (tw + PAD)
        row.paste(img, (x, 0))
        # A frame, so an all-white mask still reads as a tile against the white page.
        draw.rectangle((x, 0, x + tw - 1, th - 1), outline=(128, 128, 128))
    text = f"{sample.get('key', '')}  valid {valid.mean():.1%}\n"
    text += "\n".join(textwrap.wrap(sample.get("caption") or "(no caption)", width=40))
    draw.multiline_text((3 * (tw + PAD) + PAD, PAD), text, fill="black", font=font)
    return row


def contact_sheet(samples: Sequence[dict[str, Any]], scale: int = 1) -> Image.Image:
    """Stack one row per sample (see `write_preview`) into a PIL image."""
    font = ImageFont.load_default()
    rows = [_row(s, scale, font) for s in samples]
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def write_preview(
    out: str | Path,
    shards: str | Path | None = None,
    split: str = "val",
    num: int = 8,
    height: int = 96,
    width: int = 128,
) -> Path:
    """Write a PNG contact sheet: rows of RGB | depth (Spectral, near red, invalid black) | mask
    | caption.

    Args:
        out: output PNG path.
        shards: shard directory (or .tar) to read the first `num` samples from; None renders
            `num` procedural samples of `split` at `height` x `width` instead.
        split: procedural split when rendering.
        num: number of rows.
        height: render height.
        width: render width.

    Returns:
        The PNG path.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if shards is not None:
        from .shards import iter_shard_samples

        samples = list(itertools.islice(iter_shard_samples(shards), num))
        if not samples:
            raise ValueError(f"no readable samples in {shards}")
    else:
        from .procedural import SceneConfig, render_split

        samples = render_split(split, 0, num, SceneConfig(height=height, width=width))
    # Small images are hard to read: upscale so each tile is at least ~128 pixels tall.
    scale = max(1, 128 // samples[0]["image"].shape[0])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(samples, scale).save(out)
    return out
