"""Sparse-depth simulators: mask subsets, no invented depth, sensor geometry, ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rgbd_samples import make_sample, pinhole

from modality_forcing.data.sparsify import (
    apply_sparsifier,
    elevation_band,
    holes,
    image_gradient,
    lidar,
    parse_sparsifier,
    random_points,
    sfm_points,
    within_lidar_band,
)

SPECS = ["lidar:16", "random:0.05", "sfm:0.02", "holes:5", "lidar", "random"]


@pytest.mark.parametrize("spec", SPECS)
def test_mask_is_subset_and_depth_untouched(spec: str) -> None:
    sample = make_sample(1, 48, 64)
    out = apply_sparsifier(sample, spec, np.random.default_rng(0))
    assert out["valid_mask"].dtype == bool
    assert not (out["valid_mask"] & ~sample["valid_mask"]).any()
    kept = out["valid_mask"]
    assert np.array_equal(out["depth"][kept], sample["depth"][kept])  # never modified
    assert (out["depth"][~kept] == 0).all()  # nothing invented outside the mask
    assert out["image"] is sample["image"] and out["caption"] == sample["caption"]
    assert sample["valid_mask"].sum() > kept.sum() > 0


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_mask(spec: str) -> None:
    sample = make_sample(2, 48, 64)
    fn = parse_sparsifier(spec)
    a = fn(sample, np.random.default_rng(7))
    b = fn(sample, np.random.default_rng(7))
    assert np.array_equal(a, b)
    if not spec.startswith("lidar"):  # lidar without dropout is deterministic by geometry
        assert not np.array_equal(a, fn(sample, np.random.default_rng(8)))


def _elevation(height: int, width: int, k: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width] + 0.5
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2]) / k[0, 0]
    return np.degrees(np.arctan2(-y, np.hypot(x, 1.0)))


def test_lidar_scanlines_at_beam_elevations() -> None:
    h, w, beams = 240, 40, 32
    k = pinhole(h, w, vfov_deg=80.0)  # covers the (-25, 3) degree beam fan
    mask = lidar(np.full((h, w), 5.0, np.float32), None, k, np.random.default_rng(0), beams=beams)
    elev = _elevation(h, w, k)[mask]
    beam_elev = np.linspace(-25, 3, beams)
    nearest = np.abs(elev[:, None] - beam_elev[None]).argmin(1)
    row_deg = 80.0 / h * 1.5  # generous bound on one row's angular height
    assert np.abs(elev - beam_elev[nearest]).max() <= row_deg / 2
    # Every beam is seen, about once per column (azimuth step 0.2 deg < one column).
    counts = np.bincount(nearest, minlength=beams)
    assert (counts >= 0.9 * w).all() and (counts <= 1.1 * w).all()
    # With a narrow horizontal field of view each beam is close to one image row.
    assert beams <= len(np.unique(np.nonzero(mask)[0])) <= 1.5 * beams


def test_lidar_range_fov_and_pitch() -> None:
    h, w = 64, 64
    k = pinhole(h, w, vfov_deg=20.0)  # sees -10..10 degrees: only beams in that band hit
    ones = np.ones((h, w), bool)
    rng = np.random.default_rng(0)
    near = lidar(np.full((h, w), 5.0, np.float32), ones, k, rng, beams=29)  # one beam per degree
    elev = _elevation(h, w, k)[near]
    assert elev.min() >= -10.5 and elev.max() <= 3.5
    far = lidar(np.full((h, w), 100.0, np.float32), ones, k, rng, beams=29, max_range=80.0)
    assert not far.any()
    # Pitching the camera down 10 degrees moves the scanlines up in the image.
    pitched = lidar(np.full((h, w), 5.0, np.float32), ones, k, rng, beams=29, pitch_deg=-10.0)
    assert np.nonzero(pitched)[0].mean() < np.nonzero(near)[0].mean()


def test_elevation_band_is_the_region_the_lidar_can_measure() -> None:
    h, w = 120, 40
    k = pinhole(h, w, vfov_deg=80.0)  # sees -40..40 degrees
    band = elevation_band((h, w), k)
    elev = _elevation(h, w, k)
    row_deg = 80.0 / h * 1.5
    assert (elev[band] >= -25 - row_deg).all() and (elev[band] <= 3 + row_deg).all()
    assert band[(elev > -24) & (elev < 2)].all()  # everything well inside is in
    assert not band[0].any() and not band[-1].any()  # top (+40) and bottom (-40) rows are out
    hits = lidar(np.full((h, w), 5.0, np.float32), None, k, np.random.default_rng(0), beams=64)
    assert hits.any() and not (hits & ~band).any()  # every return lies inside the band
    down = elevation_band((h, w), k, pitch_deg=-20.0)  # looking down: the band moves up
    assert np.nonzero(down)[0].mean() < np.nonzero(band)[0].mean()


def test_scoring_in_the_lidar_band_keeps_only_valid_pixels_in_the_band() -> None:
    sample = make_sample(0, 48, 64)
    sample["valid_mask"][:, :5] = False  # pixels without depth stay out of the band too
    sample["scene"]["camera"] = {"pitch_deg": -10.0}
    banded = within_lidar_band(sample)
    band = elevation_band((48, 64), sample["intrinsics"], pitch_deg=-10.0)
    assert (banded["valid_mask"] == (sample["valid_mask"] & band)).all()
    assert 0 < banded["valid_mask"].sum() < sample["valid_mask"].sum()
    assert banded["depth"] is sample["depth"]  # depth itself is untouched
    with pytest.raises(ValueError, match="intrinsics"):
        within_lidar_band({**sample, "intrinsics": None})


def test_lidar_reads_camera_pitch_from_scene() -> None:
    sample = make_sample(0, 48, 64)
    level = apply_sparsifier(sample, "lidar:32", np.random.default_rng(0))["valid_mask"]
    sample["scene"]["camera"] = {"pitch_deg": -20.0}
    down = apply_sparsifier(sample, "lidar:32", np.random.default_rng(0))["valid_mask"]
    assert np.nonzero(down)[0].mean() < np.nonzero(level)[0].mean()


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.3])
def test_random_and_sfm_ratios(ratio: float) -> None:
    sample = make_sample(3, 64, 96)
    n_valid = sample["valid_mask"].sum()
    rng = np.random.default_rng(0)
    r = random_points(sample["depth"], sample["valid_mask"], rng, ratio=ratio)
    s = sfm_points(sample["depth"], sample["valid_mask"], sample["image"], rng, ratio=ratio)
    for mask in (r, s):
        assert abs(mask.sum() - ratio * n_valid) <= 1
        assert not (mask & ~sample["valid_mask"]).any()


def test_sfm_prefers_edges() -> None:
    h, w = 64, 64
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2 :] = 255  # one vertical edge
    depth = np.ones((h, w), np.float32)
    grad = image_gradient(image)
    edge = grad > 0
    mask = sfm_points(depth, None, image, np.random.default_rng(0), ratio=0.05)
    # Edge columns are 2/64 of the image but should hold most of the points.
    assert mask[edge].sum() > 0.5 * mask.sum()
    assert mask[~edge].sum() > 0  # flat regions still get a few (the floor weight)


def test_holes_remove_blobs() -> None:
    ones = np.ones((64, 64), bool)
    depth = np.ones((64, 64), np.float32)
    assert holes(depth, ones, np.random.default_rng(0), count=0).all()
    mask = holes(depth, ones, np.random.default_rng(0), count=5)
    assert 0.5 < mask.mean() < 1.0


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown sparsifier 'radar'; choose from \["):
        parse_sparsifier("radar:3")
    for bad in ["lidar:abc", "lidar:0", "random:1.5", "sfm:-0.1", "holes:2.5"]:
        with pytest.raises(ValueError, match="sparsifier"):
            parse_sparsifier(bad)
    sample = make_sample(0)
    del sample["intrinsics"]
    with pytest.raises(ValueError, match="intrinsics"):
        apply_sparsifier(sample, "lidar:8", np.random.default_rng(0))


def test_lidar_ignores_invalid_pixels() -> None:
    sample = make_sample(4, 48, 64)
    sample["intrinsics"] = pinhole(48, 64, vfov_deg=2 * math.degrees(math.atan(1.0)))
    out = apply_sparsifier(sample, "lidar:64", np.random.default_rng(0))
    assert out["valid_mask"].any()
    assert not (out["valid_mask"] & ~sample["valid_mask"]).any()
