"""Generic benchmarks: a folder of image + depth (+ mask) files, and the procedural test world.

`folder` layout, `<key>` any relative path without extension (subfolders allowed):
  `<root>/images/<key>.{png,jpg,jpeg}`  colour image
  `<root>/depth/<key>.npy`              float32 metres, [H, W] or [H, W, 1]; or
  `<root>/depth/<key>.png`              16-bit, metres = value / `depth_scale` (default 1000: mm)
  `<root>/mask/<key>.{npy,png}`         optional; nonzero = valid
Split: `--split-file` or `<root>/<split>.txt` with one key per line; without one, every image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..decode import load_array
from .base import Benchmark, read_png16, read_rgb, read_split_lines

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_RENDER_CHUNK = 32  # procedural scenes rendered per batch while iterating


def _first_existing(stem: Path, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        path = stem.with_name(stem.name + ext)
        if path.is_file():
            return path
    return None


class Folder(Benchmark):
    """Image/depth/mask folders (see module docstring); default depth range (0.001, inf) m.

    Args:
        root: dataset folder.
        split: name of `<root>/<split>.txt` (default `all`: that file if present, else all).
        split_file: text file of keys.
        depth_range: scored depth range (exclusive), metres.
        depth_scale: divisor of 16-bit PNG depth values.
    """

    name = "folder"
    default_split = "all"

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        split_file: str | Path | None = None,
        depth_range: tuple[float, float] | None = None,
        depth_scale: float = 1000.0,
    ) -> None:
        self.depth_scale = depth_scale
        super().__init__(root, split, split_file, depth_range)

    def _list_entries(self, split_file: str | Path | None) -> list[str]:
        images = self.root / "images"
        if not images.is_dir():
            raise FileNotFoundError(
                f"folder: {images} not found (want <root>/images, <root>/depth)"
            )
        path = self.find_split_file(split_file, required=self.split != "all")
        if path is not None:
            return [fields[0] for fields in read_split_lines(path)]
        files = [p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTS]
        return sorted(str(p.relative_to(images).with_suffix("")).replace("\\", "/") for p in files)

    def _load(self, key: str) -> dict[str, Any]:
        image_path = _first_existing(self.root / "images" / key, IMAGE_EXTS)
        depth_path = _first_existing(self.root / "depth" / key, (".npy", ".png"))
        if image_path is None or depth_path is None:
            raise FileNotFoundError(
                f"folder: no image or depth file for key '{key}' in {self.root}"
            )
        if depth_path.suffix == ".npy":
            depth = load_array(depth_path).astype(np.float32)
            depth = depth[..., 0] if depth.ndim == 3 else depth
        else:
            depth = read_png16(depth_path) / self.depth_scale
        mask_path = _first_existing(self.root / "mask" / key, (".npy", ".png"))
        mask = None
        if mask_path is not None:
            raw = load_array(mask_path) if mask_path.suffix == ".npy" else Image.open(mask_path)
            mask = np.asarray(raw).reshape(depth.shape) != 0
        return self.make_sample(read_rgb(image_path), depth, key, mask)


class Procedural(Benchmark):
    """Test scenes of the embedded procedural world (`data/procedural.py`), rendered on demand.

    Args:
        root: unused (the scenes are generated).
        split: procedural split (`test`, default).
        split_file: unused.
        depth_range: scored range, default (0.001, 30) m.
        num: number of scenes; start: first scene index; height, width: render size.
    """

    name = "procedural"
    default_split = "test"
    default_depth_range = (1e-3, 30.0)

    def __init__(
        self,
        root: str | Path | None = None,
        split: str | None = None,
        split_file: str | Path | None = None,
        depth_range: tuple[float, float] | None = None,
        num: int = 100,
        start: int = 0,
        height: int = 64,
        width: int = 64,
    ) -> None:
        self.num, self.start, self.size = num, start, (height, width)
        super().__init__(root or ".", split, split_file, depth_range)

    def _list_entries(self, split_file: str | Path | None) -> list[int]:
        return list(range(self.start, self.start + self.num))

    def _render(self, start: int, num: int) -> list[dict[str, Any]]:
        from ..procedural import SceneConfig, render_split

        config = SceneConfig(height=self.size[0], width=self.size[1])
        return [  # with the caption (text-conditioned modes), the camera and the scene graph
            {**self.make_sample(s["image"], s["depth"], str(s["key"]), s.get("valid_mask")),
             "caption": str(s.get("caption", "")), "intrinsics": s.get("intrinsics"),
             "scene": s.get("scene"), "instance": s.get("instance")}
            for s in render_split(self.split, start, num, config)
        ]  # fmt: skip

    def _load(self, index: int) -> dict[str, Any]:
        return self._render(index, 1)[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Render in chunks: the ray caster is much faster on a batch of scenes than one by one.
        for first in range(self.start, self.start + self.num, _RENDER_CHUNK):
            yield from self._render(first, min(_RENDER_CHUNK, self.start + self.num - first))
