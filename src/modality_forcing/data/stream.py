"""Training batch streams with an explicit position, so a resumed run sees exactly the same data.

`procedural`: batch k holds train-split samples [k * B, (k + 1) * B), rendered on the fly; a
`sparse_fraction` of each batch is sparsified (per-sample seeded), so dense and sparse samples mix.
`shards`: samples read in order from webdataset shards, cycling epochs; the position is the number
of samples consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..config import DataConfig
from .batch import collate


def _sparsify_part(samples: list[dict[str, Any]], cfg: DataConfig, index: int) -> None:
    if not cfg.sparsify or cfg.sparse_fraction <= 0:
        return
    from .sparsify import apply_sparsifier

    n_sparse = round(cfg.sparse_fraction * len(samples))
    for i in range(n_sparse):
        rng = np.random.default_rng([index, i, 0x5BA45E])
        samples[i] = apply_sparsifier(samples[i], cfg.sparsify, rng)


def procedural_batches(
    cfg: DataConfig, batch_size: int, start_batch: int = 0, split: str = "train"
) -> Iterator[dict[str, Any]]:
    """Endless batches of on-the-fly procedural scenes, starting at batch `start_batch`."""
    from .procedural import SceneConfig, render_split

    scene = SceneConfig(height=cfg.height, width=cfg.width, shadows=cfg.shadows)
    index = start_batch
    while True:
        samples = render_split(split, index * batch_size, batch_size, scene)
        _sparsify_part(samples, cfg, index)
        yield collate(samples)
        index += 1


def shard_batches(
    cfg: DataConfig, batch_size: int, start_batch: int = 0
) -> Iterator[dict[str, Any]]:
    """Endless batches from shards (in order, cycling); skips `start_batch * batch_size` samples."""
    from .shards import iter_shard_samples

    if not cfg.shards:
        raise ValueError("data.source is 'shards' but data.shards lists no shard paths")
    skip = start_batch * batch_size
    buffer: list[dict[str, Any]] = []
    index = start_batch
    while True:
        seen = 0
        for sample in iter_shard_samples(cfg.shards):
            seen += 1
            if skip > 0:
                skip -= 1
                continue
            buffer.append(sample)
            if len(buffer) == batch_size:
                _sparsify_part(buffer, cfg, index)
                yield collate(buffer)
                buffer, index = [], index + 1
        if seen == 0:
            raise ValueError(f"no readable samples in shards {cfg.shards}")


def training_batches(
    cfg: DataConfig, batch_size: int, start_batch: int = 0
) -> Iterator[dict[str, Any]]:
    """Dispatch on `cfg.source`."""
    sources = {"procedural": procedural_batches, "shards": shard_batches}
    if cfg.source not in sources:
        raise ValueError(f"unknown data source '{cfg.source}'; choose from {sorted(sources)}")
    return sources[cfg.source](cfg, batch_size, start_batch)
