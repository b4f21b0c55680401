"""Generic "image + sparse points": colour images with a few measured depths, e.g. SfM (COLMAP)
tracks, a LiDAR sweep or triangulated features, as exported by your own tooling.

Layout (any folder depth under `root`; NAME is a relative path without extension):
  `NAME.png|jpg|jpeg`   colour image
  `NAME.npz`            `uv` float [N, 2] pixel coordinates (x right, y down), `depth` float [N]
                        planar z-depth in metres; optional `K` float [3, 3] intrinsics
  `NAME.txt`            optional caption
Pixel coordinates follow OpenCV by default (`pixel_center=0.0`: pixel (0, 0)'s centre is at
(0, 0)); COLMAP puts it at (0.5, 0.5) (`pixel_center=0.5`). Points outside the image or with
non-finite / non-positive depth are dropped; when several points fall in one pixel the nearest
(smallest depth) wins, as a z-buffer would.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import decode
from .base import TrainingSet, first_file, make_sample, read_image

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def rasterize_points(
    uv: np.ndarray, depth: np.ndarray, height: int, width: int, pixel_center: float = 0.0
) -> np.ndarray:
    """Sparse points -> float32 [H, W] depth map, 0 where no point landed (z-buffered).

    Args:
        uv: [N, 2] pixel coordinates (x, y).
        depth: [N] depths.
        height, width: image size.
        pixel_center: coordinate of pixel (0, 0)'s centre (0.0 OpenCV, 0.5 COLMAP).
    """
    cols = np.floor(uv[:, 0] - pixel_center + 0.5).astype(np.int64)
    rows = np.floor(uv[:, 1] - pixel_center + 0.5).astype(np.int64)
    keep = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    keep &= np.isfinite(depth) & (depth > 0)
    out = np.full(height * width, np.inf)
    np.minimum.at(out, rows[keep] * width + cols[keep], depth[keep].astype(np.float64))
    return np.where(np.isfinite(out), out, 0.0).reshape(height, width).astype(np.float32)


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(uv [N, 2], depth [N], K [3, 3] or None) from a points `.npz`; CorruptFileError if bad."""
    try:
        with np.load(path, allow_pickle=False) as data:
            uv, depth = np.asarray(data["uv"], np.float64), np.asarray(data["depth"], np.float64)
            k = np.asarray(data["K"], np.float32) if "K" in data else None
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise decode.CorruptFileError(f"cannot read points {path}: {err}") from err
    if uv.ndim != 2 or uv.shape[1] != 2 or depth.shape != uv.shape[:1]:
        raise decode.CorruptFileError(
            f"points {path}: want uv [N, 2] and depth [N], got {uv.shape} and {depth.shape}"
        )
    if k is not None and k.shape != (3, 3):
        raise decode.CorruptFileError(f"points {path}: K must be [3, 3], got {k.shape}")
    return uv, depth, k


class SparsePoints(TrainingSet):
    """Images with sparse point depths (module docstring).

    Args:
        root: folder searched recursively for `NAME.npz` with a `NAME.png|jpg|jpeg` beside it.
        pixel_center: 0.0 (OpenCV, default) or 0.5 (COLMAP).
        stats: skip counter.
    """

    name = "points"
    kind = "sparse"

    def __init__(
        self,
        root: str | Path,
        pixel_center: float = 0.0,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        self.pixel_center = float(pixel_center)
        super().__init__(root, stats)

    def _list_entries(self) -> list[tuple[Path, Path]]:
        """(image, points) path pairs; points files without an image are skipped and counted."""
        entries = []
        for points in sorted(self.root.rglob("*.npz")):
            image = first_file([points.with_suffix(ext) for ext in IMAGE_EXTS])
            if image is None:
                self.stats.record("missing_image", str(points))
                continue
            entries.append((image, points))
        return entries

    def _load(self, entry: tuple[Path, Path]) -> dict[str, Any]:
        image_path, points_path = entry
        image = read_image(image_path)
        uv, depth, k = read_points(points_path)
        depth_map = rasterize_points(uv, depth, *image.shape[:2], self.pixel_center)
        caption_path = points_path.with_suffix(".txt")
        caption = decode.decode_text(caption_path.read_bytes()) if caption_path.is_file() else ""
        key = points_path.relative_to(self.root).with_suffix("").as_posix()
        return make_sample(f"{image_path} + {points_path}", image, depth_map, None, key,
                           self.stats, caption=caption, intrinsics=k)  # fmt: skip
