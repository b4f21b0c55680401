"""Disjoint seed ranges for the train / val / test splits of seeded (procedural) data.

The ranges live here and nowhere else, so a seed can never leak from one split into another.
"""

from __future__ import annotations

# split -> (first seed, number of seeds); the ranges are contiguous, disjoint and fit in 9 digits
# so sample keys ("seed-000001234") sort in seed order.
SPLIT_RANGES: dict[str, tuple[int, int]] = {
    "train": (0, 900_000_000),
    "val": (900_000_000, 50_000_000),
    "test": (950_000_000, 50_000_000),
}


def _split_range(split: str) -> tuple[int, int]:
    if split not in SPLIT_RANGES:
        raise ValueError(f"unknown split '{split}'; choose from {sorted(SPLIT_RANGES)}")
    return SPLIT_RANGES[split]


def split_seed(split: str, index: int) -> int:
    """The seed of the `index`-th sample of `split`.

    Raises:
        ValueError: unknown split, or `index` outside `[0, size of split)`.
    """
    first, size = _split_range(split)
    if not 0 <= index < size:
        raise ValueError(f"index {index} out of range for split '{split}' (0 <= index < {size})")
    return first + index


def split_seeds(split: str, num: int, start: int = 0) -> list[int]:
    """Seeds of samples `start, ..., start + num - 1` of `split` (all must lie in the split)."""
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if num == 0:
        _split_range(split)
        return []
    split_seed(split, start + num - 1)  # validates the last index (and the split name)
    return [split_seed(split, i) for i in range(start, start + num)]


def seed_split(seed: int) -> str:
    """Which split a seed belongs to (inverse of `split_seed`)."""
    for split, (first, size) in SPLIT_RANGES.items():
        if first <= seed < first + size:
            return split
    raise ValueError(f"seed {seed} lies in no split; ranges are {SPLIT_RANGES}")
