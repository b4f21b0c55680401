"""Known depth points handed to us by a user (depth completion): read, checked, put on a grid.

Accepted forms, each giving (depth float32 [H, W] metres with 0 where unknown, known mask bool):
  `.npy`  a float [H, W] map in metres, 0 = unknown; or an [N, 3] array of (x, y, metres) rows,
          x / y in pixels of the image (column, row; pixel (0, 0) covers [0, 1) x [0, 1))
  `.png`  a 16-bit single-channel map in millimetres, 0 = unknown
  `.npz`  arrays `depth` ([H, W] metres) and `mask` ([H, W] bool: which pixels are known)
  arrays or tensors of the same forms through the Python API.
Refused with an `InputError` naming the input: no known point, a point outside the image, NaN,
infinite or negative values (0 marks unknown; NaN is not a way to say it), a map or mask whose
size differs from the image's.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode import CorruptFileError, decode_depth_png
from .inputs import MAX_PIXELS, InputError, _check_pixels, image_size

SPARSE_SUFFIXES = (".npy", ".png", ".npz")
SPARSE_KINDS = (
    ".npy (float metres, 0 = unknown; or [N, 3] rows of x, y, metres), 16-bit .png "
    "(millimetres, 0 = unknown) or .npz with `depth` and `mask`"
)


def read_sparse(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, Any]:
    """Read a known-points file -> (depth or [N, 3] points, mask or None), unchecked (see
    `sparse_map`, which checks them against the image)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SPARSE_SUFFIXES:
        raise InputError(f"'{path}' is not a sparse depth file: expected {SPARSE_KINDS}")
    if not path.is_file():
        raise InputError(f"sparse depth file '{path}' does not exist")
    try:
        if suffix == ".npz":
            check_npz_members(path, max_pixels)
            with np.load(path, allow_pickle=False) as z:
                if "depth" not in z:
                    raise InputError(f"'{path}' has no `depth` array (it holds {list(z.keys())})")
                depth = np.asarray(z["depth"])
                mask = np.asarray(z["mask"]) if "mask" in z else None
            _check_pixels(str(path), *(depth.shape[:2] if depth.ndim >= 2 else (1, 0)),
                          max_pixels)  # fmt: skip
            return depth, mask
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if not (arr.ndim == 2 and arr.shape[1] == 3):  # points lists have no pixel grid
                _check_pixels(str(path), *image_size(path), max_pixels)
            return np.asarray(arr), None
        _check_pixels(str(path), *image_size(path), max_pixels)
        return decode_depth_png(path.read_bytes(), str(path)), None
    except (CorruptFileError, OSError, ValueError, EOFError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read sparse depth from '{path}': {err or 'empty file'}") from None


def check_npz_members(path: Path, max_pixels: int) -> None:
    """Refuse an .npz whose zip directory declares a member larger than a `max_pixels` float64
    map, before anything is decompressed: a small archive can hold gigabytes of zeros. (Python's
    zipfile stops reading a member at its declared size.)"""
    try:
        with zipfile.ZipFile(path) as archive:
            largest = max((m.file_size for m in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"'{path}' is not a readable .npz archive ({err})") from None
    limit = 8 * max_pixels + 4096  # float64 values plus the .npy header
    if largest > limit:
        raise InputError(
            f"'{path}' holds an array of {largest / 1e6:.0f} MB once decompressed, above the "
            f"limit of {limit / 1e6:.0f} MB ({max_pixels / 1e6:.0f} MP of float64); downsize it "
            "first"
        )


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def points_to_map(points: np.ndarray, size: tuple[int, int], name: str
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """[N, 3] (x, y, metres) rows -> (depth [H, W], known mask); points on one pixel averaged."""
    h, w = size
    if not np.isfinite(points).all():
        raise InputError(f"{name} holds NaN or infinite coordinates or depths")
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    outside = (x < 0) | (x >= w) | (y < 0) | (y >= h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"{name}: {int(outside.sum())} of {len(points)} points lie outside the {w}x{h} image "
            f"(e.g. row {i}: x={x[i]:g}, y={y[i]:g}); coordinates are pixels, x < {w}, y < {h}"
        )
    if (z <= 0).any():
        raise InputError(f"{name}: {int((z <= 0).sum())} points have depth <= 0; give metres > 0")
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    total, count = np.zeros(h * w), np.zeros(h * w)
    np.add.at(total, row * w + col, z)
    np.add.at(count, row * w + col, 1)
    known = count > 0
    depth = np.where(known, total / np.maximum(count, 1), 0.0)
    return depth.reshape(h, w).astype(np.float32), known.reshape(h, w)


def sparse_map(
    sparse: Any, mask: Any = None, size: tuple[int, int] | None = None, name: str = "`sparse`"
) -> tuple[np.ndarray, np.ndarray]:
    """Check known depth points against an image of `size` (H, W) and return them on its grid.

    Args:
        sparse: a path (`read_sparse`), an [H, W] (or [H, W, 1]) depth map in metres with 0 where
            unknown, or an [N, 3] array of (x, y, metres) points; numpy or torch.
        mask: optional [H, W] bool known mask (default: depth > 0).
        size: the image's (H, W); a map of another size is refused (points need it).
        name: how errors name the input (a file name, `--sparse`, ...).

    Returns:
        (depth float32 [H, W] metres, 0 where unknown; known bool [H, W], at least one True).
    """
    if isinstance(sparse, str | Path):
        name = f"'{sparse}'"
        sparse, file_mask = read_sparse(sparse)
        mask = file_mask if mask is None else mask
    arr = _numpy(sparse)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name} holds {arr.dtype} values; expected depths in metres")
    if arr.ndim == 2 and arr.shape[1] == 3 and mask is None and not (size and size[1] == 3):
        if size is None:
            raise InputError(f"{name} is a list of points: the image size is needed to place it")
        return points_to_map(arr.astype(np.float64), size, f"{name} (read as {len(arr)} "
                             "points: rows of x, y, metres)")  # fmt: skip
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{name} must be an [H, W] depth map or [N, 3] points, got {arr.shape}")
    if size is not None and tuple(arr.shape) != tuple(size):
        raise InputError(
            f"{name} is {arr.shape[1]}x{arr.shape[0]} pixels but the image is {size[1]}x{size[0]}"
            "; give known points on the image's own pixel grid"
        )
    arr = arr.astype(np.float64)
    if mask is not None:
        m = _numpy(mask)
        m = m[..., 0] if m.ndim == 3 and m.shape[-1] == 1 else m
        if tuple(m.shape) != tuple(arr.shape):
            raise InputError(f"{name}: the mask has shape {tuple(m.shape)} but the depth map "
                             f"{tuple(arr.shape)}; they must match pixel for pixel")  # fmt: skip
        if m.dtype != np.bool_ and not np.isin(m, (0, 1)).all():
            raise InputError(f"{name}: the mask must be boolean (or 0 / 1)")
        known = m.astype(bool)
        bad = known & ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise InputError(f"{name}: {int(bad.sum())} known pixels have a NaN, infinite or "
                             "non-positive depth")  # fmt: skip
    else:
        if not np.isfinite(arr).all():
            raise InputError(f"{name} holds NaN or infinite values; mark unknown pixels with 0 "
                             "(or pass a mask)")  # fmt: skip
        known = arr > 0
    if (np.isfinite(arr) & (arr < 0)).any():
        raise InputError(f"{name} holds negative depths; depth is a distance in metres, 0 = "
                         "unknown")  # fmt: skip
    if not known.any():
        raise InputError(f"{name} has no known point: every pixel is 0 (unknown)")
    if arr[known].max() > np.finfo(np.float32).max:
        raise InputError(f"{name} holds depths too large for float32")
    return np.where(known, arr, 0.0).astype(np.float32), known


def point_mask(
    spec: str, depth: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
    intrinsics: np.ndarray | None = None, pitch_deg: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """bool [H, W] known pixels drawn from a dense map by `spec`: `random:N` (N uniformly random
    valid pixels, Marigold-DC's protocol with N = 500) or `lidar:B` (a B-beam spinning LiDAR,
    `sparsify.lidar`; needs the camera `intrinsics`)."""
    from .sparsify import lidar, random_pixels

    kind, n = parse_point_spec(spec)
    if kind == "lidar":
        if intrinsics is None:
            raise ValueError(f"'{spec}' needs the camera intrinsics (procedural scenes have them)")
        return lidar(depth, valid, intrinsics, rng, beams=n, pitch_deg=pitch_deg)
    return random_pixels(valid, n, rng)


def parse_point_spec(spec: str) -> tuple[str, int]:
    """`random:N` / `lidar:B` -> (kind, N or B); anything else is refused, naming the forms."""
    kind, _, arg = spec.partition(":")
    if kind not in ("random", "lidar") or not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"unknown point pattern '{spec}'; use random:N or lidar:B (N, B >= 1)")
    return kind, int(arg)
