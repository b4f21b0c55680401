"""Synthetic RGB-D samples built in the tests (no procedural renderer needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modality_forcing.data import decode


def pinhole(height: int, width: int, vfov_deg: float = 60.0) -> np.ndarray:
    """float32 [3, 3] intrinsics with square pixels and the given vertical field of view."""
    f = 0.5 * height / math.tan(math.radians(vfov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)


def make_sample(
    seed: int = 0, height: int = 24, width: int = 32, key: str | None = None
) -> dict[str, Any]:
    """A sample in the data.batch convention: textured image, smooth depth, a few invalid pixels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = (1.0 + 0.05 * u + 0.1 * v + rng.uniform(0, 0.01, (height, width))).astype(np.float32)
    valid = rng.random((height, width)) > 0.1
    depth[~valid] = 0.0
    return {
        "image": image,
        "depth": depth,
        "valid_mask": valid,
        "caption": f"a test scene number {seed}",
        "intrinsics": pinhole(height, width),
        "scene": {"seed": seed, "objects": [{"kind": "sphere", "radius": 0.5}]},
        "key": key or f"seed-{seed:09d}",
    }


def write_split_layout(root: Path, n: int = 3, depth_ext: str = ".npy") -> list[dict]:
    """Write `n` samples as image/ depth/ mask/ caption/ meta/ folders; returns them."""
    samples = [make_sample(i, key=f"img{i}") for i in range(n)]
    for sub in ("image", "depth", "mask", "caption", "meta"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for s in samples:
        name = s["key"]
        Image.fromarray(s["image"]).save(root / "image" / f"{name}.png")
        if depth_ext == ".npy":
            np.save(root / "depth" / f"{name}.npy", s["depth"])
        else:
            (root / "depth" / f"{name}.png").write_bytes(decode.encode_depth_png16(s["depth"]))
        (root / "mask" / f"{name}.png").write_bytes(decode.encode_mask(s["valid_mask"]))
        (root / "caption" / f"{name}.txt").write_text(s["caption"] + "\n")
        meta = {"intrinsics": s["intrinsics"].tolist(), "scene": s["scene"]}
        (root / "meta" / f"{name}.json").write_text(json.dumps(meta))
    return samples
