"""Result export: colour maps (`data/colormap.py`), 16-bit depth PNGs, pinhole point clouds.

Follows the official release's outputs (reference §7): magma of 1/depth on the 5th-95th
percentile, back-projection stored as glTF (x, -y, -z), 3x3 depth-edge culling, median centring.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.colormap import (
    colorize_depth,
    colorize_disparity,
    colorize_uncertainty,
    valid_depth_mask,
)

DEPTH16_MAX = 65535  # 0 is reserved for invalid, so valid depth maps onto 1..65535
MAX_POINTS = 1_200_000  # the release's subsampling cap; never hit at 512^2 or 1024^2
POINT_CLOUD_FORMATS = {".ply": "ply", ".glb": "glb"}
FOV_AXES = ("vertical", "horizontal")
DEPTH_SPACES = {
    "relative": "relative depth, unit mean over valid pixels",
    "metric": "metric depth in metres",
}


# --------------------------------------------------------------------------------------------
# 16-bit depth PNG
# --------------------------------------------------------------------------------------------


def _encode_depth16(depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Quantise valid depth linearly onto 1..65535 (0 = invalid): (uint16 [H, W], min, max)."""
    q = np.zeros(depth.shape, np.uint16)
    if not valid.any():
        return q, 0.0, 0.0
    d = depth[valid].astype(np.float64)
    lo, hi = float(d.min()), float(d.max())
    # Constant depth: every valid pixel gets code 1 and decodes back to `lo` exactly.
    scale = (DEPTH16_MAX - 1) / (hi - lo) if hi > lo else 0.0
    q[valid] = np.round((d - lo) * scale).astype(np.uint16) + 1
    return q, lo, hi


def save_depth_png16(
    path: str | Path, depth: np.ndarray, valid_mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Write depth [H, W] as a 16-bit PNG: valid [min, max] -> 1..65535, 0 = invalid.

    Returns:
        (min, max) of valid depth, needed by `load_depth_png16`; (0, 0) when nothing is valid.
    """
    depth = np.asarray(depth, np.float32)
    q, lo, hi = _encode_depth16(depth, valid_depth_mask(depth, valid_mask))
    _write_png(Path(path), q)
    return lo, hi


def load_depth_png16(
    path: str | Path, depth_range: tuple[float, float] | list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `save_depth_png16`: (depth float32 [H, W] with 0 = invalid, valid bool [H, W])."""
    with Image.open(path) as img:
        q = np.asarray(img).astype(np.int64)
    lo, hi = (float(v) for v in depth_range)
    valid = q > 0
    depth = np.zeros(q.shape, np.float32)
    depth[valid] = lo + (q[valid] - 1) * ((hi - lo) / (DEPTH16_MAX - 1))
    return depth, valid


# --------------------------------------------------------------------------------------------
# camera and back-projection
# --------------------------------------------------------------------------------------------


def intrinsics_from_fov(
    height: int, width: int, fov_deg: float, axis: str = "vertical"
) -> np.ndarray:
    """Centred pinhole K [3, 3] (float64) with fx = fy and cx = W/2, cy = H/2.

    Pixel centres sit at (u + 0.5, v + 0.5). `axis` says which image side `fov_deg` spans; the
    release computes f from the width (horizontal in effect), which differs only when H != W.
    """
    if axis not in FOV_AXES:
        raise ValueError(f"unknown fov axis {axis!r}; choose from {list(FOV_AXES)}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    side = height if axis == "vertical" else width
    f = side / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float64)


def depth_edge_mask(
    depth: np.ndarray, rtol: float = 0.04, valid_mask: np.ndarray | None = None
) -> np.ndarray:
    """True at depth discontinuities: bool [H, W] where 3x3 (max - min) > rtol * depth.

    Invalid pixels are ignored in the window (and never flagged), so sparse or masked depth
    does not mark every neighbour of a hole as an edge; on dense depth this is the release's rule.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    depth = np.asarray(depth, np.float64)
    valid = valid_depth_mask(depth, valid_mask)
    local_max = maximum_filter(np.where(valid, depth, -np.inf), size=3)
    local_min = minimum_filter(np.where(valid, depth, np.inf), size=3)
    with np.errstate(invalid="ignore"):
        edge = (local_max - local_min) > rtol * np.maximum(np.nan_to_num(depth), 1e-6)
    return edge & valid


def backproject(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Z-depth [H, W] -> points float32 [H, W, 3] in the glTF camera frame (x, -y, -z).

    +Y is up and the camera looks down -Z; no masking or centring (see `depth_to_points`).
    """
    depth = np.asarray(depth, np.float64)
    k = np.asarray(intrinsics, np.float64)
    h, w = depth.shape
    u = np.arange(w, dtype=np.float64) + 0.5  # pixel centres
    v = np.arange(h, dtype=np.float64) + 0.5
    x = (u[None, :] - k[0, 2]) * depth / k[0, 0]
    y = (v[:, None] - k[1, 2]) * depth / k[1, 1]
    return np.stack([x, -y, -depth], axis=-1).astype(np.float32)  # [H, W, 3]


def depth_to_points(
    depth: np.ndarray,
    rgb: np.ndarray,
    intrinsics: np.ndarray,
    valid_mask: np.ndarray | None = None,
    edge_rtol: float = 0.04,
    center: bool = True,
    max_points: int | None = MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Coloured point cloud from depth [H, W] and RGB uint8 [H, W, 3].

    Drops invalid pixels and, when `edge_rtol` > 0, depth-edge pixels (flying points between
    surfaces); keeps at most `max_points` (seeded subsample); centres by the per-coordinate median.

    Returns:
        points float32 [N, 3] in glTF convention (x, -y, -z), colors uint8 [N, 3].
    """
    depth = np.asarray(depth, np.float32)
    rgb = np.asarray(rgb)
    if rgb.shape != (*depth.shape, 3):
        raise ValueError(f"rgb shape {rgb.shape} does not match depth [H, W] {depth.shape} + 3")
    keep = valid_depth_mask(depth, valid_mask)
    if edge_rtol > 0:
        keep &= ~depth_edge_mask(depth, edge_rtol, valid_mask)
    points = backproject(np.where(keep, depth, 0), intrinsics)[keep]  # [N, 3]
    colors = rgb[keep].astype(np.uint8)
    if max_points is not None and len(points) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(len(points), max_points, replace=False))
        points, colors = points[idx], colors[idx]
    if center and len(points):
        points = points - np.median(points, axis=0).astype(np.float32)
    return points, colors


def save_point_cloud(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write points float32 [N, 3] + colors uint8 [N, 3] as `.ply` or `.glb` (via trimesh)."""
    import trimesh

    path = Path(path)
    fmt = POINT_CLOUD_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"unknown point-cloud suffix {path.suffix!r}; choose from {list(POINT_CLOUD_FORMATS)}"
        )
    points = np.asarray(points, np.float32)
    colors = np.asarray(colors, np.uint8)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(
            f"need points [N, 3] and colors [N, 3]; got {points.shape}, {colors.shape}"
        )
    if len(points) == 0:
        raise ValueError(f"empty point cloud: no valid depth pixels to write to {path}")
    cloud = trimesh.PointCloud(points, colors=colors)
    # GLB goes through a Scene (as in the release) so viewers get a node, not a bare buffer.
    data = (trimesh.Scene([cloud]) if fmt == "glb" else cloud).export(file_type=fmt)
    atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode())
    return path


