"""Backbones beyond the native MM-DiT: diffusers T2I models (FLUX.2, FLUX.1, SD3) post-trained with
the depth stream, and the official release's format. Each is a model family (`model.family`) with
the native model's interface. Adapters are imported on first use (they pull in diffusers)."""

from __future__ import annotations

import importlib

from torch import nn

from ..config import ModelConfig

# family -> (module in this package, class)
BACKBONES: dict[str, tuple[str, str]] = {
    "flux2": ("flux2", "Flux2Model"),
    "flux": ("flux", "FluxModel"),
    "sd3": ("sd3", "SD3Model"),
}


def build_backbone(family: str, cfg: ModelConfig) -> nn.Module:
    """Instantiate the adapted diffusers backbone `family` (see `BackboneConfig`)."""
    if family not in BACKBONES:
        raise ValueError(f"unknown backbone '{family}'; choose from {sorted(BACKBONES)}")
    module, name = BACKBONES[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)(cfg)
