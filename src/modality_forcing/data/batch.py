"""The one sample/batch convention shared by every data source.

A *sample* is a dict of numpy arrays as readers produce it: `image` uint8 [H, W, 3], `depth`
float32 [H, W] in metres (or any consistent unit), `valid_mask` bool [H, W], `caption` str, plus
optional extras (`normals`, `instance`, `intrinsics`, `scene`, `key`). A *batch* is what the trainer
consumes: `image` float32 [B, 3, H, W] in [-1, 1], `depth` float32 [B, 1, H, W] (invalid pixels set
to 0 and never to be read), `valid_mask` bool [B, 1, H, W], `caption` list[str], and, when every
sample has an `instance` map (the procedural world's ids), `object_mask` bool [B, 1, H, W]: the
pixels of objects (not floor, walls or sky), which `loss.object_weight` can weigh up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .scene_graph import FIRST_OBJECT_INSTANCE


def sanitize_depth(
    depth: np.ndarray, valid_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mark NaN/inf/non-positive depth invalid and zero it. Returns (depth f32, valid_mask)."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if valid_mask is not None:
        valid &= np.asarray(valid_mask, dtype=bool)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_image(image: torch.Tensor) -> np.ndarray:
    """float [3, H, W] or [B, 3, H, W] in [-1, 1] -> uint8 [H, W, 3] or [B, H, W, 3]."""
    x = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack numpy samples into a training batch (see module docstring). Sizes must agree."""
    if not samples:
        raise ValueError("collate() got an empty list of samples")
    shapes = {s["image"].shape[:2] for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"cannot batch samples of different sizes {sorted(shapes)}; resize first")
    depth, valid = zip(
        *(sanitize_depth(s["depth"], s.get("valid_mask")) for s in samples), strict=True
    )
    batch = {
        "image": torch.stack([image_to_tensor(s["image"]) for s in samples]),
        "depth": torch.from_numpy(np.stack(depth))[:, None],
        "valid_mask": torch.from_numpy(np.stack(valid))[:, None],
        "caption": [str(s.get("caption") or "") for s in samples],
    }
    if all("instance" in s for s in samples):
        instance = np.stack([np.asarray(s["instance"]) for s in samples])
        batch["object_mask"] = torch.from_numpy(instance >= FIRST_OBJECT_INSTANCE)[:, None]
    if all(s.get("intrinsics") is not None for s in samples):  # LiDAR-like known points
        from .sparsify import camera_pitch

        batch["intrinsics"] = torch.tensor(np.stack([np.asarray(s["intrinsics"], np.float32)
                                                     for s in samples]))  # fmt: skip
        batch["pitch_deg"] = torch.tensor([camera_pitch(s) for s in samples], dtype=torch.float32)
    for name in extra_modalities():  # e.g. surface normals, when every sample has them
        if all(name in s for s in samples):
            x = torch.from_numpy(np.stack([np.asarray(s[name], np.float32) for s in samples]))
            batch[name] = x.permute(0, 3, 1, 2) if x.dim() == 4 else x[:, None]  # [B, C, H, W]
    return batch


def extra_modalities() -> list[str]:
    """Registered modalities beyond image and depth (collated from samples when present)."""
    from ..modalities import DEPTH, IMAGE, modality_names

    return [m for m in modality_names() if m not in (IMAGE, DEPTH)]
