"""Paired bootstrap interval of a ratio of mean errors: centred on the ratio, narrow when the
images agree, wide when they do not, and deterministic by seed."""

import math

import pytest
import torch

from modality_forcing.metrics.bootstrap import describe, paired_ratio_ci


def test_interval_contains_the_ratio_and_resolves_a_clear_difference():
    gen = torch.Generator().manual_seed(0)
    b = torch.rand(200, generator=gen, dtype=torch.float64) + 0.5
    a = 0.8 * b  # a is 20% better on every image: the paired interval is a point
    ci = paired_ratio_ci(a, b)
    assert ci["ratio"] == pytest.approx(0.8)
    assert ci["low"] == pytest.approx(0.8) and ci["high"] == pytest.approx(0.8)
    assert describe(ci).endswith("below 1")


def test_noisy_equal_models_give_an_interval_around_one():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(100, generator=gen, dtype=torch.float64)
    b = torch.rand(100, generator=gen, dtype=torch.float64)
    ci = paired_ratio_ci(a, b, seed=3)
    assert ci["low"] < ci["ratio"] < ci["high"]
    assert ci["low"] < 1 < ci["high"] and describe(ci).endswith("includes 1")
    # Same seed, same interval; the width shrinks with more images.
    assert paired_ratio_ci(a, b, seed=3) == ci
    big_a = torch.rand(10000, generator=gen, dtype=torch.float64)
    big_b = torch.rand(10000, generator=gen, dtype=torch.float64)
    wide = ci["high"] - ci["low"]
    big = paired_ratio_ci(big_a, big_b)
    assert big["high"] - big["low"] < wide / 5


def test_non_finite_images_are_dropped_from_both_and_shapes_must_match():
    a = torch.tensor([1.0, math.nan, 2.0, 3.0])
    b = torch.tensor([2.0, 1.0, math.inf, 3.0])
    ci = paired_ratio_ci(a, b)
    assert ci["num_images"] == 2 and ci["ratio"] == pytest.approx(4 / 5)
    assert math.isnan(paired_ratio_ci(torch.tensor([math.nan]), torch.tensor([1.0]))["ratio"])
    with pytest.raises(ValueError, match="same images"):
        paired_ratio_ci(torch.ones(3), torch.ones(4))


def test_seed_and_scene_interval_covers_the_spread_between_seeds():
    from modality_forcing.metrics.bootstrap import seed_scene_ratio_ci, verdict_word

    base = torch.rand(3, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    same = seed_scene_ratio_ci(0.5 * base, base)  # every seed and scene exactly half
    assert same["ratio"] == pytest.approx(0.5) and same["low"] == pytest.approx(0.5)
    assert same["high"] == pytest.approx(0.5) and verdict_word(same) == "holds"
    # seeds that disagree (one 20% better, one 10% worse): the interval spans them
    spread = seed_scene_ratio_ci(base * torch.tensor([[0.8], [1.1], [1.0]]), base)
    assert spread["per_seed"] == pytest.approx([0.8, 1.1, 1.0])
    assert spread["low"] < 0.9 and spread["high"] > 1.05 and verdict_word(spread) == "not resolved"
    worse = seed_scene_ratio_ci(1.5 * base, base)
    assert verdict_word(worse) == "does not hold" and verdict_word(worse, target=2.0) == "holds"
    with pytest.raises(ValueError, match="seeds, images"):
        seed_scene_ratio_ci(base[0], base[0])
