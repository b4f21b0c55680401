"""Images and depth maps handed to us by a user (CLI, app, pipeline): one way to read them safely.

Sizes are read from the file header and checked before anything is decoded, so a small file that
expands to gigabytes (a "decompression bomb") is refused cheaply; 16-bit and float images are
scaled to 8 bits instead of clipped; EXIF orientation is applied; depth files must say their units
(float `.npy` metres, 16-bit `.png` millimetres, `.exr`). Every refusal is an `InputError` (a
`ValueError`) naming the file and what is wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .decode import CorruptFileError, decode_depth_exr, decode_depth_png, image_to_rgb8

# Inputs above this many pixels are refused before decoding. 50 MP covers any camera photo;
# the models work at 32-1024 px, so larger inputs would only cost time and memory.
MAX_PIXELS = 50_000_000
# PIL's own bomb check (warns above the limit, raises above twice it) backs ours up for files
# opened elsewhere in the package.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEPTH_SUFFIXES = (".npy", ".png", ".exr")
DEPTH_KINDS = ".npy (float metres), 16-bit single-channel .png (millimetres) or .exr"


class InputError(ValueError):
    """A user-supplied file or array that cannot be used; the message names it and the fix."""


def _check_pixels(name: str, height: int, width: int, max_pixels: int) -> None:
    if height < 1 or width < 1:
        raise InputError(f"'{name}' is empty ({height}x{width} pixels)")
    if height * width > max_pixels:
        raise InputError(
            f"'{name}' is {width}x{height} pixels ({height * width / 1e6:.0f} MP), above the "
            f"limit of {max_pixels / 1e6:.0f} MP; downsize it first"
        )


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image or depth file, from its header alone (nothing decoded)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:  # memory-mapped: only the header is read
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"'{path}' is not a readable .npy array ({err})") from None
        shape, dtype = arr.shape, arr.dtype
        if dtype.kind not in "fiu" or len(shape) not in (2, 3):
            raise InputError(
                f"'{path}' holds a {dtype} array of shape {shape}; expected a float [H, W] depth "
                "map in metres"
            )
        return int(shape[0]), int(shape[1])
    if path.suffix.lower() == ".exr":
        return (0, 0)  # OpenEXR decodes the header and pixels together; checked after reading
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
    except Image.DecompressionBombError as err:  # PIL's own limit, at twice MAX_IMAGE_PIXELS
        raise InputError(f"'{path}' is too large to read: {err}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"'{path}' is not an image file this can read ({err})") from None
    return height, width


def read_image(
    path: str | Path, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> np.ndarray:
    """Read an image file -> uint8 [H, W, 3] RGB, EXIF rotation applied.

    Args:
        path: PNG, JPEG, WebP, BMP or TIFF (8- or 16-bit, grey, RGB or RGBA).
        max_pixels: refuse larger images (checked from the header, before decoding).
        max_side: shrink (aspect kept) so neither side exceeds this, when given.

    Raises:
        InputError: missing, unreadable, truncated or too large (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image '{path}' does not exist")
    _check_pixels(str(path), *image_size(path), max_pixels)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if max_side is not None:
                img.thumbnail((max_side, max_side))  # keeps the aspect ratio
            return image_to_rgb8(img, str(path))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise InputError(f"'{path}' is not a readable image ({err})") from None


def read_depth(
    path: str | Path,
    max_pixels: int = MAX_PIXELS,
    depth_scale: float = 1000.0,
    max_side: int | None = None,
) -> np.ndarray:
    """Read a depth file -> float32 [H, W] metres, 0 where invalid (non-finite or <= 0).

    Args:
        path: `.npy` float metres, `.png` 16-bit integer / `depth_scale` (1000: millimetres), or
            `.exr` (needs OpenEXR).
        max_pixels: refuse larger maps (checked from the header, before decoding).
        depth_scale: units per metre of integer PNGs.
        max_side: subsample (every k-th pixel, so no depth is blended across an edge) until
            neither side exceeds this, when given.

    Raises:
        InputError: wrong kind of file, unreadable, too large, or no valid pixel.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise InputError(f"'{path}' is not a depth file: expected {DEPTH_KINDS}")
    if not path.is_file():
        raise InputError(f"depth file '{path}' does not exist")
    if suffix != ".exr":  # EXR sizes are checked after decoding (no separate header read)
        _check_pixels(str(path), *image_size(path), max_pixels)
    try:
        if suffix == ".npy":
            depth = np.load(path, allow_pickle=False)
            depth = depth[..., 0] if depth.ndim == 3 and depth.shape[-1] == 1 else depth
            if depth.ndim != 2:
                raise InputError(f"'{path}': a depth array must be [H, W], got {depth.shape}")
        elif suffix == ".png":
            depth = decode_depth_png(path.read_bytes(), str(path), scale=depth_scale)
        else:
            depth = decode_depth_exr(path)
            _check_pixels(str(path), *depth.shape[:2], max_pixels)
    except (CorruptFileError, OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read depth from '{path}': {err}") from None
    depth = np.asarray(depth)  # no float64 copy: a 16 MP map stays within a few hundred MB
    if depth.dtype.kind not in "fiu":
        raise InputError(f"'{path}' holds {depth.dtype} values; expected a float depth map")
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise InputError(f"'{path}' holds no valid depth: every pixel is 0, negative or NaN")
    if depth.dtype.itemsize > 4 and depth[valid].max() > np.finfo(np.float32).max:
        raise InputError(f"'{path}' holds depth values too large for float32 (max {depth.max()})")
    depth = np.where(valid, depth, 0).astype(np.float32, copy=False)
    if max_side is not None and max(depth.shape) > max_side:
        step = -(-max(depth.shape) // max_side)  # ceil division
        depth = np.ascontiguousarray(depth[::step, ::step])
    return depth


def image_array_to_unit(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A user's image array -> float32 [H, W, 3] in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; float arrays must already lie in [0, 1] (a
    tolerance of 1e-3 for rounding); [H, W] grey is repeated, an alpha channel dropped.

    Raises:
        InputError: another shape or dtype, non-finite values, or floats outside [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None].repeat(3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"`{name}` array must be [H, W, 3] (or [H, W] grey), got {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_ or arr.dtype.kind not in "f":
        raise InputError(
            f"`{name}` array has dtype {arr.dtype}; pass uint8, uint16 or float in [0, 1]"
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"`{name}` array holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(
            f"`{name}` float array must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; divide 8-bit "
            "values by 255"
        )
    return arr.clip(0.0, 1.0)
