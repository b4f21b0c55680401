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

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..data.attributes import COLOURS, palette_references, region_colours, stack_attributes
from ..data.procedural import SceneConfig, render_split
from ..metrics.fidelity import (
    above_chance,
    attribute_scores,
    constant_prediction,
    frechet_distance,
    region_colour_scores,
    skill,
    summarise_regions,
)
from ..metrics.probe import AttributeProbe, load_probe, read_attributes
from ..sampling.config import SamplingConfig
from .common import aligned_metrics

DEPTH_RANGE = (1e-3, 30.0)  # the procedural benchmark's scored range (metres)
OBJECT_MIN = 5  # instance ids >= 5 are objects (`data/scene_graph.py`)


@dataclass
class FidelityScenes:
    """Procedural scenes with everything the metrics need, prepared once per split and size.
    The palette references and the prior are made on first use: image -> depth needs no
    references, depth -> image and text -> image no prior."""

    split: str
    samples: list[dict[str, Any]]
    images: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    depth: torch.Tensor  # [N, H, W] metres, float64
    mask: torch.Tensor  # [N, H, W] bool
    instance: np.ndarray  # [N, H, W] int
    captions: list[str]
    labels: dict[str, np.ndarray]  # caption attributes (`stack_attributes`)
    scene: SceneConfig  # the render settings of `samples`
    prior_scenes: int = 512  # training scenes averaged into `prior`

    @cached_property
    def references(self) -> list[dict[int, np.ndarray]]:
        """Per scene: instance -> [12, 3] palette renders (`palette_references`)."""
        return [palette_references(s, self.scene) for s in self.samples]

    @cached_property
    def prior(self) -> torch.Tensor:
        """[H, W] mean depth map of training scenes (the trivial baseline)."""
        train = render_split("train", 0, self.prior_scenes, self.scene)
        depth = torch.stack([torch.as_tensor(s["depth"]).double() for s in train])
        valid = torch.stack([torch.as_tensor(s["valid_mask"]) for s in train])
        return (depth * valid).sum(0) / valid.sum(0).clamp_min(1)


def load_fidelity_scenes(
    split: str, num: int, size: tuple[int, int], prior_scenes: int = 512
) -> FidelityScenes:
    """Render `num` scenes of `split` at `size` (H, W); references and prior follow on use."""
    cfg = SceneConfig(height=size[0], width=size[1])
    samples = render_split(split, 0, num, cfg)
    images = torch.from_numpy(np.stack([s["image"] for s in samples]))
    return FidelityScenes(
        split=split,
        samples=samples,
        images=images.permute(0, 3, 1, 2).float() / 127.5 - 1,
        depth=torch.from_numpy(np.stack([s["depth"] for s in samples])).double(),
        mask=torch.from_numpy(np.stack([s["valid_mask"] for s in samples])),
        instance=np.stack([s["instance"] for s in samples]),
        captions=[s["caption"] for s in samples],
        labels=stack_attributes([s["scene"] for s in samples]),
        scene=cfg,
        prior_scenes=prior_scenes,
    )


def depth_scores(pred: torch.Tensor, scenes: FidelityScenes) -> dict[str, float]:
    """AbsRel / delta1 (least squares, per image, mean over images), AbsRel on object pixels
    (same alignment, fitted on all pixels) and the same numbers for the prior, and the skill."""
    out: dict[str, float] = {}
    for name, p in (("", pred), ("prior_", scenes.prior.expand_as(scenes.depth))):
        aligned, metrics = aligned_metrics(p, scenes.depth, scenes.mask, DEPTH_RANGE)
        objects = scenes.mask & torch.from_numpy(scenes.instance >= OBJECT_MIN)
        rel = (aligned - scenes.depth).abs() / scenes.depth.clamp_min(DEPTH_RANGE[0])
        per_image = (rel * objects).flatten(1).sum(1) / objects.flatten(1).sum(1)
        finite = metrics["abs_rel"][torch.isfinite(metrics["abs_rel"])]
        out[f"{name}abs_rel"] = float(finite.mean())
        out[f"{name}delta1"] = float(metrics["delta1"][torch.isfinite(metrics["delta1"])].mean())
        out[f"{name}object_abs_rel"] = float(per_image[objects.flatten(1).any(1)].mean())
        out[f"{name}failed"] = int((~torch.isfinite(metrics["abs_rel"])).sum())
    out["skill"] = skill(out["abs_rel"], out["prior_abs_rel"])
    out["object_skill"] = skill(out["object_abs_rel"], out["prior_object_abs_rel"])
    return out


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

    if "image_to_depth" in modes:
        out["image_to_depth"] = depth_scores(estimate((scenes.images + 1) / 2), scenes)
    if "depth_to_image" in modes:
        given = torch.where(scenes.mask, scenes.depth, 0).float()[:, None]
        images = np.concatenate([
            pipe(prompt=scenes.captions[s], depth=given[s], mode="depth_to_image",
                 sampling=generation, generator=g(k)).image
            for k, s in enumerate(_chunks(n, batch))
        ])  # fmt: skip
        out["depth_to_image"] = region_scores(images, scenes)
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
            _, metrics = aligned_metrics(joint_depth, own.clamp_min(DEPTH_RANGE[0]), everywhere,
                                         DEPTH_RANGE)  # fmt: skip
            out[mode]["consistency_abs_rel"] = float(metrics["abs_rel"].nanmean())
    return out
