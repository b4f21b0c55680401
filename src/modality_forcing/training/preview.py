"""Periodic sample grids during training: what the model generates now, as a PNG contact sheet.

Rows: joint text -> image + depth on validation captions (marginal text -> image in the T2I
stage), then image -> depth on validation images (predicted depth next to the ground truth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..data.batch import collate, tensor_to_image
from ..data.preview import contact_sheet
from ..data.procedural import SceneConfig, render_split
from ..precision import resolve_precision
from ..sampling.generate import generate

NUM_PREVIEW = 4
PREVIEW_STEPS = 20


def _rows(gen_image: torch.Tensor | None, gen_depth: torch.Tensor | None, captions: list[str],
          tag: str) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for i, caption in enumerate(captions):
        image = tensor_to_image(gen_image[i]) if gen_image is not None else None
        depth = gen_depth[i, 0].float().cpu().numpy() if gen_depth is not None else None
        h, w = (image if image is not None else depth).shape[:2]
        rows.append({
            "image": image if image is not None else np.zeros((h, w, 3), np.uint8),
            "depth": depth if depth is not None else np.zeros((h, w), np.float32),
            "valid_mask": np.ones((h, w), bool) if depth is not None else np.zeros((h, w), bool),
            "caption": caption,
            "key": tag,
        })  # fmt: skip
    return rows


@torch.no_grad()
def write_preview_grid(
    model: Any, cfg: TrainConfig, run_dir: Path, step: int, save: bool = True
) -> Path:
    """Sample with fixed seeds and write `run_dir/samples/step_XXXXXXX.png`.

    Under FSDP2 every rank must run the forward passes (they gather weights); only one saves.
    """
    model.eval()
    h, w = cfg.data.height, cfg.data.width
    val = render_split("val", 0, NUM_PREVIEW, SceneConfig(height=h, width=w))
    batch = collate(val)
    captions = batch["caption"]
    generator = torch.Generator().manual_seed(0)
    mode = "marginal" if cfg.stage == "t2i" else "joint"
    dtype = resolve_precision(cfg.precision, next(model.parameters()).device).autocast_dtype
    text = generate(model, mode, captions, h, w, num_steps=PREVIEW_STEPS, generator=generator,
                    autocast_dtype=dtype)  # fmt: skip
    rows = _rows(text.image, text.depth, captions, f"{mode} (generated)")
    if cfg.stage != "t2i":
        i2d = generate(
            model, "image_to_depth", captions, h, w, image=batch["image"],
            num_steps=PREVIEW_STEPS, generator=generator, autocast_dtype=dtype,
        )  # fmt: skip
        rows += _rows(i2d.image, i2d.depth, captions, "image->depth (predicted)")
        rows += [{**s, "key": "ground truth"} for s in val]
    out = run_dir / "samples" / f"step_{step:07d}.png"
    if save:
        out.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(rows, scale=max(1, 96 // h)).save(out)
    return out
