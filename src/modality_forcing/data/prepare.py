"""`prepare-data`: render procedural RGB-D samples (optionally sparsified) into tar shards."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .shards import write_shards
from .sparsify import apply_sparsifier, parse_sparsifier

# Separate random stream for sparsification, so the masks never correlate with the scene draws.
_SPARSIFY_STREAM = 0x5A75


def sample_rng(sample: dict[str, Any]) -> np.random.Generator:
    """Deterministic per-sample generator from the sample's seed (scene['seed']) or else its key."""
    seed = (sample.get("scene") or {}).get("seed")
    if not isinstance(seed, (int, np.integer)):
        digest = hashlib.sha256(str(sample["key"]).encode("utf-8")).digest()
        seed = int.from_bytes(digest[:8], "little")
    return np.random.default_rng([int(seed), _SPARSIFY_STREAM])


def prepare_procedural(
    out_dir: str | Path,
    split: str,
    num: int,
    height: int,
    width: int,
    sparsify: str | None = None,
    shard_size: int = 1000,
    depth_format: str = "png16",
    shadows: bool = True,
) -> Path:
    """Render `num` samples of `split` and write them as resumable shards in `out_dir`.

    Re-running with the same arguments skips finished shards; other arguments on an existing
    directory raise ValueError. Rendering is deterministic (seeds from the split), and so is
    sparsification (one generator per sample, see `sample_rng`).

    Args:
        out_dir: output directory (shards + index.json).
        split: `train`, `val` or `test` (disjoint seed ranges).
        num: number of samples.
        height: image height in pixels.
        width: image width in pixels.
        sparsify: sparsifier spec such as `lidar:32` (see `data.sparsify`), or None for dense.
        shard_size: samples per shard.
        depth_format: `png16` (millimetres) or `npy` (float32 metres).
        shadows: render cast shadows.

    Returns:
        The output directory.
    """
    from .procedural import SceneConfig, render_split

    sparsifier = parse_sparsifier(sparsify) if sparsify else None  # fail before rendering
    cfg = SceneConfig(height=height, width=width, shadows=shadows)

    def make_samples(start: int, count: int) -> list[dict[str, Any]]:
        samples = render_split(split, start, count, cfg)
        if sparsifier is not None:
            samples = [apply_sparsifier(s, sparsifier, sample_rng(s)) for s in samples]
        return samples

    args = {
        "source": "procedural",
        "split": split,
        "sparsify": sparsify,
        "scene_config": asdict(cfg),
    }
    out = write_shards(out_dir, num, make_samples, args, shard_size, depth_format)
    print(f"wrote {num} {split} samples to {out} (index: {out / 'index.json'})")
    return out
