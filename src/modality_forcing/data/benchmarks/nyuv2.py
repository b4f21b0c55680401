"""NYU Depth v2 (Silberman et al., ECCV 2012): the labeled .mat file, official 654-image test split.

Layout in `root`: `nyu_depth_v2_labeled.mat` (MATLAB v7.3, i.e. HDF5) and the official `splits.mat`
(MATLAB v5; fields `trainNdxs` [795, 1], `testNdxs` [654, 1], 1-based). The split is taken from, in
order: `--split-file` (the `splits.mat`, or a text file of 1-based indices, one per line),
`splits.mat` / `<split>.txt` in `root`, then the packaged `splits/nyuv2_test.txt` (the 654 test
indices; source in splits/README.md).
Evaluation: depth in (0.001, 10) m, Eigen crop as an evaluation mask (rows 45:471, cols 41:601 of
the 480 x 640 frame; the image is not cropped), as in Marigold and BTS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Benchmark, read_split_lines

MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLITS_NAME = "splits.mat"
FRAME_HW = (480, 640)
EIGEN_CROP = (slice(45, 471), slice(41, 601))  # rows, cols (0-based, end exclusive)
# splits.mat field per split name; `all` takes every frame of the file.
SPLIT_FIELDS = {"test": "testNdxs", "train": "trainNdxs", "all": None}


class NYUv2(Benchmark):
    """NYUv2 labeled frames read straight from `nyu_depth_v2_labeled.mat`.

    MATLAB stores arrays column-major; a v7.3 file is HDF5, whose dataspace lists dimensions
    row-major, so MATLAB's `images` [H, W, 3, N] = [480, 640, 3, 1449] reads through h5py as
    [N, 3, W, H] = [1449, 3, 640, 480], and `depths` [H, W, N] as [N, W, H]. Frame i is thus
    `images[i].transpose(2, 1, 0)` -> [H, W, 3] and `depths[i].T` -> [H, W] (metres).

    Args:
        root: folder holding the .mat files (or the path of the labeled .mat itself).
        split: `test` (654, default), `train` (795) or `all` (1449).
        split_file: `splits.mat` or a text file of 1-based frame indices.
        depth_field: `depths` (in-painted, the common protocol) or `rawDepths` (sensor depth
            with holes, which Marigold scores).
        eval_crop: apply the Eigen crop mask (default True).
    """

    name = "nyuv2"
    default_split = "test"
    default_depth_range = (1e-3, 10.0)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        split_file: str | Path | None = None,
        depth_range: tuple[float, float] | None = None,
        depth_field: str = "depths",
        eval_crop: bool = True,
    ) -> None:
        root = Path(root)
        self.mat_path = root if root.suffix == ".mat" else root / MAT_NAME
        if not self.mat_path.is_file():
            raise FileNotFoundError(f"nyuv2: {self.mat_path} not found (the labeled .mat file)")
        if depth_field not in ("depths", "rawDepths"):
            raise ValueError(
                f"unknown depth field '{depth_field}'; choose from ['depths', 'rawDepths']"
            )
        self.depth_field = depth_field
        self.eval_crop = eval_crop
        self._file: Any = None
        super().__init__(self.mat_path.parent, split, split_file, depth_range)

    def _list_entries(self, split_file: str | Path | None) -> list[int]:
        """0-based frame indices of the split, in the order the split lists them."""
        if self.split not in SPLIT_FIELDS:
            raise ValueError(f"unknown split '{self.split}'; choose from {list(SPLIT_FIELDS)}")
        field = SPLIT_FIELDS[self.split]
        if field is None:
            return list(range(self._h5()["images"].shape[0]))
        path = self.root / SPLITS_NAME
        if split_file is not None or not path.is_file():
            path = self.find_split_file(split_file)
        one_based = _read_mat_indices(path, field) if path.suffix == ".mat" else _read_txt(path)
        num = self._h5()["images"].shape[0]
        if one_based.size == 0 or one_based.min() < 1 or one_based.max() > num:
            raise ValueError(f"{path}: indices must be 1-based frame numbers in 1..{num}")
        return [int(i) - 1 for i in one_based]

    def _h5(self) -> Any:
        # Opened lazily and kept open: h5py reads only the frames we index.
        if self._file is None:
            import h5py

            self._file = h5py.File(self.mat_path, "r")
            shape = self._file["images"].shape
            if len(shape) != 4 or shape[1] != 3:
                raise ValueError(f"{self.mat_path}: 'images' has shape {shape}, want [N, 3, W, H]")
            if self.depth_field not in self._file:
                raise ValueError(f"{self.mat_path}: no '{self.depth_field}' dataset")
        return self._file

    def _load(self, index: int) -> dict[str, Any]:
        f = self._h5()
        image = np.ascontiguousarray(f["images"][index].transpose(2, 1, 0)).astype(np.uint8)
        depth = np.ascontiguousarray(f[self.depth_field][index].T).astype(np.float32)
        mask = None
        if self.eval_crop:
            if depth.shape != FRAME_HW:
                raise ValueError(f"nyuv2: Eigen crop needs {FRAME_HW} frames, got {depth.shape}")
            mask = np.zeros(depth.shape, dtype=bool)
            mask[EIGEN_CROP] = True
        # Keys are the official 1-based frame numbers, as in splits.mat.
        return self.make_sample(image, depth, f"{index + 1:04d}", mask)

    def __getstate__(self) -> dict[str, Any]:
        # An open h5py handle cannot cross process boundaries (DataLoader workers): reopen there.
        return {**self.__dict__, "_file": None}


def _read_mat_indices(path: Path, field: str) -> np.ndarray:
    """1-based indices from the official splits.mat (MATLAB v5; v7.3/HDF5 also accepted)."""
    try:
        from scipy.io import loadmat

        data = loadmat(path)[field]
    except NotImplementedError:  # scipy refuses v7.3 files: those are HDF5
        import h5py

        with h5py.File(path, "r") as f:
            data = f[field][()]
    except KeyError:
        raise ValueError(f"{path}: no field '{field}'") from None
    return np.asarray(data).astype(np.int64).ravel()


def _read_txt(path: Path) -> np.ndarray:
    """1-based indices, one per line (first field)."""
    return np.array([int(fields[0]) for fields in read_split_lines(path)], dtype=np.int64)
