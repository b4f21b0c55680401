"""Procedural scenes prepared once for the fidelity metrics (images, depth, masks, instance maps,
caption attributes, palette references, the mean-depth-map prior), and the image -> depth scores
against them: least-squares AbsRel / delta1, AbsRel on object pixels, and the skill over the
prior scored the same way. Used by the benches, the demo and validation during training."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..data.attributes import palette_references, stack_attributes
from ..data.procedural import SceneConfig, render_split
from ..data.scene_graph import FIRST_OBJECT_INSTANCE
from .alignment import aligned_scores
from .fidelity import skill

DEPTH_RANGE = (1e-3, 30.0)  # the procedural benchmark's scored range (metres)


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
        return mean_depth_map(self.scene, self.prior_scenes)


def mean_depth_map(
    scene: SceneConfig, num: int = 512, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The per-pixel mean depth [H, W] (float64, metres) of the first `num` procedural training
    scenes rendered with `scene` (then fitted to `size` as training fits them, when given): the
    trivial image -> depth baseline ("the prior") that every score is set against (skill = 1 -
    AbsRel / the prior's AbsRel)."""
    train = render_split("train", 0, num, scene)
    if size is not None:
        from ..data.training_sets import fit_to_size

        train = [fit_to_size(s, *size) for s in train]
    depth = torch.stack([torch.as_tensor(s["depth"]).double() for s in train])
    valid = torch.stack([torch.as_tensor(s["valid_mask"]) for s in train]).bool()
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
    """AbsRel / delta1 (least squares, per image, mean over the images that scored), AbsRel on
    object pixels (same alignment, fitted on all pixels), the number of images that could not be
    scored (`failed`), the same numbers for the prior, and the skill."""
    objects = scenes.mask & torch.from_numpy(scenes.instance >= FIRST_OBJECT_INSTANCE)
    out: dict[str, float] = {}
    for name, p in (("", pred), ("prior_", scenes.prior.expand_as(scenes.depth))):
        _, scores = aligned_scores(p, scenes.depth, scenes.mask, DEPTH_RANGE, objects=objects)
        out[f"{name}abs_rel"] = scores["abs_rel"]
        out[f"{name}delta1"] = scores["delta1"]
        out[f"{name}object_abs_rel"] = scores["object_abs_rel"]
        out[f"{name}failed"] = scores["nan_images"]
    out["skill"] = skill(out["abs_rel"], out["prior_abs_rel"])
    out["object_skill"] = skill(out["object_abs_rel"], out["prior_object_abs_rel"])
    return out
