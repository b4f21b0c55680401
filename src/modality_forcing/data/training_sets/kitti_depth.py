"""KITTI depth completion / annotated depth (Uhrig et al., 3DV 2017): real sparse LiDAR depth.

Layout as distributed (`data_depth_annotated.zip`, `data_depth_velodyne.zip`) plus the raw frames:
  `<root>/{train,val}/DRIVE/proj_depth/groundtruth/image_0C/FFFFFFFFFF.png`   annotated (~16%)
  `<root>/{train,val}/DRIVE/proj_depth/velodyne_raw/image_0C/FFFFFFFFFF.png`  one sweep (~5%)
  `<raw_root>/DATE/DRIVE/image_0C/data/FFFFFFFFFF.png`                        colour frame
  `<raw_root>/DATE/calib_cam_to_cam.txt`                          (optional: K from `P_rect_0C`)
with DRIVE e.g. `2011_09_26_drive_0001_sync` and DATE its first 10 characters; the colour frame is
also looked up as `<raw_root>/DRIVE/image_0C/data/` and inside the depth drive folder. Depth is a
16-bit PNG of metres * 256; 0 means no measurement (invalid). Frames without a colour image are
skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import decode
from .base import TrainingSet, first_file, make_sample, read_depth_png, read_image

DEPTH_SCALE = 256.0  # KITTI depth PNGs: value = metres * 256
LAYERS = ("groundtruth", "velodyne_raw")


def read_rect_intrinsics(path: Path, camera: str) -> np.ndarray | None:
    """K [3, 3] of `P_rect_0C` in a KITTI `calib_cam_to_cam.txt`, None when absent."""
    if not path.is_file():
        return None
    key = f"P_rect_{camera[-2:]}:"
    for line in path.read_text().splitlines():
        if line.startswith(key):
            p = np.array([float(v) for v in line[len(key) :].split()]).reshape(3, 4)
            return p[:, :3].astype(np.float32)
    return None


class KITTIDepth(TrainingSet):
    """KITTI annotated / velodyne depth frames matched to raw colour (module docstring).

    Args:
        root: folder holding `train/` and `val/` (or the drive folders directly).
        raw_root: root of the raw KITTI frames (default `root`).
        split: `train`, `val`, or None for both.
        layer: `groundtruth` (annotated, denser) or `velodyne_raw` (one projected sweep).
        cameras: ("image_02", "image_03") by default.
        stats: skip counter.
    """

    name = "kitti_depth"
    kind = "sparse"

    def __init__(
        self,
        root: str | Path,
        raw_root: str | Path | None = None,
        split: str | None = None,
        layer: str = "groundtruth",
        cameras: tuple[str, ...] | list[str] = ("image_02", "image_03"),
        stats: decode.SkipCounter | None = None,
    ) -> None:
        if layer not in LAYERS:
            raise ValueError(f"unknown KITTI depth layer '{layer}'; choose from {list(LAYERS)}")
        if split not in (None, "train", "val"):
            raise ValueError(f"unknown split '{split}'; choose from ['train', 'val', None]")
        self.raw_root = Path(raw_root) if raw_root else Path(root)
        self.split, self.layer, self.cameras = split, layer, tuple(cameras)
        super().__init__(root, stats)

    def _list_entries(self) -> list[Path]:
        """Depth PNG paths; the drive, camera and frame are read off the path."""
        tail = f"*_sync/proj_depth/{self.layer}/image_0?/*.png"
        found = self.root.glob(f"{self.split}/{tail}") if self.split else self.root.glob(tail)
        if not self.split:
            found = [*found, *self.root.glob(f"*/{tail}")]
        return sorted(p for p in set(found) if p.parent.name in self.cameras)

    def _image_path(self, depth_path: Path) -> Path | None:
        drive_dir, camera, frame = depth_path.parents[3], depth_path.parent.name, depth_path.name
        drive = drive_dir.name
        return first_file([
            self.raw_root / drive[:10] / drive / camera / "data" / frame,
            self.raw_root / drive / camera / "data" / frame,
            drive_dir / camera / "data" / frame,
        ])  # fmt: skip

    def _load(self, entry: Path) -> dict[str, Any]:
        image_path = self._image_path(entry)
        if image_path is None:
            raise FileNotFoundError(f"no raw colour frame for {entry} under {self.raw_root}")
        drive, camera = entry.parents[3].name, entry.parent.name
        depth = read_depth_png(entry, scale=DEPTH_SCALE)  # 0 -> invalid in make_sample
        k = read_rect_intrinsics(self.raw_root / drive[:10] / "calib_cam_to_cam.txt", camera)
        key = f"{drive}/{camera}/{entry.stem}"
        return make_sample(f"{image_path} + {entry}", read_image(image_path), depth, None, key,
                           self.stats, intrinsics=k)  # fmt: skip
