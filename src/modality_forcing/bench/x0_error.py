"""Why more sampling steps can make image -> depth worse: the model's one-call depth estimate
(x0) from the ground-truth depth noised to each level t, with the image held clean, scored
against the ground truth. Training draws t_depth from a shifted logit-normal (mean 1.1): if the
error rises at small t, the sampler's last steps (small t) are where the model was rarely
trained, not a sign of posterior sampling. t = 1 is the one-step readout from pure noise.
"""

from __future__ import annotations

from typing import Any

import torch

from ..flow.path import interpolate
from ..metrics.alignment import aligned_scores
from ..modalities import DEPTH, IMAGE, denormalize_depth, normalize_depth
from ..precision import resolve_precision
from .common import Scenes

LEVELS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


@torch.no_grad()
def x0_error_by_t(model: Any, scenes: Scenes, levels: tuple[float, ...] = LEVELS,
                  seed: int = 0, precision: str = "fp32", chunk: int = 32
                  ) -> list[dict[str, float]]:  # fmt: skip
    """Least-squares AbsRel / delta1 of the model's x0 depth estimate at each noise level, one
    noise draw per scene shared by all levels (so the levels differ only in t).

    Returns:
        one row per level: {t, abs_rel, delta1, images, nan_images}.
    """
    device = next(model.parameters()).device
    dtype = resolve_precision(precision, device).autocast_dtype
    kind = getattr(model.cfg, "depth_prediction", None) or "x0"
    text = model.encode_text([""] * min(chunk, len(scenes.captions)))
    generator = torch.Generator().manual_seed(seed)
    depth = scenes.depth[:, None].float()
    mask = scenes.mask[:, None]
    clean, _ = normalize_depth(depth, mask)
    noise = torch.randn(clean.shape, generator=generator)
    # the clean images, encoded once for every level
    encoded = [model.codec.encode(part.to(device).float()) for part in scenes.images.split(chunk)]
    rows = []
    for level in levels:
        parts = []
        for s, image in zip(range(0, len(clean), chunk), encoded, strict=True):
            b = image.shape[0]
            t = {
                IMAGE: torch.zeros(b, device=device),
                DEPTH: torch.full((b,), level, device=device),
            }
            xt = interpolate(clean[s : s + chunk].to(device), noise[s : s + chunk].to(device),
                             t[DEPTH])  # fmt: skip
            tokens = text if b == len(text.tokens) else model.encode_text([""] * b)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):  # fmt: skip
                pred = model({IMAGE: image, DEPTH: xt}, t, tokens)[DEPTH].float()
            x0 = xt - level * pred if kind == "velocity" else pred
            parts.append(denormalize_depth(x0.clamp(0, 2 - 1e-4)).cpu())
        estimate = torch.cat(parts)[:, 0].double()
        _, scores = aligned_scores(estimate, scenes.depth, scenes.mask, scenes.depth_range)
        rows.append({"t": level, **scores})
    return rows
