"""KITTI depth completion, `val_selection_cropped` (Uhrig et al., 3DV 2017): 1,000 frames of
352 x 1216 with the raw LiDAR scan projected into the image (the sparse input) and the annotated
semi-dense depth (the ground truth).

Layout, as the devkit ships it (`data_depth_selection.zip`): `<root>/depth_selection/
val_selection_cropped/{image,velodyne_raw,groundtruth_depth}/<drive>_<kind>_<frame>_image_0X.png`,
where `<kind>` is `image`, `velodyne_raw` or `groundtruth_depth`; `<root>` may also be the
`depth_selection` or `val_selection_cropped` folder itself. Depth files are 16-bit PNGs / 256 =
metres, 0 = no measurement. Each sample carries the scan as `sparse_depth` (metres, 0 = none), the
input of `eval --sparse given`. Scored in (0.001, 80) m, no evaluation crop (the frames are the
benchmark's crops already).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Benchmark, read_png16, read_rgb

KINDS = ("image", "velodyne_raw", "groundtruth_depth")


class KITTIDepthCompletion(Benchmark):
    """KITTI depth completion's validation selection (see module docstring). `split` is unused
    (there is one selection); `split_file` may list image file names, one per line, to score a
    subset."""

    name = "kitti_dc"
    default_split = "val_selection_cropped"
    default_depth_range = (1e-3, 80.0)

    def _folder(self) -> Path:
        for base in (self.root / "depth_selection" / "val_selection_cropped",
                     self.root / "val_selection_cropped", self.root):  # fmt: skip
            if all((base / kind).is_dir() for kind in KINDS):
                return base
        raise FileNotFoundError(
            f"kitti_dc: no val_selection_cropped/{{{','.join(KINDS)}}} folders under {self.root}"
        )

    def _list_entries(self, split_file: str | Path | None) -> list[Any]:
        folder = self._folder()
        if split_file is not None:
            names = [ln.strip() for ln in Path(split_file).read_text().splitlines() if ln.strip()]
        else:
            names = sorted(p.name for p in (folder / "image").glob("*.png"))
        entries = []
        for name in names:
            if "_image_" not in name:
                raise ValueError(f"kitti_dc: '{name}' is not a <drive>_image_<frame>_image_0X.png")
            entries.append({kind: folder / kind / self._renamed(name, kind) for kind in KINDS})
        if not entries:
            raise FileNotFoundError(f"kitti_dc: no images in {folder / 'image'}")
        return entries

    @staticmethod
    def _renamed(name: str, kind: str) -> str:
        """The file of `kind` for an image file name: the first `_image_` names the kind."""
        drive, rest = name.split("_image_", 1)
        return f"{drive}_{kind}_{rest}"

    def _load(self, entry: dict[str, Path]) -> dict[str, Any]:
        image = read_rgb(entry["image"])
        gt = read_png16(entry["groundtruth_depth"]) / 256.0
        scan = read_png16(entry["velodyne_raw"]) / 256.0
        sample = self.make_sample(image, gt, entry["image"].stem)
        if scan.shape != gt.shape:
            raise ValueError(f"kitti_dc '{entry['image'].name}': scan {scan.shape} and ground "
                             f"truth {gt.shape} differ")  # fmt: skip
        sample["sparse_depth"] = scan.astype("float32")
        return sample
