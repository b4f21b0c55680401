"""Generic RGB-D folder reader: bring your own images + depth maps in one of two plain layouts.

Split layout (sub-folders)            Flat layout (same names as shard members)
  image/NAME.png|jpg|jpeg               NAME.rgb.png|jpg|jpeg
  depth/NAME.npy|png|exr                NAME.depth.npy|png|exr
  mask/NAME.png        (optional)       NAME.mask.png   (optional)
  caption/NAME.txt     (optional)       NAME.txt        (optional)
  meta/NAME.json       (optional)       NAME.json       (optional; `intrinsics` 3x3, `scene`)

Depth `.npy` is float metres; `.png` is integer depth divided by `depth_scale` (1000: millimetres,
KITTI uses 256); `.exr` needs OpenEXR. Bad files follow the rules in `data.decode`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import decode

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
DEPTH_EXTS = (".npy", ".png", ".exr")


@dataclass(frozen=True)
class FolderItem:
    """Paths of one sample; optional parts are None when absent."""

    name: str
    image: Path
    depth: Path | None = None
    mask: Path | None = None
    caption: Path | None = None
    meta: Path | None = None


def _first(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def list_folder(root: str | Path) -> list[FolderItem]:
    """Find all samples under `root` (split layout when `root/image` exists, else flat), by name.

    Raises:
        FileNotFoundError: `root` is missing or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RGB-D folder {root} does not exist")
    items = []
    if (root / "image").is_dir():
        for img in sorted(root.glob("image/*")):
            if img.suffix.lower() not in IMAGE_EXTS:
                continue
            n = img.stem
            items.append(
                FolderItem(
                    name=n,
                    image=img,
                    depth=_first([root / "depth" / f"{n}{e}" for e in DEPTH_EXTS]),
                    mask=_first([root / "mask" / f"{n}.png"]),
                    caption=_first([root / "caption" / f"{n}.txt"]),
                    meta=_first([root / "meta" / f"{n}.json"]),
                )
            )
    else:
        for img in sorted(root.glob("*.rgb.*")):
            if img.suffix.lower() not in IMAGE_EXTS:
                continue
            n = img.name[: -len(".rgb" + img.suffix)]
            items.append(
                FolderItem(
                    name=n,
                    image=img,
                    depth=_first([root / f"{n}.depth{e}" for e in DEPTH_EXTS]),
                    mask=_first([root / f"{n}.mask.png"]),
                    caption=_first([root / f"{n}.txt"]),
                    meta=_first([root / f"{n}.json"]),
                )
            )
    if not items:
        raise FileNotFoundError(
            f"no images in {root}: expected image/NAME.png|jpg or NAME.rgb.png|jpg "
            "(layouts in modality_forcing.data.folder)"
        )
    return items


def read_depth_file(path: Path, depth_scale: float = 1000.0) -> np.ndarray:
    """Depth from `.npy` (float), `.png` (integer / depth_scale) or `.exr`; raises if unreadable."""
    suffix = path.suffix.lower()
    if suffix == ".exr":
        return decode.decode_depth_exr(path)
    if suffix == ".npy":
        return decode.decode_depth_npy(path.read_bytes(), str(path))
    return decode.decode_depth_png(path.read_bytes(), str(path), scale=depth_scale)


def load_folder_item(
    item: FolderItem, depth_scale: float = 1000.0, stats: decode.SkipCounter | None = None
) -> dict[str, Any] | None:
    """Read one sample; None (counted in `stats`) when a file is corrupt or unreadable.

    Args:
        item: paths from `list_folder`.
        depth_scale: integer depth PNG units per metre (1000 = millimetres).
        stats: skip/repair counter.

    Returns:
        sample with `image` uint8 [H, W, 3], `depth` float32 [H, W] metres, `valid_mask` bool
        [H, W], `caption`, `key` (and `intrinsics` float32 [3, 3], `scene` from the meta file).

    Raises:
        ValueError: image and depth (or mask) sizes disagree.
    """
    stats = stats if stats is not None else decode.SkipCounter()
    try:
        image = decode.decode_image(item.image.read_bytes(), str(item.image))
        depth = None if item.depth is None else read_depth_file(item.depth, depth_scale)
        mask = None
        if item.mask is not None:
            mask = decode.decode_mask(item.mask.read_bytes(), str(item.mask))
        caption = None if item.caption is None else decode.decode_text(item.caption.read_bytes())
        meta = {} if item.meta is None else json.loads(item.meta.read_text())
    except (decode.CorruptFileError, OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        stats.record("corrupt_file", item.name, str(err))
        return None
    extras: dict[str, Any] = {"key": item.name, "scene": meta.get("scene")}
    if meta.get("intrinsics") is not None:
        extras["intrinsics"] = np.asarray(meta["intrinsics"], np.float32)
    label = str(item.image) if item.depth is None else f"{item.image} + {item.depth}"
    return decode.assemble_sample(label, image, depth, mask, caption, extras, stats)


def iter_folder_samples(
    root: str | Path, depth_scale: float = 1000.0, stats: decode.SkipCounter | None = None
) -> Iterator[dict[str, Any]]:
    """Yield every readable sample of an RGB-D folder in name order (see module docstring)."""
    stats = stats if stats is not None else decode.SkipCounter()
    for item in list_folder(root):
        sample = load_folder_item(item, depth_scale, stats)
        if sample is not None:
            yield sample
