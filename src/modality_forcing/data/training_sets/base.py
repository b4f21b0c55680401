"""Shared parts of the training-set readers: the `TrainingSet` base class, file decoders that follow
the bad-data rules of `data/decode.py`, and the aspect-preserving resize + centre crop to the
training size (never a stretch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .. import decode

KINDS = ("dense", "sparse")


class TrainingSet:
    """A training set read from its distributed layout: an indexable list of samples.

    Samples follow `data/batch.py`: `image` uint8 [H, W, 3], `depth` float32 [H, W] metres (0 where
    invalid), `valid_mask` bool [H, W], `caption` ("" when the set has none), `key`, and
    `intrinsics` float32 [3, 3] where the set provides them. `load(i)` returns None for a sample
    whose files are corrupt or missing (counted in `stats`); a size mismatch between image and
    depth raises, naming the files.

    Attributes:
        name: registry key.
        kind: `dense` (every pixel has depth, e.g. synthetic) or `sparse` (sensor depth with holes).
        entries: what one sample is made from, in a fixed (sorted) order.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "dense"
    # Sets that render at the requested training size take `height` / `width` options instead of
    # being resized (the procedural world).
    renders_at_size: ClassVar[bool] = False

    def __init__(self, root: str | Path, stats: decode.SkipCounter | None = None) -> None:
        self.root = Path(root)
        self.stats = stats if stats is not None else decode.SkipCounter()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: dataset root {self.root} does not exist")
        self.entries: Any = self._list_entries()
        if len(self.entries) == 0:
            raise FileNotFoundError(
                f"{self.name}: no samples under {self.root}; expected the layout in "
                f"modality_forcing.data.training_sets.{type(self).__module__.rsplit('.', 1)[-1]}"
            )

    # -- to implement ---------------------------------------------------------------------------

    def _list_entries(self) -> Any:
        """A sized, indexable list of what each sample is read from."""
        raise NotImplementedError

    def _load(self, entry: Any) -> dict[str, Any]:
        """Read one entry; raise `CorruptFileError` / `OSError` for unreadable files."""
        raise NotImplementedError

    # -- sequence protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> dict[str, Any] | None:
        """Sample `index`, or None (counted as `corrupt_file`) when its files cannot be read."""
        entry = self.entries[index]
        try:
            return self._load(entry)
        except (decode.CorruptFileError, OSError) as err:
            self.stats.record("corrupt_file", str(entry), str(err))
            return None

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return self.load(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every readable sample in order (bad ones skipped and counted)."""
        for i in range(len(self)):
            sample = self.load(i)
            if sample is not None:
                yield sample


# --------------------------------------------------------------------------------------------
# file decoders (CorruptFileError for undecodable bytes, OSError for missing files)
# --------------------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """Any PNG/JPEG file -> uint8 [H, W, 3] RGB."""
    return decode.decode_image(path.read_bytes(), str(path))


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """Single-channel integer PNG -> float32 [H, W] = value / scale (0 stays 0: invalid)."""
    return decode.decode_depth_png(path.read_bytes(), str(path), scale=scale)


def first_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def make_sample(
    label: str,
    image: np.ndarray,
    depth: np.ndarray,
    valid_mask: np.ndarray | None,
    key: str,
    stats: decode.SkipCounter,
    caption: str = "",
    intrinsics: np.ndarray | None = None,
) -> dict[str, Any]:
    """`decode.assemble_sample` (size checks, NaN/inf/<= 0 depth invalid) plus key/intrinsics."""
    extras: dict[str, Any] = {"key": key}
    if intrinsics is not None:
        extras["intrinsics"] = np.asarray(intrinsics, np.float32)
    return decode.assemble_sample(label, image, depth, valid_mask, caption, extras, stats)


# --------------------------------------------------------------------------------------------
# resize + centre crop to the training size
# --------------------------------------------------------------------------------------------


def _nearest_index(out_len: int, offset: int, resized: int, source: int) -> np.ndarray:
    """Source index of each output pixel centre after resizing `source` -> `resized`, cropping."""
    centres = (np.arange(out_len) + offset + 0.5) * source / resized
    return np.clip(np.floor(centres).astype(np.int64), 0, source - 1)


def fit_to_size(sample: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """Resize so the sample covers height x width keeping its aspect ratio, then centre crop.

    The image is resampled with PIL's bilinear filter (area-aware when shrinking); depth,
    `valid_mask` and any other per-pixel array with nearest neighbour, so no depth value is
    invented and sparse points stay points. `intrinsics` are scaled and shifted to match.

    Args:
        sample: a sample in the `data/batch.py` convention, any size.
        height, width: the training size.

    Returns:
        A new sample of size height x width (the input itself when it already has that size).
    """
    src_h, src_w = sample["image"].shape[:2]
    if (src_h, src_w) == (height, width):
        return sample
    scale = max(height / src_h, width / src_w)
    res_h = max(height, math.ceil(src_h * scale - 1e-6))
    res_w = max(width, math.ceil(src_w * scale - 1e-6))
    top, left = (res_h - height) // 2, (res_w - width) // 2
    rows = _nearest_index(height, top, res_h, src_h)
    cols = _nearest_index(width, left, res_w, src_w)
    out = dict(sample)
    for name, value in sample.items():
        if isinstance(value, np.ndarray) and value.shape[:2] == (src_h, src_w) and name != "image":
            out[name] = value[rows[:, None], cols[None, :]]
    resized = Image.fromarray(sample["image"]).resize((res_w, res_h), Image.BILINEAR)
    out["image"] = np.asarray(resized)[top : top + height, left : left + width].copy()
    if sample.get("intrinsics") is not None:
        k = np.array(sample["intrinsics"], np.float64)
        k[0] *= res_w / src_w  # fx, skew, cx
        k[1] *= res_h / src_h  # fy, cy
        k[0, 2] -= left
        k[1, 2] -= top
        out["intrinsics"] = k.astype(np.float32)
    return out


def check_crop(crop: float, what: str = "mixture crop") -> float:
    """`crop` itself when it is a valid side fraction for `random_crop`, in (0, 1]."""
    if not 0 < crop <= 1:
        raise ValueError(f"{what} must be in (0, 1], got {crop}")
    return crop


def random_crop(sample: dict[str, Any], crop: float, rng: np.random.Generator) -> dict[str, Any]:
    """A random window of the sample, same aspect ratio, at its native resolution.

    Each side keeps a fraction s ~ U(crop, 1) (one s for both sides), the window's top-left
    corner is uniform over the valid positions; every per-pixel array is cut the same way and the
    intrinsics' principal point shifted. Depth values are unchanged (a crop is a narrower camera
    at the same pose), so the sample still follows `data/batch.py`.

    Args:
        sample: a sample in the `data/batch.py` convention.
        crop: the smallest side fraction, in (0, 1]; 1 returns the sample itself, drawing nothing.
        rng: the generator of the sample (draws: s, then top, then left).
    """
    if check_crop(crop) == 1:
        return sample
    src_h, src_w = sample["image"].shape[:2]
    side = rng.uniform(crop, 1.0)
    height, width = max(1, round(src_h * side)), max(1, round(src_w * side))
    top = int(rng.integers(src_h - height + 1))
    left = int(rng.integers(src_w - width + 1))
    out = dict(sample)
    for name, value in sample.items():
        if isinstance(value, np.ndarray) and value.shape[:2] == (src_h, src_w):
            out[name] = value[top : top + height, left : left + width].copy()
    if sample.get("intrinsics") is not None:
        k = np.array(sample["intrinsics"], np.float32)
        k[0, 2] -= left
        k[1, 2] -= top
        out["intrinsics"] = k
    return out
