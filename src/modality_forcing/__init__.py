"""modality-forcing: joint image + depth generation with per-modality noise levels.

`from modality_forcing import ModalityForcingPipeline` is the Python entry point (diffusers
style); the package is laid out in layers (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ModalityForcingPipeline", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the pipeline (and torch) only when it is asked for: `--help` stays fast."""
    if name == "ModalityForcingPipeline":
        from .inference.pipeline import ModalityForcingPipeline

        return ModalityForcingPipeline
    raise AttributeError(f"module 'modality_forcing' has no attribute '{name}'")
