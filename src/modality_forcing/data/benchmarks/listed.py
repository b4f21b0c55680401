"""ETH3D (Schöps et al., CVPR 2017) and ScanNet (Dai et al., CVPR 2017): benchmarks given as a list.

Both read a split file (`--split-file`, `<root>/<split>.txt`, else the packaged
`splits/<name>_test.txt`) with one line per frame, `<image path> <depth path> [...]`, paths
relative to `root`, as in Marigold's split lists, which are the packaged ones (ETH3D: 454 DSLR
frames, `rgb/<scene>/images/dslr_images/*.JPG` and `depth/<scene>_dslr_depth/...`; ScanNet: 800
frames sampled from the validation scenes, `scene*/color/*.jpg` and `scene*/depth/*.png`).

- ETH3D: depth is the dataset's raw binary: row-major float32, little-endian, exactly H * W values
  for the H x W image, `inf` where unknown; scored in (1e-5, inf) m (Marigold).
- ScanNet: depth is a 16-bit PNG in millimetres, 0 = no measurement; scored in (0.001, 10) m.
  The colour image must already be at the depth resolution (Marigold's release resizes it to
  640 x 480); a size mismatch raises rather than silently stretching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Benchmark, key_of, read_png16, read_rgb, read_split_lines


class PairListBenchmark(Benchmark):
    """A benchmark whose split file lists `<image> <depth> [...]` paths relative to `root`.

    Lines whose depth is `None` (frames without ground truth, as in KITTI's Eigen list) are
    skipped: they cannot be scored.
    """

    def _list_entries(self, split_file: str | Path | None) -> list[tuple[str, str]]:
        path = self.find_split_file(split_file)
        entries = []
        for fields in read_split_lines(path):
            if len(fields) < 2:
                raise ValueError(f"{path}: want '<image> <depth> [...]' per line, got {fields}")
            if fields[1] != "None":
                entries.append((fields[0], fields[1]))
        return entries

    def _read_depth(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def _load(self, entry: tuple[str, str]) -> dict[str, Any]:
        image_rel, depth_rel = entry
        image = read_rgb(self.root / image_rel)
        depth = self._read_depth(self.root / depth_rel, image.shape[:2])
        return self.make_sample(image, depth, key_of(image_rel))


class ETH3D(PairListBenchmark):
    """ETH3D high-res multi-view DSLR frames with raw float32 depth (see module docstring)."""

    name = "eth3d"
    default_split = "test"
    default_depth_range = (1e-5, float("inf"))

    def _read_depth(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        depth = np.fromfile(path, dtype="<f4")
        if depth.size != shape[0] * shape[1]:
            raise ValueError(
                f"{path}: {depth.size} float32 values, but the image is {shape[0]} x {shape[1]}"
            )
        # inf (unknown) becomes invalid in `make_sample` through `sanitize_depth`.
        return depth.reshape(shape).astype(np.float32)


class ScanNet(PairListBenchmark):
    """ScanNet frames with 16-bit millimetre PNG depth (see module docstring)."""

    name = "scannet"
    default_split = "test"
    default_depth_range = (1e-3, 10.0)

    def _read_depth(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        depth = read_png16(path) / 1000.0
        if depth.shape != shape:
            raise ValueError(
                f"{path}: depth is {depth.shape} but its image is {shape}; resize the colour "
                "frames to the depth resolution first (ScanNet colour is 1296 x 968)"
            )
        return depth
