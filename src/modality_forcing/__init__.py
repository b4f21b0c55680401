"""modality-forcing: joint image + depth generation with per-modality noise levels."""

__version__ = "0.1.0"
