"""KITTI Eigen test split (Eigen et al., NeurIPS 2014) with the annotated depth maps (Uhrig 2017).

Split file (`--split-file`, `<root>/eigen_test.txt`, else the packaged
`splits/kitti_eigen_test.txt`): one line per frame, `<image path> <depth path> [focal ...]`, paths
relative to `root` (the BTS / Marigold `eigen_test_files_with_gt.txt` format); lines whose depth
path is `None` (45 of the 697 Eigen test frames have no annotated depth) are skipped, leaving 652.
The packaged list expects the raw frames as `<root>/2011_09_26/2011_09_26_drive_0002_sync/image_02/
data/*.png` and the annotated depth drives beside them (train and val folders merged), as
`<root>/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/*.png`. Depth: 16-bit PNG / 256
m, 0 = no measurement, scored in (0.001, 80) m. Image and depth are cropped to the 352 x 1216
KITTI-benchmark (KB) crop; the Garg crop is applied as an evaluation mask on the cropped frame, as
Marigold does (BTS applies it to the uncropped frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import key_of, read_png16, read_rgb
from .listed import PairListBenchmark

KB_CROP_HW = (352, 1216)
# Evaluation crops as fractions (top, bottom, left, right) of the frame height/width.
EVAL_CROPS: dict[str, tuple[float, float, float, float] | None] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al., ECCV 2016
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen et al., NeurIPS 2014
    "none": None,
}


def kb_crop(array: np.ndarray) -> np.ndarray:
    """[H, W, ...] -> bottom-centred 352 x 1216 KB crop: top = H - 352, left = (W - 1216) // 2."""
    height, width = array.shape[:2]
    if height < KB_CROP_HW[0] or width < KB_CROP_HW[1]:
        raise ValueError(f"KB crop needs frames of at least {KB_CROP_HW}, got {(height, width)}")
    top, left = height - KB_CROP_HW[0], (width - KB_CROP_HW[1]) // 2
    return array[top : top + KB_CROP_HW[0], left : left + KB_CROP_HW[1]]


def eval_crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    """Bool [H, W] mask of an evaluation crop in `EVAL_CROPS` (all true for `none`)."""
    if crop not in EVAL_CROPS:
        raise ValueError(f"unknown eval crop '{crop}'; choose from {list(EVAL_CROPS)}")
    fractions = EVAL_CROPS[crop]
    mask = np.ones(shape, dtype=bool)
    if fractions is not None:
        height, width = shape
        top, bottom, left, right = fractions
        mask[:] = False
        # int() truncation, exactly as the reference implementations compute the bounds.
        rows = slice(int(top * height), int(bottom * height))
        mask[rows, int(left * width) : int(right * width)] = True
    return mask


class KITTI(PairListBenchmark):
    """KITTI Eigen test frames from a split file of `image depth` path pairs.

    Args:
        root: KITTI root the split file's paths are relative to.
        split: name used to find `<root>/<split>.txt` (default `eigen_test`).
        split_file: the split list (see module docstring).
        depth_range: override of (0.001, 80) m.
        crop: apply the KB crop (default True).
        eval_crop: `garg` (default), `eigen` or `none`.
    """

    name = "kitti"
    default_split = "eigen_test"
    default_depth_range = (1e-3, 80.0)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        split_file: str | Path | None = None,
        depth_range: tuple[float, float] | None = None,
        crop: bool = True,
        eval_crop: str = "garg",
    ) -> None:
        eval_crop_mask((1, 1), eval_crop)  # validate the name before reading anything
        self.crop, self.eval_crop = crop, eval_crop
        super().__init__(root, split, split_file, depth_range)

    def _load(self, entry: tuple[str, str]) -> dict[str, Any]:
        image_rel, depth_rel = entry
        image = read_rgb(self.root / image_rel)
        depth = read_png16(self.root / depth_rel) / 256.0
        if self.crop:
            image, depth = kb_crop(image), kb_crop(depth)
        mask = eval_crop_mask(depth.shape, self.eval_crop)
        return self.make_sample(image, depth, key_of(image_rel), mask)