# --------------------------------------------------------------------------------------------
# writing a result directory
# --------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write_png(path: Path, array: np.ndarray) -> Path:
    return atomic_write_bytes(path, _png_bytes(array))


def _write_npy(path: Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# `save_result(outputs=...)` names (the CLI's `--outputs`) -> the files they write
OUTPUTS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb",),
    "depth": ("depth",),
    "depth16": ("depth16",),
    "color": ("depth_color",),
    "disparity": ("disparity",),
    "uncertainty": ("uncertainty", "uncertainty_color"),
    "ply": ("cloud_ply",),
    "glb": ("cloud_glb",),
}


def output_files(names: Iterable[str] | None) -> frozenset[str] | None:
    """The file keys of `OUTPUTS` names (None: every file); an unknown name is a ValueError."""
    if names is None:
        return None
    unknown = sorted(set(names) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; choose from {list(OUTPUTS)}")
    return frozenset(key for name in names for key in OUTPUTS[name])


def _write_depth(
    out: Path, depth: np.ndarray, valid: np.ndarray, meta: dict[str, Any],
    want: Callable[[str], bool] = lambda _: True,
) -> dict[str, Path]:  # fmt: skip
    """depth.npy, depth16.png, depth_color.png, disparity_magma.png (those `want`ed); records
    their meaning."""
    space = meta.setdefault("depth_space", "relative")
    if space not in DEPTH_SPACES:
        raise ValueError(f"unknown depth_space {space!r}; choose from {list(DEPTH_SPACES)}")
    meta["depth_description"] = DEPTH_SPACES[space] + "; 0 = invalid"
    meta["valid_fraction"] = float(valid.mean())
    files = {}
    if want("depth"):
        files["depth"] = _write_npy(out / "depth.npy", np.where(valid, depth, 0).astype(np.float32))
    if want("depth16"):
        files["depth16"] = out / "depth16.png"
        meta["depth16_range"] = list(save_depth_png16(files["depth16"], depth, valid))
        meta["depth16_encoding"] = "linear: 1..65535 <-> depth16_range [min, max], 0 = invalid"
    if want("depth_color"):
        files["depth_color"] = _write_png(out / "depth_color.png", colorize_depth(depth, valid))
    if want("disparity"):
        files["disparity"] = _write_png(out / "disparity_magma.png",
                                        colorize_disparity(depth, valid))  # fmt: skip
    return files


def save_result(
    out_dir: str | Path,
    *,
    image: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    valid_mask: np.ndarray | None = None,
    intrinsics: np.ndarray | None = None,
    fov_deg: float = 60.0,
    fov_axis: str = "vertical",
    metadata: dict[str, Any] | None = None,
    point_cloud: bool = True,
    edge_rtol: float = 0.04,
    outputs: frozenset[str] | None = None,
) -> dict[str, Path]:
    """Write whatever is given into `out_dir`, each file atomically, plus `metadata.json`.

    Files: rgb.png; depth.npy (float32, invalid = 0), depth16.png, depth_color.png (Spectral),
    disparity_magma.png; uncertainty.npy, uncertainty.png; cloud.ply, cloud.glb (image and depth
    both needed, skipped when no point survives). `metadata["depth_space"]` is "relative"
    (default) or "metric"; the camera is `intrinsics` [3, 3] or `fov_deg` along `fov_axis`.

    Args:
        out_dir: result directory (created).
        image: RGB uint8 [H, W, 3].
        depth: depth float [H, W]; 0 / NaN / inf = invalid.
        uncertainty: per-pixel uncertainty float [H, W].
        valid_mask: bool [H, W] further restricting valid depth.
        intrinsics: pinhole K [3, 3]; None derives it from `fov_deg` and `fov_axis`.
        metadata: extra JSON-able keys (prompt, mode, seed, ...), merged into metadata.json.
        point_cloud: write cloud.ply and cloud.glb when image and depth are given.
        edge_rtol: depth-edge culling for the cloud (0 disables).
        outputs: the file keys to write (`output_files`); None writes every file.

    Returns:
        Paths keyed by rgb, depth, depth16, depth_color, disparity, uncertainty,
        uncertainty_color, cloud_ply, cloud_glb, metadata (only those written).
    """
    out = Path(out_dir).resolve()  # absolute paths: a gallery elsewhere can link to them
    out.mkdir(parents=True, exist_ok=True)
    want = (lambda _: True) if outputs is None else outputs.__contains__
    meta: dict[str, Any] = dict(metadata or {})
    files: dict[str, Path] = {}
    shapes = {np.shape(a)[:2] for a in (image, depth, uncertainty, valid_mask) if a is not None}
    if len(shapes) > 1:
        raise ValueError(f"image/depth/uncertainty/valid_mask sizes differ: {sorted(shapes)}")
    if image is not None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        if want("rgb"):
            files["rgb"] = _write_png(out / "rgb.png", image)
    if depth is not None:
        depth = np.asarray(depth, np.float32)
        valid = valid_depth_mask(depth, valid_mask)
        files.update(_write_depth(out, depth, valid, meta, want))
    if uncertainty is not None:
        unc = np.asarray(uncertainty, np.float32)
        if want("uncertainty"):
            files["uncertainty"] = _write_npy(out / "uncertainty.npy", unc)
        if want("uncertainty_color"):
            files["uncertainty_color"] = _write_png(
                out / "uncertainty.png", colorize_uncertainty(unc, valid_mask)
            )
    if shapes:
        (h, w) = next(iter(shapes))
        meta["img_hw"] = [h, w]
        if intrinsics is None:
            meta.update(fov_deg=float(fov_deg), fov_axis=fov_axis)
            intrinsics = intrinsics_from_fov(h, w, fov_deg, fov_axis)
        meta["intrinsics"] = np.asarray(intrinsics, np.float64).tolist()
    clouds = [k for k in ("cloud_ply", "cloud_glb") if want(k)]
    if point_cloud and clouds and image is not None and depth is not None:
        points, colors = depth_to_points(depth, image, intrinsics, valid, edge_rtol)
        meta.update(num_points=len(points), edge_rtol=edge_rtol, point_convention="gltf x,-y,-z")
        if len(points):  # an all-invalid depth still gets its other files, just no cloud
            for key in clouds:
                suffix = key.split("_")[1]
                files[key] = save_point_cloud(out / f"cloud.{suffix}", points, colors)
    files["metadata"] = out / "metadata.json"
    meta["files"] = {k: p.name for k, p in files.items()}
    text = json.dumps(meta, indent=2, default=_jsonable) + "\n"
    atomic_write_bytes(files["metadata"], text.encode())
    return files
