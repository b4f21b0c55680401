"""Training batch sources with an explicit position, so resumed and multi-rank runs see the data
they should.

`procedural`: the global batch of step k holds train-split samples [k * B, (k + 1) * B); rank r's
micro-batch m is the slice starting at k * B + (m * world + r) * b. So no two ranks share a seed,
and the data of a step does not depend on the world size. Whether a sample is sparsified (a
`sparse_fraction` of samples, with `sparsify`) is decided from its index alone.
`shards`: webdataset shards split over ranks (and loader workers), shuffled per epoch by seed; the
position is the number of samples this rank consumed.
`mixture`: index-addressed like `procedural`, each sample drawn from the weighted training sets of
`data.mixture` by its global index alone (`data/training_sets/mixture.py`).
Every source reports the samples it skipped or repaired (`decode.SkipCounter`) by reason, for the
metrics log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from ..config import DataConfig
from . import decode
from .batch import collate

SPARSE_SALT = 0x5BA45E


class BatchSource(Protocol):
    def get(self, step: int, micro: int) -> dict[str, Any]: ...

    def state(self) -> dict[str, int]: ...

    def skipped(self) -> dict[str, int]:
        """Samples skipped or repaired by this process since the source was made, by reason."""
        ...


def sample_start(
    step: int, micro: int, global_batch: int, micro_batch: int, rank: int, world: int
) -> int:
    """Global index of the first sample of rank `rank`'s micro-batch `micro` at `step`."""
    return step * global_batch + (micro * world + rank) * micro_batch


