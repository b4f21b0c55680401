"""Gallery of exported results: a self-contained `index.html` and a `contact_sheet.png`.

Each entry is one `export.save_result` directory; links are relative so the folder can be moved.
"""

from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

from .export import atomic_write_bytes

TILE_HEIGHT = 160  # contact-sheet tile height in pixels
TITLE_HEIGHT = 16
PAD = 4
IMAGE_KEYS = (("rgb", "RGB"), ("depth_color", "depth"), ("uncertainty_color", "uncertainty"))
LINK_KEYS = (
    ("depth", "depth.npy"),
    ("depth16", "depth16.png"),
    ("disparity", "disparity"),
    ("cloud_ply", "cloud.ply"),
    ("cloud_glb", "cloud.glb"),
    ("metadata", "metadata.json"),
)
CSS = """
body { font-family: sans-serif; margin: 1em; background: #f4f4f4; }
.card { background: white; margin: 0 0 1em; padding: 0.6em; border-radius: 6px; }
.card img { height: 192px; margin-right: 4px; image-rendering: pixelated; }
.caption { color: #333; margin: 0.3em 0; } .mode { color: #777; font-size: 90%; }
.links a { margin-right: 0.8em; }
"""


def _resolve(out_dir: Path, path: str | Path) -> Path:
    """An entry's file as an absolute path (relative paths are relative to `out_dir`)."""
    path = Path(path)
    return path if path.is_absolute() else out_dir / path


def _href(out_dir: Path, path: str | Path) -> str:
    """URL of `path` relative to `out_dir` (posix separators, percent-escaped)."""
    rel = os.path.relpath(_resolve(out_dir, path), out_dir)
    return html.escape(quote(Path(rel).as_posix()))


def _card(out_dir: Path, entry: dict[str, Any]) -> str:
    """One entry's HTML: title, mode, caption, images, and links to the raw files."""
    files = entry.get("files", {})
    title = html.escape(str(entry.get("title", "")))
    caption = html.escape(str(entry.get("caption", entry.get("prompt", ""))))
    mode = html.escape(str(entry.get("mode", "")))
    images = "".join(
        f'<img src="{_href(out_dir, files[k])}" alt="{label}" title="{label}">'
        for k, label in IMAGE_KEYS
        if k in files
    )
    links = "".join(
        f'<a href="{_href(out_dir, files[k])}">{label}</a>' for k, label in LINK_KEYS if k in files
    )
    return (
        f'<div class="card"><h3>{title} <span class="mode">{mode}</span></h3>\n'
        f'<p class="caption">{caption}</p>\n<div>{images}</div>\n'
        f'<p class="links">{links}</p></div>\n'
    )


def _tile(out_dir: Path, files: dict[str, Any], key: str) -> Image.Image:
    """A file's image scaled to TILE_HEIGHT (aspect kept), or a light-grey blank."""
    if key not in files or not _resolve(out_dir, files[key]).exists():
        return Image.new("RGB", (TILE_HEIGHT, TILE_HEIGHT), (230, 230, 230))
    with Image.open(_resolve(out_dir, files[key])) as img:
        img = img.convert("RGB")
        width = max(1, round(img.width * TILE_HEIGHT / img.height))
        # Nearest keeps small generations crisp instead of blurring them when upscaled.
        return img.resize((width, TILE_HEIGHT), Image.Resampling.NEAREST)


def contact_sheet(out_dir: Path, entries: list[dict[str, Any]]) -> Image.Image:
    """Rows of RGB | depth colour | uncertainty-or-blank, each under a short title."""
    font = ImageFont.load_default()
    rows = []
    for entry in entries:
        tiles = [_tile(out_dir, entry.get("files", {}), k) for k, _ in IMAGE_KEYS]
        width = sum(t.width + PAD for t in tiles) + PAD
        row = Image.new("RGB", (width, TITLE_HEIGHT + TILE_HEIGHT + PAD), "white")
        title = f"{entry.get('title', '')} [{entry.get('mode', '')}]"
        ImageDraw.Draw(row).text((PAD, 2), title[:80], fill="black", font=font)
        x = PAD
        for t in tiles:
            row.paste(t, (x, TITLE_HEIGHT))
            x += t.width + PAD
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def write_gallery(out_dir: str | Path, entries: list[dict[str, Any]]) -> Path:
    """Write `index.html` and `contact_sheet.png` for `entries` into `out_dir`.

    Args:
        out_dir: gallery folder; relative file paths in entries are relative to it.
        entries: dicts with `title`, `caption` (or `prompt`), `mode` and `files` (as returned
            by `export.save_result`; paths relative to `out_dir` or absolute).

    Returns:
        The path of `index.html`.
    """
    if not entries:
        raise ValueError("write_gallery needs at least one entry")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    contact_sheet(out, entries).save(buf, format="PNG")
    atomic_write_bytes(out / "contact_sheet.png", buf.getvalue())
    cards = "".join(_card(out, e) for e in entries)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>modality-forcing gallery'
        f"</title>\n<style>{CSS}</style></head><body>\n<h1>Results ({len(entries)})</h1>\n"
        '<p><a href="contact_sheet.png">contact sheet</a></p>\n'
        f"{cards}</body></html>\n"
    )
    return atomic_write_bytes(out / "index.html", page.encode("utf-8"))


__all__ = ["contact_sheet", "write_gallery"]
