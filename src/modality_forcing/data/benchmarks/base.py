"""Shared parts of the benchmark readers: the `Benchmark` base class, split files, file decoders."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..batch import sanitize_depth
from ..decode import image_to_rgb8

# Split lists shipped with the package (`<benchmark>_<split>.txt`); see splits/README.md.
SPLITS_DIR = Path(__file__).parent / "splits"


class Benchmark:
    """A depth benchmark: an indexable, iterable list of evaluation samples.

    Each sample is a dict in the convention of `data/batch.py`: `image` uint8 [H, W, 3], `depth`
    float32 [H, W] in metres (0 where invalid), `valid_mask` bool [H, W] = the protocol's
    evaluation mask (valid sensor depth, strictly inside `depth_range`, and any evaluation crop),
    `key` (str, unique; may contain `/`; names prediction files) and `caption` ("").

    Split lists are looked up, first hit wins: the `split_file` argument, `<root>/<split>.txt`,
    then the packaged `splits/<name>_<split>.txt`. Subclasses say what a line holds.
    """

    name: ClassVar[str] = ""
    default_split: ClassVar[str] = "test"
    default_depth_range: ClassVar[tuple[float, float]] = (1e-3, math.inf)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        split_file: str | Path | None = None,
        depth_range: tuple[float, float] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split or self.default_split
        self.depth_range = tuple(depth_range) if depth_range else self.default_depth_range
        self.entries: list[Any] = self._list_entries(split_file)

    # -- to implement ---------------------------------------------------------------------------

    def _list_entries(self, split_file: str | Path | None) -> list[Any]:
        """What one sample is made from (paths, indices), in benchmark order."""
        raise NotImplementedError

    def _load(self, entry: Any) -> dict[str, Any]:
        """Read one entry into a sample (use `make_sample`)."""
        raise NotImplementedError

    # -- sequence protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._load(self.entries[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for entry in self.entries:
            yield self._load(entry)

    # -- helpers --------------------------------------------------------------------------------

    def find_split_file(self, split_file: str | Path | None, required: bool = True) -> Path | None:
        """Resolve the split list (see class docstring); raise naming every place tried."""
        tried = []
        if split_file is not None:
            path = Path(split_file)
            if not path.is_file():
                raise FileNotFoundError(f"{self.name}: split file {path} does not exist")
            return path
        for path in (self.root / f"{self.split}.txt", SPLITS_DIR / f"{self.name}_{self.split}.txt"):
            if path.is_file():
                return path
            tried.append(str(path))
        if required:
            raise FileNotFoundError(
                f"{self.name}: no split list for split '{self.split}'; tried {tried}. Pass "
                f"--split-file (format: see modality_forcing.data.benchmarks.{self.name})"
            )
        return None

    def make_sample(
        self, image: np.ndarray, depth: np.ndarray, key: str, mask: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Build a sample: sanitise depth, and AND the mask with the open depth range."""
        if image.shape[:2] != depth.shape:
            raise ValueError(
                f"{self.name} '{key}': image {image.shape[:2]} and depth {depth.shape} differ"
            )
        depth, valid = sanitize_depth(depth, mask)
        lo, hi = self.depth_range
        valid &= (depth > lo) & (depth < hi)
        depth = np.where(valid, depth, 0.0).astype(np.float32)
        return {"image": image, "depth": depth, "valid_mask": valid, "key": key, "caption": ""}


def read_split_lines(path: str | Path) -> list[list[str]]:
    """Whitespace-separated fields of each non-empty line; lines starting with `#` are comments."""
    lines = Path(path).read_text().splitlines()
    return [ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def read_rgb(path: str | Path) -> np.ndarray:
    """Any image file -> uint8 [H, W, 3] RGB."""
    with Image.open(path) as img:
        return image_to_rgb8(img, str(path))


def read_png16(path: str | Path) -> np.ndarray:
    """A 16-bit single-channel PNG -> float32 [H, W] of the raw integer values."""
    with Image.open(path) as img:
        if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"{path}: expected a 16-bit single-channel PNG, got mode {img.mode}")
        return np.asarray(img).astype(np.float32)


def key_of(rel_path: str) -> str:
    """Prediction key of a file given by its path relative to the dataset root: no extension."""
    return str(Path(rel_path).with_suffix("")).replace("\\", "/")
