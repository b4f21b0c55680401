"""Backbones beyond the native MM-DiT: diffusers T2I models (FLUX.2, FLUX.1, SD3) post-trained with
the depth stream, and the official release's format. Each is a model family (`model.family`) with
the native model's interface, registered here; modules are imported on first use (the adapters
pull in diffusers). `build_model` builds any family of the project."""

from __future__ import annotations

import importlib

from torch import nn

from ..config import ModelConfig
from ..model.denoiser import ModalityForcingModel  # registers "native"
from ..model.factory import build_model, register_family

__all__ = ["BACKBONES", "ModalityForcingModel", "build_backbone", "build_model"]

# family -> (module in this package, class)
BACKBONES: dict[str, tuple[str, str]] = {
    "flux2": ("flux2", "Flux2Model"),  # FLUX.2 [klein] / [dev]
    "flux": ("flux", "FluxModel"),  # FLUX.1 [dev] / [schnell]
    "sd3": ("sd3", "SD3Model"),  # SD3 / SD3.5
    "official": ("official.model", "OfficialModel"),  # the released flux_rgbd checkpoints
}


def build_backbone(family: str, cfg: ModelConfig) -> nn.Module:
    """Instantiate the backbone family `family` (see `BackboneConfig`, docs/official_format.md)."""
    if family not in BACKBONES:
        raise ValueError(f"unknown backbone '{family}'; choose from {sorted(BACKBONES)}")
    module, name = BACKBONES[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)(cfg)


for _family in BACKBONES:
    register_family(_family, lambda cfg, family=_family: build_backbone(family, cfg))
