"""File codecs and bad-data rules shared by every on-disk reader (shards, RGB-D folders).

Rules: a corrupt or truncated file is skipped with a warning and counted (`SkipCounter`), never a
crash mid-epoch; NaN/inf/non-positive depth becomes invalid pixels (`batch.sanitize_depth`); an
image/depth size mismatch is a `ValueError` naming the file and both sizes; a missing caption is "".
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .batch import sanitize_depth

logger = logging.getLogger(__name__)

# 16-bit PNG depth stores integer millimetres; 0 means invalid, so the largest storable depth is
# 65535 mm. Deeper pixels saturate and are written as 0 (invalid) rather than clipped, because a
# clipped value would be a confidently wrong depth.
PNG16_SCALE = 1000.0
PNG16_MAX = 65535


class CorruptFileError(ValueError):
    """A file that cannot be decoded (truncated, wrong format). Readers skip these samples."""


class SkipCounter:
    """Counts skipped or repaired samples per reason and warns once per reason.

    Attributes:
        counts: reason -> number of occurrences (e.g. `corrupt_image`, `missing_caption`).
    """

    # Reasons that are expected in normal data (no caption) are logged once, not warned.
    QUIET = frozenset({"missing_caption", "missing_depth"})

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, reason: str, name: str, detail: str = "") -> None:
        """Count one event; warn (or log, for `QUIET` reasons) the first time a reason occurs."""
        self.counts[reason] += 1
        msg = f"{reason}: {name}" + (f" ({detail})" if detail else "")
        if reason in self.QUIET:
            if self.counts[reason] == 1:
                logger.info("%s; further cases are only counted", msg)
        else:
            warnings.warn(f"skipping bad data, {msg}", RuntimeWarning, stacklevel=2)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


# --------------------------------------------------------------------------------------------
# encoders (writers use these so format conventions live next to their decoders)
# --------------------------------------------------------------------------------------------


def encode_png(array: np.ndarray) -> bytes:
    """uint8 [H, W, 3] or [H, W], or uint16 [H, W] -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def encode_depth_png16(depth: np.ndarray, valid_mask: np.ndarray | None = None) -> bytes:
    """float metres [H, W] -> 16-bit PNG of millimetres; invalid or > 65.535 m pixels -> 0."""
    depth, valid = sanitize_depth(depth, valid_mask)
    mm = np.round(depth.astype(np.float64) * PNG16_SCALE)
    mm = np.where(valid & (mm <= PNG16_MAX), mm, 0)
    return encode_png(mm.astype(np.uint16))


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_mask(valid_mask: np.ndarray) -> bytes:
    """bool [H, W] -> 8-bit PNG, 0 / 255."""
    return encode_png(np.where(valid_mask, 255, 0).astype(np.uint8))


# --------------------------------------------------------------------------------------------
# decoders: each raises CorruptFileError for undecodable bytes
# --------------------------------------------------------------------------------------------


