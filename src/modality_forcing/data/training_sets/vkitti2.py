"""Virtual KITTI 2 (Cabon et al., 2020): synthetic driving scenes, dense depth.

Layout as the tarballs extract (rgb, depth and textgt merged under one root, or depth elsewhere
via `depth_root`):
  `<root>/SceneSS/VARIATION/frames/rgb/Camera_C/rgb_IIIII.jpg`
  `<depth_root>/SceneSS/VARIATION/frames/depth/Camera_C/depth_IIIII.png`
  `<root>/SceneSS/VARIATION/intrinsic.txt`  (optional; `frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]`)
Depth is a 16-bit greyscale PNG of planar z-depth in centimetres with a far plane at 655.35 m:
the value 65535 is the sky (no surface) and becomes invalid, as does anything beyond `max_depth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import decode
from .base import TrainingSet, make_sample, read_depth_png, read_image

CM_PER_M = 100.0
SKY = 65535  # the far plane (655.35 m): no surface along this ray


def read_intrinsics(path: Path) -> dict[tuple[int, int], np.ndarray]:
    """`intrinsic.txt` -> {(frame, camera): K [3, 3]}; empty when the file is absent."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines()[1:]:  # first line is the header
        fields = line.split()
        if len(fields) >= 6:
            frame, camera = int(fields[0]), int(fields[1])
            fx, fy, cx, cy = (float(v) for v in fields[2:6])
            out[frame, camera] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
    return out


class VirtualKITTI2(TrainingSet):
    """Virtual KITTI 2 frames (module docstring): dense z-depth in metres, sky invalid.

    Args:
        root: folder of the `SceneSS` folders (rgb, and intrinsics when extracted there).
        depth_root: where the depth tarball was extracted (default `root`).
        variations: e.g. ("clone", "fog"); None: every variation found.
        cameras: e.g. ("Camera_0",); None: both cameras.
        max_depth: metres; deeper pixels become invalid (None: keep all but the sky).
        stats: skip counter.
    """

    name = "vkitti2"
    kind = "dense"

    def __init__(
        self,
        root: str | Path,
        depth_root: str | Path | None = None,
        variations: tuple[str, ...] | list[str] | None = None,
        cameras: tuple[str, ...] | list[str] | None = None,
        max_depth: float | None = None,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        self.depth_root = Path(depth_root) if depth_root else Path(root)
        self.variations, self.cameras = variations, cameras
        self.max_depth = max_depth
        self._intrinsics: dict[Path, dict[tuple[int, int], np.ndarray]] = {}
        super().__init__(root, stats)

    def _list_entries(self) -> list[str]:
        """rgb paths relative to `root`, e.g. `Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg`."""
        entries = []
        for path in sorted(self.root.glob("*/*/frames/rgb/Camera_*/rgb_*.jpg")):
            variation, camera = path.parents[3].name, path.parent.name
            if self.variations is not None and variation not in self.variations:
                continue
            if self.cameras is not None and camera not in self.cameras:
                continue
            entries.append(path.relative_to(self.root).as_posix())
        return entries

    def _camera_matrix(self, rel: Path) -> np.ndarray | None:
        variation_dir = rel.parents[3]  # SceneSS/VARIATION
        if variation_dir not in self._intrinsics:
            self._intrinsics[variation_dir] = read_intrinsics(
                self.root / variation_dir / "intrinsic.txt"
            )
        frame = int(rel.stem.split("_")[1])
        camera = int(rel.parent.name.split("_")[1])
        return self._intrinsics[variation_dir].get((frame, camera))

    def _load(self, entry: str) -> dict[str, Any]:
        rel = Path(entry)
        frames = rel.parents[2]  # SceneSS/VARIATION/frames
        depth_rel = frames / "depth" / rel.parent.name / f"depth_{rel.stem.split('_')[1]}.png"
        image = read_image(self.root / rel)
        raw = read_depth_png(self.depth_root / depth_rel, scale=1.0)  # integer centimetres
        valid = raw < SKY
        depth = raw / CM_PER_M
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        return make_sample(
            f"{self.root / rel} + {self.depth_root / depth_rel}", image, depth, valid,
            rel.with_suffix("").as_posix(), self.stats, intrinsics=self._camera_matrix(rel),
        )  # fmt: skip
