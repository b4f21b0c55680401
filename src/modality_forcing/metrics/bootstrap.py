"""Is a difference between two models real? A paired bootstrap over test images.

Both models are scored on the same images, so the images are resampled together: the interval
reflects how much the ratio of the two mean errors depends on which test scenes were drawn
(not the training noise of either model, which needs several seeds).
"""

from __future__ import annotations

import math

import torch


def paired_ratio_ci(
    a: torch.Tensor, b: torch.Tensor, num: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Ratio mean(a) / mean(b) of two per-image metrics and its paired bootstrap interval.

    Args:
        a, b: [N] per-image values of the same images (e.g. AbsRel of two models). Images where
            either is not finite are dropped from both.
        num: bootstrap resamples.
        level: coverage of the percentile interval.
        seed: resampling seed (the interval is reproducible).

    Returns:
        {"ratio", "low", "high", "num_images"}; NaN entries when no image is finite in both.
    """
    a, b = a.double().flatten(), b.double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same images, got {a.numel()} and {b.numel()}")
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep], b[keep]
    n = a.numel()
    if n == 0 or float(b.mean()) == 0.0:
        return {"ratio": math.nan, "low": math.nan, "high": math.nan, "num_images": n}
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num, n), generator=gen)
    ratios = a[idx].mean(1) / b[idx].mean(1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return {"ratio": float(a.mean() / b.mean()), "low": float(low), "high": float(high),
            "num_images": n}  # fmt: skip


def describe(ci: dict[str, float], target: float | None = None) -> str:
    """'0.947 [0.91, 0.98]', plus whether the interval lies below/above 1 (or `target`)."""
    ref = 1.0 if target is None else target
    text = f"{ci['ratio']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"
    if math.isnan(ci["low"]):
        return text
    if ci["high"] < ref:
        return f"{text}, below {ref:g}"
    if ci["low"] > ref:
        return f"{text}, above {ref:g}"
    return f"{text}, includes {ref:g}"


def seed_scene_ratio_ci(
    a: torch.Tensor, b: torch.Tensor, num: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Ratio mean(a) / mean(b) over several training seeds and the same test images, with a
    bootstrap interval that covers both: each resample draws seeds with replacement and,
    independently, images with replacement (the same images for every seed drawn).

    Args:
        a, b: [S, N] per-image values (S seeds of each model, N images); images not finite in
            every seed of both are dropped.

    Returns:
        {"ratio", "low", "high", "num_seeds", "num_images", "per_seed": [S] ratios}.
    """
    a, b = a.double(), b.double()
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"need [seeds, images] of one shape, got {list(a.shape)}, {list(b.shape)}")
    keep = (torch.isfinite(a) & torch.isfinite(b)).all(0)
    a, b = a[:, keep], b[:, keep]
    s, n = a.shape
    per_seed = [float(a[i].mean() / b[i].mean()) if n else math.nan for i in range(s)]
    if n == 0 or float(b.mean()) == 0.0:
        return {"ratio": math.nan, "low": math.nan, "high": math.nan, "num_seeds": s,
                "num_images": n, "per_seed": per_seed}  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    seeds = torch.randint(s, (num, s), generator=gen)
    images = torch.randint(n, (num, n), generator=gen)
    rows = torch.arange(num)[:, None, None]
    pick = (rows, seeds[:, :, None], images[:, None, :])
    ratios = a.expand(num, s, n)[pick].mean((1, 2)) / b.expand(num, s, n)[pick].mean((1, 2))
    tail = (1.0 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return {"ratio": float(a.mean() / b.mean()), "low": float(low), "high": float(high),
            "num_seeds": s, "num_images": n, "per_seed": per_seed}  # fmt: skip


def verdict_word(ci: dict[str, float], target: float = 1.0) -> str:
    """The claim "the first model is better (ratio below `target`)" as the interval supports
    it: `holds` (the interval lies below), `does not hold` (above), else `not resolved`."""
    if math.isnan(ci["low"]):
        return "not resolved"
    if ci["high"] < target:
        return "holds"
    if ci["low"] > target:
        return "does not hold"
    return "not resolved"