def _open_image(data: bytes, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # forces full decode so truncation is caught here, not later
    except Exception as err:
        raise CorruptFileError(f"cannot decode image {name}: {err}") from err
    return img


def image_to_rgb8(img: Image.Image, name: str) -> np.ndarray:
    """A decoded PIL image of any mode -> uint8 [H, W, 3] RGB.

    8-bit modes (grey, palette, RGBA, CMYK, ...) go through PIL's own conversion. PIL's
    `convert("RGB")` clips 16-bit grey (`I;16*`, `I`) to white, so those are scaled from
    [0, 65535] instead; float (`F`) images must lie in [0, 1].

    Raises:
        CorruptFileError: 32-bit integers beyond 16 bits, or floats outside [0, 1] (names `name`).
    """
    if img.mode.startswith("I"):
        arr = np.asarray(img).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise CorruptFileError(
                f"image {name}: {img.mode} values span [{arr.min():.0f}, {arr.max():.0f}], "
                "beyond 16 bits; save it as an 8- or 16-bit image"
            )
        grey = np.round(arr / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            raise CorruptFileError(
                f"image {name}: a float image must lie in [0, 1], got "
                f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]"
            )
        grey = np.round(arr * 255.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3] RGB (grey, RGBA, 16-bit and float are converted)."""
    return image_to_rgb8(_open_image(data, name), name)


def decode_depth_png(data: bytes, name: str, scale: float = PNG16_SCALE) -> np.ndarray:
    """Integer depth PNG -> float32 [H, W] metres = value / scale (scale 1000: millimetres)."""
    arr = np.asarray(_open_image(data, name))
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise CorruptFileError(
            f"depth PNG {name} must be single-channel integer, got {arr.dtype} {arr.shape}"
        )
    if arr.dtype == np.uint8:  # 8 bits cannot hold millimetres (255 mm max): a preview image
        raise CorruptFileError(
            f"depth PNG {name} is 8-bit; depth PNGs must be 16-bit integers (value / {scale:g} "
            "= metres). An 8-bit depth picture is a visualisation, not a measurement"
        )
    return (arr.astype(np.float64) / scale).astype(np.float32)


def decode_npy(data: bytes, name: str) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:
        raise CorruptFileError(f"cannot decode array {name}: {err}") from err
    if arr.dtype.kind not in "fiub":
        raise CorruptFileError(f"array {name} has dtype {arr.dtype}; expected numbers")
    return arr


def load_array(path: str | Path) -> np.ndarray:
    """A numeric `.npy` file (never unpickled) -> array; CorruptFileError names the file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise CorruptFileError(f"cannot read array {path}: {err}") from err
    if arr.dtype.kind not in "fiub":
        raise CorruptFileError(f"array {path} has dtype {arr.dtype}; expected numbers")
    return arr


def decode_depth_npy(data: bytes, name: str) -> np.ndarray:
    """.npy bytes -> float32 [H, W] (a trailing channel of 1 is squeezed)."""
    arr = decode_npy(data, name)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise CorruptFileError(f"depth array {name} must be [H, W], got shape {arr.shape}")
    return arr.astype(np.float32)


def decode_depth_exr(path: str | Path) -> np.ndarray:
    """OpenEXR file -> float32 [H, W] (channel `Z`, else `Y`, `R`, else the first one)."""
    try:
        import OpenEXR
    except ImportError:
        raise ImportError(
            f"reading EXR depth {path} needs OpenEXR: pip install 'modality-forcing[exr]'"
        ) from None
    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            for key in ("Z", "Y", "R", "RGB", "RGBA", *channels):
                if key in channels:
                    arr = np.asarray(channels[key].pixels, dtype=np.float32)
                    return arr if arr.ndim == 2 else arr[..., 0]
    except Exception as err:
        raise CorruptFileError(f"cannot decode EXR depth {path}: {err}") from err
    raise CorruptFileError(f"EXR depth {path} has no channels")


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """8-bit mask PNG -> bool [H, W] (pixels > 127 are valid)."""
    arr = np.asarray(_open_image(data, name).convert("L"))
    return arr > 127


def decode_text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", errors="replace").strip()


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def assemble_sample(
    name: str,
    image: np.ndarray,
    depth: np.ndarray | None,
    valid_mask: np.ndarray | None = None,
    caption: str | None = None,
    extras: dict[str, Any] | None = None,
    stats: SkipCounter | None = None,
) -> dict[str, Any]:
    """Validate decoded arrays and build one sample in the `data.batch` convention.

    Args:
        name: what to call the sample in errors (a file path or shard key).
        image: uint8 [H, W, 3].
        depth: float [H, W] metres; None means no depth (all pixels invalid: image-only sample).
        valid_mask: optional bool [H, W]; intersected with the finite-positive depth pixels.
        caption: None or "" gives "" (counted as `missing_caption` when None).
        extras: more keys copied into the sample (`intrinsics`, `scene`, `key`, ...).
        stats: where to count repairs (missing caption / depth).

    Returns:
        dict with `image`, `depth` float32 [H, W] (0 where invalid), `valid_mask` bool [H, W],
        `caption` and the extras.

    Raises:
        ValueError: image, depth and mask sizes disagree (names the sample and both sizes).
    """
    size = image.shape[:2]
    if depth is None:
        if stats is not None:
            stats.record("missing_depth", name)
        depth = np.zeros(size, np.float32)
        valid_mask = np.zeros(size, bool)
    for what, arr in (("depth", depth), ("mask", valid_mask)):
        if arr is not None and arr.shape[:2] != size:
            raise ValueError(
                f"{name}: image is {size[0]}x{size[1]} (HxW) but {what} is "
                f"{arr.shape[0]}x{arr.shape[1]}; resize them to agree before loading"
            )
    depth, valid = sanitize_depth(depth, valid_mask)
    if caption is None and stats is not None:
        stats.record("missing_caption", name)
    sample = {"image": image, "depth": depth, "valid_mask": valid, "caption": caption or ""}
    sample.update(extras or {})
    return sample
