"""A weighted mixture of training sets, addressed by global sample index.

Sample i is drawn from a generator seeded by (i, salt) alone: which member it comes from (with
probability weight / sum of weights), which item of that member (uniform, with replacement), and
the member's sparsifier draws. So a resumed or multi-rank run reads exactly the samples a
single-process run would, with no sampler state. A member's sparsifier runs first, at the member's
native resolution and intrinsics (a simulated sensor sees the real camera, so e.g. `lidar:32` on a
1024 x 768 frame gives scanlines, not the solid band it gives at 32 x 32); then every sample is
brought to the training size by an aspect-preserving resize + centre crop (`fit_to_size`, nearest
for depth and mask, which keeps the fraction of measured pixels in expectation). A member with
`crop` < 1 first cuts a random window (`random_crop`), so the pixels its sensor covers land
anywhere in the training frame, not only where the sensor's field of view puts them; sparse
members do so by default (`SPARSE_CROP`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import MixtureEntry, from_dict
from .. import decode
from ..sparsify import Sparsifier, apply_sparsifier, parse_sparsifier
from . import (
    KINDS,
    TRAINING_SETS,
    TrainingSet,
    check_crop,
    fit_to_size,
    get_training_set,
    random_crop,
)

MIXTURE_SALT = 0x313D7E
MAX_DRAWS = 32  # items tried per sample before giving up on a member full of bad files
# A sparse member's default `crop`: the best of 1 / 0.7 / 0.5 for lidar:32 on the procedural val
# split (+27% / +7.5% / +12% AbsRel behind uncropped dense training; `docs/sparse_depth.md`).
# Dense members are better uncropped (val AbsRel 0.202 uncropped, 0.215 at 0.5).
SPARSE_CROP = 0.7


@dataclass
class Member:
    """One resolved mixture entry."""

    entry: MixtureEntry
    data: TrainingSet
    kind: str  # `dense` | `sparse`, after the sparsifier
    sparsify: Sparsifier | None
    crop: float  # `entry.crop`, or its default for the kind


def resolve_kind(entry: MixtureEntry, reader_kind: str) -> str:
    """The member's kind: sparse when sparsified or read sparse; a stated kind must agree."""
    kind = "sparse" if entry.sparsify or reader_kind == "sparse" else "dense"
    if entry.kind is not None:
        if entry.kind not in KINDS:
            raise ValueError(f"unknown mixture kind '{entry.kind}'; choose from {list(KINDS)}")
        if entry.kind != kind:
            why = f"sparsify '{entry.sparsify}'" if entry.sparsify else f"reader '{entry.name}'"
            raise ValueError(
                f"mixture entry '{entry.name}' says kind '{entry.kind}' but its {why} gives "
                f"'{kind}' depth; fix `kind` or drop it"
            )
    return kind


def default_crop(kind: str) -> float:
    """`MixtureEntry.crop` when the entry leaves it out: `SPARSE_CROP` for sparse depth."""
    return SPARSE_CROP if kind == "sparse" else 1.0


class Mixture:
    """Weighted, index-addressed sampling over training sets (module docstring).

    Args:
        entries: the members (`DataConfig.mixture`); weights must be >= 0 with a positive sum.
        height, width: the training size every sample is fitted to.
        shadows: passed to members that render (`procedural`) unless their options say otherwise.
        stats: skip counter shared by every member.
    """

    def __init__(
        self,
        entries: Sequence[MixtureEntry | dict[str, Any]],
        height: int,
        width: int,
        shadows: bool = True,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        if not entries:
            raise ValueError("data.source is 'mixture' but data.mixture lists no entries")
        self.height, self.width = height, width
        self.stats = stats if stats is not None else decode.SkipCounter()
        self.members: list[Member] = []
        for raw in entries:
            entry = raw if isinstance(raw, MixtureEntry) else from_dict(MixtureEntry, raw)
            if not (np.isfinite(entry.weight) and entry.weight >= 0):
                raise ValueError(f"mixture weight must be >= 0, got {entry.weight} ({entry.name})")
            options = dict(entry.options)
            cls = TRAINING_SETS.get(entry.name)
            if cls is not None and cls.renders_at_size:
                options = {"height": height, "width": width, "shadows": shadows, **options}
            data = get_training_set(entry.name, entry.root, stats=self.stats, **options)
            sparsify = parse_sparsifier(entry.sparsify) if entry.sparsify else None
            kind = resolve_kind(entry, data.kind)
            crop = entry.crop if entry.crop is not None else default_crop(kind)
            check_crop(crop, f"mixture entry '{entry.name}': crop")
            self.members.append(Member(entry, data, kind, sparsify, crop))
        weights = np.array([m.entry.weight for m in self.members], np.float64)
        if weights.sum() <= 0:
            raise ValueError("mixture weights sum to 0; give at least one member a weight > 0")
        self.probabilities = weights / weights.sum()
        self._cumulative = np.cumsum(self.probabilities)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([index, MIXTURE_SALT])

    def _pick_member(self, rng: np.random.Generator) -> int:
        u = rng.random()
        return min(int(np.searchsorted(self._cumulative, u, side="right")), len(self.members) - 1)

    def choose(self, index: int) -> tuple[int, int]:
        """(member, item) of global sample `index`, without reading anything."""
        rng = self._rng(index)
        member = self._pick_member(rng)
        return member, int(rng.integers(len(self.members[member].data)))

    def sample(self, index: int) -> dict[str, Any]:
        """Global sample `index`: read, sparsified and cropped per its entry, fitted to the
        training size.

        Adds `source` (the member's reader name) and `sparse` (its kind is sparse) to the sample.
        A bad item is skipped (counted) and another item of the same member drawn from the same
        generator, so the result still depends on `index` alone.

        Raises:
            RuntimeError: `MAX_DRAWS` items of the member in a row could not be read.
        """
        rng = self._rng(index)
        member = self.members[self._pick_member(rng)]
        for _ in range(MAX_DRAWS):
            sample = member.data.load(int(rng.integers(len(member.data))))
            if sample is not None:
                break
        else:
            raise RuntimeError(
                f"mixture member '{member.entry.name}' ({member.entry.root}): {MAX_DRAWS} "
                f"unreadable samples in a row; skipped so far: {self.stats.as_dict()}"
            )
        if member.sparsify is not None:
            sample = apply_sparsifier(sample, member.sparsify, rng)
        sample = random_crop(sample, member.crop, rng)
        sample = fit_to_size(sample, self.height, self.width)
        return {**sample, "source": member.entry.name, "sparse": member.kind == "sparse"}
