"""One progress bar for every benchmark: the bench names what it is counting (runs, checkpoints,
settings, claims) and the bar shows how many of them are done, on stderr, so the tables and
JSON a bench prints on stdout stay clean."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bench_bar(items: Iterable[T] | None, what: str, total: int | None = None,
              inner: bool = False) -> Any:  # fmt: skip
    """A bar over `items` labelled `bench <what>`; with `items=None`, a bar of `total` to be
    advanced by `.update()`. `inner` bars (inside another bench bar) vanish when done."""
    if total is None and items is not None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return tqdm(items, total=total, desc=f"bench {what}", dynamic_ncols=True, leave=not inner)
