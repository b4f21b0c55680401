"""The registry of denoiser families: `model.family` -> a builder from a `ModelConfig`.

Families register themselves with `register_family`: the native MM-DiT in `model/denoiser.py`,
the adapted diffusers backbones and the official release in `backbones/` (which imports this, not
the other way round). Callers build through `modality_forcing.backbones.build_model`, the registry
with every family of the project in it; a new family is one `register_family` call.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import ModelConfig

Builder = Callable[[ModelConfig], nn.Module]
MODEL_FAMILIES: dict[str, Builder] = {}


def register_family(name: str, builder: Builder) -> Builder:
    """Make `model.family: name` build with `builder` (re-registering a name replaces it)."""
    MODEL_FAMILIES[name] = builder
    return builder


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the registered model family named by `cfg.family`."""
    if cfg.family not in MODEL_FAMILIES:
        raise ValueError(
            f"unknown model family '{cfg.family}'; choose from {sorted(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[cfg.family](cfg)
