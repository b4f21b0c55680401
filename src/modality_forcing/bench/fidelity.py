"""Score every mode of one model with the fidelity metrics (`metrics/fidelity.py`) on procedural
scenes: the numbers `demo` prints and `bench flagship` tracks over training time.

- image -> depth: least-squares AbsRel / delta1, the skill over the mean training depth map
  (a trivial prior scored the same way), and AbsRel on object pixels only;
- depth -> image: region-colour accuracy (floor, walls, objects) and colour error;
- text -> image (joint and marginal): probe attribute accuracy against the caption, next to the
  probe's accuracy on the real renders of the same captions, and the probe-feature Frechet
  distance to those renders; joint consistency (AbsRel of the joint depth against the model's
  own image -> depth estimate of the joint image, least squares).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.attributes import COLOURS, region_colours
from ..metrics.alignment import aligned_scores
from ..metrics.fidelity import (
    above_chance,
    attribute_scores,
    constant_prediction,
    frechet_distance,
    region_colour_scores,
    summarise_regions,
)
from ..metrics.probe import AttributeProbe, load_probe, read_attributes
from ..metrics.scenes import (  # noqa: F401 (re-exported: the benches' API)
    DEPTH_RANGE,
    FidelityScenes,
    depth_scores,
    load_fidelity_scenes,
)
from ..sampling.config import SamplingConfig
from .progress import bench_bar


def region_scores(images: np.ndarray, scenes: FidelityScenes) -> dict[str, Any]:
    """Region-colour accuracy of generated images [N, H, W, 3] (uint8) against the scenes."""
    records = []
    for i, image in enumerate(images):
        named = {k: COLOURS.index(c) for k, c in region_colours(scenes.samples[i]["scene"]).items()}
        records += region_colour_scores(image, scenes.instance[i], scenes.references[i], named)
    return summarise_regions(records)


def text_scores(
    images: np.ndarray, scenes: FidelityScenes, probe: AttributeProbe, real: dict[str, Any]
) -> dict[str, Any]:
    """Probe attribute accuracy of generated images against the captions, next to the real
    renders' and chance (the best image-blind answer); `relative`: the share of the real renders'
    margin over chance that generated images reach (`above_chance`, the honest ratio: a plain
    ratio credits attributes a constant answer already gets mostly right, e.g. shapes);
    `relative_raw`: generated / real; `frechet`: probe-feature Frechet distance."""
    probs, feats = read_attributes(probe, images)
    scores = attribute_scores(probs, scenes.labels)
    real_mean, chance = real["scores"]["mean"], real["chance"]["mean"]
    return {"attributes": scores, "real_attributes": real["scores"],
            "chance_attributes": real["chance"],
            "relative": above_chance(scores["mean"], real_mean, chance),
            "relative_raw": scores["mean"] / real_mean,
            "frechet": frechet_distance(feats, real["features"])}  # fmt: skip


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


GENERATION = SamplingConfig(steps=10)  # depth -> image, joint, marginal when scoring


@torch.no_grad()
def score_fidelity(
    pipe: Any, scenes: FidelityScenes, probe: AttributeProbe | None = None,
    generation: SamplingConfig = GENERATION, depth: SamplingConfig | None = None,
    seed: int = 0, batch: int = 32,
    modes: tuple[str, ...] = ("image_to_depth", "depth_to_image", "joint", "marginal"),
) -> dict[str, Any]:  # fmt: skip
    """Every metric of `modes` for a `ModalityForcingPipeline` on prepared scenes.

    Args:
        pipe: the pipeline (its precision and device are used as they are).
        scenes: from `load_fidelity_scenes` (val to choose, test to report).
        probe: the attribute probe (default: the shipped one).
        generation: sampling of depth -> image, joint and marginal (10 steps; None fields, e.g.
            guidance: the checkpoint's per mode); depth: of image -> depth (default: the
            checkpoint's).
        seed: seeds every sampling call (chunk k uses seed + k).
    """
    depth = pipe.sampling_for("image_to_depth", depth)
    steps, depth_steps, guidance = generation.steps, depth.steps, generation.guidance
    n = len(scenes.captions)
    g = lambda k: torch.Generator().manual_seed(seed + k)  # noqa: E731
    real: dict[str, Any] = {}
    if {"joint", "marginal"} & set(modes):  # what the probe reads from the real renders
        probe = probe if probe is not None else load_probe()[0]
        real_probs, real_feats = read_attributes(
            probe, np.stack([s["image"] for s in scenes.samples])
        )
        real = {
            "scores": attribute_scores(real_probs, scenes.labels),
            "features": real_feats,
            "chance": attribute_scores(constant_prediction(scenes.labels), scenes.labels),
        }
    out: dict[str, Any] = {"split": scenes.split, "num_scenes": n, "steps": steps,
                           "depth_steps": depth_steps, "guidance": guidance}  # fmt: skip

    def estimate(images: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] in [0, 1] -> [N, H, W]
        parts = [pipe(image=images[s], mode="image_to_depth", sampling=depth, generator=g(k),
                      output_type="pt").depth[:, 0]
                 for k, s in enumerate(_chunks(len(images), batch))]  # fmt: skip
        return torch.cat(parts).double()

    bar = bench_bar(None, "fidelity: modes", total=len(modes), inner=True)
    if "image_to_depth" in modes:
        out["image_to_depth"] = depth_scores(estimate((scenes.images + 1) / 2), scenes)
        bar.update()
    if "depth_to_image" in modes:
        given = torch.where(scenes.mask, scenes.depth, 0).float()[:, None]
        images = np.concatenate([
            pipe(prompt=scenes.captions[s], depth=given[s], mode="depth_to_image",
                 sampling=generation, generator=g(k)).image
            for k, s in enumerate(_chunks(n, batch))
        ])  # fmt: skip
        out["depth_to_image"] = region_scores(images, scenes)
        bar.update()
    for mode in ("joint", "marginal"):
        if mode not in modes:
            continue
        results = [
            pipe(
                prompt=scenes.captions[s],
                mode=mode,
                sampling=generation,
                generator=g(k),
                output_type="pt",
            )
            for k, s in enumerate(_chunks(n, batch))
        ]
        images01 = torch.cat([r.image for r in results])  # [N, 3, H, W] in [0, 1]
        uint8 = (images01.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        out[mode] = text_scores(uint8, scenes, probe, real)
        if mode == "joint":
            own = estimate(images01)
            joint_depth = torch.cat([r.depth[:, 0] for r in results]).double()
            everywhere = torch.ones_like(own, dtype=torch.bool)
            # An image whose joint depth cannot be aligned (constant) is counted, not dropped
            # silently: `consistency` holds the images scored and the NaN ones (`nan_failures`).
            _, scores = aligned_scores(joint_depth, own.clamp_min(DEPTH_RANGE[0]), everywhere,
                                       DEPTH_RANGE)  # fmt: skip
            out[mode]["consistency"] = {k: scores[k] for k in ("abs_rel", "images", "nan_images")}
            out[mode]["consistency_abs_rel"] = scores["abs_rel"]
        bar.update()
    bar.close()
    return out