def _sample_rng(index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([index, salt])


def sparsify_some(samples: list[dict[str, Any]], start: int, cfg: DataConfig) -> None:
    """Sparsify, in place, the samples (global indices start, start + 1, ...) chosen by index."""
    if not cfg.sparsify or cfg.sparse_fraction <= 0:
        return
    from .sparsify import apply_sparsifier

    for i, sample in enumerate(samples):
        rng = _sample_rng(start + i, SPARSE_SALT)
        if rng.random() < cfg.sparse_fraction:
            samples[i] = apply_sparsifier(sample, cfg.sparsify, rng)


class ProceduralSource:
    """Rank-sliced, index-addressed procedural batches (see module docstring)."""

    def __init__(
        self, cfg: DataConfig, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1
    ) -> None:
        from .procedural import SceneConfig

        self.cfg, self.global_batch, self.micro_batch = cfg, global_batch, micro_batch
        self.rank, self.world = rank, world
        self.scene = SceneConfig(height=cfg.height, width=cfg.width, shadows=cfg.shadows)

    def get(self, step: int, micro: int) -> dict[str, Any]:
        from .procedural import render_split

        start = sample_start(
            step, micro, self.global_batch, self.micro_batch, self.rank, self.world
        )
        n = self.cfg.num_scenes
        if n is not None and n < 1:
            raise ValueError(f"data.num_scenes must be >= 1 (or null for unlimited), got {n}")
        if n is None:
            samples = render_split("train", start, self.micro_batch, self.scene)
        else:  # a finite training set: sample index i shows scene i mod N
            samples = [render_split("train", (start + i) % n, 1, self.scene)[0]
                       for i in range(self.micro_batch)]  # fmt: skip
        sparsify_some(samples, start, self.cfg)
        return collate(samples)

    def state(self) -> dict[str, int]:
        return {}  # fully determined by the step

    def skipped(self) -> dict[str, int]:
        return {}  # rendered samples are never bad


class ShardSource:
    """Sequential micro-batches from this rank's shards; resumable by samples consumed."""

    def __init__(
        self, cfg: DataConfig, micro_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
        consumed: int = 0,
    ) -> None:  # fmt: skip
        if not cfg.shards:
            raise ValueError("data.source is 'shards' but data.shards lists no shard paths")
        self.cfg, self.micro_batch, self.seed = cfg, micro_batch, seed
        self.rank, self.world, self.consumed = rank, world, consumed
        self.stats = decode.SkipCounter()
        self._counted_before = Counter[str]()  # skips met again while fast-forwarding a resume
        self._samples = self._stream(skip=consumed)

    def _stream(self, skip: int) -> Iterator[dict[str, Any]]:
        from .shards import ShardDataset

        epoch = 0
        while True:
            # ShardDataset splits shards over torch.distributed ranks and loader workers itself.
            data = ShardDataset(self.cfg.shards, shuffle_buffer=256, seed=self.seed,
                                stats=self.stats)  # fmt: skip
            data.set_epoch(epoch)
            seen = 0
            for sample in data:
                seen += 1
                if skip > 0:
                    skip -= 1
                    if skip == 0:  # the run before the resume counted these
                        self._counted_before = Counter(self.stats.counts)
                    continue
                yield sample
            if seen == 0:
                raise ValueError(f"no readable samples for rank {self.rank} in {self.cfg.shards}")
            epoch += 1

    def get(self, step: int, micro: int) -> dict[str, Any]:
        samples = [next(self._samples) for _ in range(self.micro_batch)]
        sparsify_some(samples, self.consumed * self.world + self.rank, self.cfg)
        self.consumed += self.micro_batch
        return collate(samples)

    def state(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def skipped(self) -> dict[str, int]:
        return dict(self.stats.counts - self._counted_before)


class MixtureSource:
    """Rank-sliced, index-addressed batches from a weighted mixture of training sets."""

    def __init__(
        self, cfg: DataConfig, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1
    ) -> None:
        from .training_sets.mixture import Mixture

        self.cfg, self.global_batch, self.micro_batch = cfg, global_batch, micro_batch
        self.rank, self.world = rank, world
        self.mixture = Mixture(cfg.mixture, cfg.height, cfg.width, shadows=cfg.shadows)

    def get(self, step: int, micro: int) -> dict[str, Any]:
        start = sample_start(
            step, micro, self.global_batch, self.micro_batch, self.rank, self.world
        )
        samples = [self.mixture.sample(start + i) for i in range(self.micro_batch)]
        sparsify_some(samples, start, self.cfg)
        return collate(samples)

    def state(self) -> dict[str, int]:
        return {}  # fully determined by the step

    def skipped(self) -> dict[str, int]:
        return self.mixture.stats.as_dict()


def _render_micro_batch(
    cfg: DataConfig, global_batch: int, micro_batch: int, rank: int, world: int, step: int,
    micro: int,
) -> dict[str, Any]:  # fmt: skip
    """One procedural micro-batch, in a worker process (`PrefetchedSource`)."""
    return ProceduralSource(cfg, global_batch, micro_batch, rank, world).get(step, micro)


class PrefetchedSource:
    """`ProceduralSource` rendered ahead by `cfg.num_workers` processes.

    Batches are addressed by (step, micro) alone, so rendering them early in other processes
    gives exactly the batches `ProceduralSource` would; `get` returns the requested one (from
    the queue, or rendered on the spot after a jump such as a resume) and queues the next
    `2 x num_workers` micro-batches. For GPUs, where one process cannot render fast enough.
    """

    def __init__(
        self, cfg: DataConfig, global_batch: int, micro_batch: int, grad_accum: int,
        rank: int = 0, world: int = 1,
    ) -> None:  # fmt: skip
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.args = (cfg, global_batch, micro_batch, rank, world)
        self.grad_accum, self.ahead = grad_accum, 2 * cfg.num_workers
        # spawn: never fork a process that may hold CUDA state or OpenMP threads
        self.pool = ProcessPoolExecutor(cfg.num_workers, mp_context=mp.get_context("spawn"))
        self.pending: dict[tuple[int, int], Any] = {}

    def _key(self, k: int) -> tuple[int, int]:
        return divmod(k, self.grad_accum)

    def get(self, step: int, micro: int) -> dict[str, Any]:
        first = step * self.grad_accum + micro
        for k in range(first, first + self.ahead + 1):
            if self._key(k) not in self.pending:
                self.pending[self._key(k)] = self.pool.submit(
                    _render_micro_batch, *self.args, *self._key(k)
                )
        for key in [key for key in self.pending if key < (step, micro)]:
            self.pending.pop(key).cancel()  # behind us: a jump forward (resume)
        return self.pending.pop((step, micro)).result()

    def state(self) -> dict[str, int]:
        return {}  # fully determined by the step

    def skipped(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_source(
    cfg: DataConfig, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1,
    seed: int = 0, state: dict[str, int] | None = None, grad_accum: int = 1,
) -> BatchSource:  # fmt: skip
    """The batch source named by `cfg.source`, restored to `state` when resuming. Procedural
    batches are rendered ahead by `cfg.num_workers` processes when it is > 0."""
    if cfg.source == "procedural" and cfg.num_workers > 0:
        return PrefetchedSource(cfg, global_batch, micro_batch, grad_accum, rank, world)
    if cfg.source == "procedural":
        return ProceduralSource(cfg, global_batch, micro_batch, rank, world)
    if cfg.source == "shards":
        return ShardSource(cfg, micro_batch, rank, world, seed, (state or {}).get("consumed", 0))
    if cfg.source == "mixture":
        return MixtureSource(cfg, global_batch, micro_batch, rank, world)
    raise ValueError(
        f"unknown data source '{cfg.source}'; choose from ['mixture', 'procedural', 'shards']"
    )
