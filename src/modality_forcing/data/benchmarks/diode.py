"""DIODE (Vasiljevic et al., 2019) validation set, indoor and outdoor, as distributed.

Layout: `<root>/val/{indoors,outdoor}/scene_*/scan_*/<name>.png` with `<name>_depth.npy`
(float32 [H, W, 1], metres) and `<name>_depth_mask.npy` ([H, W], nonzero = valid) beside it.
The split is the whole validation set (771 frames: 325 indoor + 446 outdoor), read from a split
file of `<image> <depth> <mask>` lines relative to `root` (Marigold's format): `--split-file`,
`<root>/<split>.txt`, else the packaged `splits/diode_<split>.txt` (Marigold's lists, prefixed with
`val/`), so a missing file raises instead of silently shrinking the set. Without any list the
folders are listed.
Scored where the mask is set and depth is in (0.6, 350) m.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..decode import load_array
from .base import Benchmark, key_of, read_rgb, read_split_lines

# Split name -> scene-type folders under `<root>/val`.
SPLITS = {"val": ("indoors", "outdoor"), "val_indoors": ("indoors",), "val_outdoor": ("outdoor",)}


class DIODE(Benchmark):
    """DIODE validation frames (module docstring); splits `val`, `val_indoors`, `val_outdoor`."""

    name = "diode"
    default_split = "val"
    default_depth_range = (0.6, 350.0)

    def _list_entries(self, split_file: str | Path | None) -> list[tuple[str, str, str]]:
        path = self.find_split_file(split_file, required=False)
        if path is not None:
            rows = read_split_lines(path)
            bad = [r for r in rows if len(r) < 3]
            if bad:
                raise ValueError(f"{path}: want '<image> <depth> <mask>' per line, got {bad[0]}")
            return [(r[0], r[1], r[2]) for r in rows]
        if self.split not in SPLITS:
            raise ValueError(f"unknown split '{self.split}'; choose from {list(SPLITS)}")
        entries = []
        for scene_type in SPLITS[self.split]:
            folder = self.root / "val" / scene_type
            if not folder.is_dir():
                raise FileNotFoundError(f"diode: {folder} not found (expected <root>/val/...)")
            for image in sorted(folder.rglob("*.png")):
                rel = image.relative_to(self.root).with_suffix("")
                entries.append((f"{rel}.png", f"{rel}_depth.npy", f"{rel}_depth_mask.npy"))
        return entries

    def _load(self, entry: tuple[str, str, str]) -> dict[str, Any]:
        image_rel, depth_rel, mask_rel = entry
        image = read_rgb(self.root / image_rel)
        depth = load_array(self.root / depth_rel).astype(np.float32)
        if depth.ndim == 3:  # DIODE stores [H, W, 1]
            depth = depth[..., 0]
        mask = load_array(self.root / mask_rel).astype(bool)
        if mask.shape != depth.shape:
            raise ValueError(f"{mask_rel}: mask {mask.shape} and depth {depth.shape} differ")
        return self.make_sample(image, depth, key_of(image_rel), mask)
