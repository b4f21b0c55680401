"""Build the denoiser a config asks for: the native MM-DiT, or an adapted T2I backbone.

Every caller (trainer, checkpoint loader, pipeline) goes through `build_model`, so a new model
family is one registry entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..backbones import build_backbone
from ..backbones.official_model import OfficialModel
from ..config import ModelConfig
from .denoiser import ModalityForcingModel

MODEL_FAMILIES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "native": ModalityForcingModel,
    "official": OfficialModel,  # the released flux_rgbd checkpoints (docs/official_format.md)
    # diffusers T2I backbones + depth stream, settings in `model.backbone` (docs/backbones.md)
    "flux2": partial(build_backbone, "flux2"),  # FLUX.2 [klein] / [dev]
    "flux": partial(build_backbone, "flux"),  # FLUX.1 [dev] / [schnell]
    "sd3": partial(build_backbone, "sd3"),  # SD3 / SD3.5
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the model family named by `cfg.family`."""
    if cfg.family not in MODEL_FAMILIES:
        raise ValueError(
            f"unknown model family '{cfg.family}'; choose from {sorted(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[cfg.family](cfg)
