"""Sparse-depth simulators: turn dense depth into what real sensors measure.

Each simulator returns a new `valid_mask` that is a subset of the input one; depth values are never
changed or invented (the paper trains on LiDAR sweeps and SfM points by masking the depth loss).
Specs such as `lidar:32`, `random:0.05`, `sfm:0.02`, `holes:5` go through `parse_sparsifier`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .batch import sanitize_depth

Sparsifier = Callable[[dict[str, Any], np.random.Generator], np.ndarray]


def _ray_directions(shape: tuple[int, int], intrinsics: np.ndarray, pitch_deg: float) -> np.ndarray:
    """Unit-free ray directions [H, W, 3] in a level frame (x right, y down, z forward)."""
    h, w = shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = pix @ np.linalg.inv(np.asarray(intrinsics, np.float64)).T  # [H, W, 3]
    # A camera pitched down by p (pitch_deg = -p) sees rays p lower than in its own frame, so
    # rotate them about x into the level sensor frame.
    p = -math.radians(pitch_deg)
    rot = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    return rays @ rot.T


def _near_multiple(angle: np.ndarray, grid: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Pixels whose angle lies within half a pixel (`spacing` / 2) of the nearest grid value."""
    if len(grid) == 1:
        return np.abs(angle - grid[0]) <= 0.5 * spacing + 1e-9
    idx = np.clip(np.searchsorted(grid, angle), 1, len(grid) - 1)
    nearest = np.where(
        np.abs(angle - grid[idx - 1]) <= np.abs(angle - grid[idx]), grid[idx - 1], grid[idx]
    )
    return np.abs(angle - nearest) <= 0.5 * spacing + 1e-9


LIDAR_ELEVATION = (-25.0, 3.0)  # degrees, lowest and highest beam (HDL-32-like)


def _elevation_azimuth(
    shape: tuple[int, int], intrinsics: np.ndarray, pitch_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel ray elevation and azimuth in degrees (level frame, up positive) and the rays."""
    rays = _ray_directions(shape, intrinsics, pitch_deg)  # [H, W, 3]
    horiz = np.hypot(rays[..., 0], rays[..., 2])
    elev = np.degrees(np.arctan2(-rays[..., 1], horiz))
    azim = np.degrees(np.arctan2(rays[..., 0], rays[..., 2]))
    return elev, azim, rays


def _row_step(elev: np.ndarray) -> np.ndarray:
    """Angular height of each pixel row (degrees)."""
    return np.abs(np.gradient(elev, axis=0)) if elev.shape[0] > 1 else np.full_like(elev, 1e9)


def elevation_band(
    shape: tuple[int, int],
    intrinsics: np.ndarray,
    pitch_deg: float = 0.0,
    elevation_range: tuple[float, float] = LIDAR_ELEVATION,
) -> np.ndarray:
    """bool [H, W]: pixels whose ray elevation lies between a LiDAR's lowest and highest beam
    (within half a row), i.e. the part of the image the sensor can ever measure. Scoring inside
    it is the procedural analogue of the KITTI evaluation crops (Garg / Eigen)."""
    elev, _, _ = _elevation_azimuth(shape, intrinsics, pitch_deg)
    lo, hi = sorted(elevation_range)
    half = 0.5 * _row_step(elev)
    return (elev >= lo - half) & (elev <= hi + half)


def lidar(
    depth: np.ndarray,
    valid_mask: np.ndarray | None,
    intrinsics: np.ndarray,
    rng: np.random.Generator,
    beams: int = 32,
    elevation_range: tuple[float, float] = LIDAR_ELEVATION,
    azimuth_step_deg: float = 0.2,
    max_range: float = 80.0,
    dropout: float = 0.0,
    pitch_deg: float = 0.0,
) -> np.ndarray:
    """Spinning-LiDAR scanlines: pixels whose ray elevation is at one of `beams` beam angles.

    Beam elevations are evenly spaced over `elevation_range` (degrees, up positive, HDL-32-like by
    default) in the level sensor frame; a pixel is hit when its elevation is within half a pixel
    row of a beam and its azimuth within half a column of a multiple of `azimuth_step_deg`, so a
    coarse image keeps every column. Returns beyond `max_range` metres (along the ray) are lost.

    Args:
        depth: float [H, W] z-depth in metres.
        valid_mask: bool [H, W] pixels with depth.
        intrinsics: float [3, 3] pinhole K of the image.
        rng: only used for `dropout` (random lost returns).
        beams: number of laser beams (rows of points).
        elevation_range: (lowest, highest) beam elevation in degrees.
        azimuth_step_deg: horizontal angular resolution.
        max_range: maximum range in metres.
        dropout: fraction of returns randomly lost.
        pitch_deg: elevation of the camera's optical axis (< 0: looking down, as
            `scene["camera"]["pitch_deg"]` of the procedural world); the sensor itself is level.

    Returns:
        bool [H, W] mask, a subset of `valid_mask`.
    """
    if beams < 1:
        raise ValueError(f"lidar needs beams >= 1, got {beams}")
    depth, valid = sanitize_depth(depth, valid_mask)
    elev, azim, rays = _elevation_azimuth(depth.shape, intrinsics, pitch_deg)
    lo, hi = sorted(elevation_range)
    beam_elev = np.linspace(lo, hi, beams) if beams > 1 else np.array([0.5 * (lo + hi)])
    # Per-pixel angular size, so one beam lands on about one pixel per column at any resolution.
    row_step = _row_step(elev)
    col_step = np.abs(np.gradient(azim, axis=1)) if depth.shape[1] > 1 else np.full_like(azim, 1e9)
    hit = _near_multiple(elev, beam_elev, row_step)
    az_grid = np.arange(azim.min() // azimuth_step_deg - 1, azim.max() // azimuth_step_deg + 2)
    hit &= _near_multiple(azim, az_grid * azimuth_step_deg, col_step)
    # z-depth -> range along the ray: the camera-frame ray has z = 1 and rotation keeps its length.
    hit &= depth * np.linalg.norm(rays, axis=-1) <= max_range
    if dropout > 0:
        hit &= rng.random(depth.shape) >= dropout
    return hit & valid


def random_pixels(valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """bool mask of `valid`'s shape: min(n, #valid) of its True pixels, uniformly at random
    without replacement."""
    idx = np.flatnonzero(valid)
    out = np.zeros(valid.size, bool)
    out[rng.choice(idx, size=min(n, idx.size), replace=False)] = True
    return out.reshape(valid.shape)


def _subsample(
    valid: np.ndarray,
    ratio: float,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Keep round(ratio * #valid) valid pixels, without replacement, optionally weighted."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    idx = np.flatnonzero(valid)
    n = round(ratio * idx.size)
    out = np.zeros(valid.size, bool)
    if n == 0:
        return out.reshape(valid.shape)
    if weights is None:
        return random_pixels(valid, n, rng)
    # Gumbel top-k = weighted sampling without replacement, O(N) instead of rng.choice's loop.
    keys = np.log(weights.reshape(-1)[idx]) + rng.gumbel(size=idx.size)
    out[idx[np.argpartition(-keys, n - 1)[:n]]] = True
    return out.reshape(valid.shape)


def random_points(
    depth: np.ndarray, valid_mask: np.ndarray | None, rng: np.random.Generator, ratio: float = 0.05
) -> np.ndarray:
    """Uniformly random points: keeps exactly round(ratio * #valid) of the valid pixels.

    Args:
        depth: float [H, W]; only its validity matters.
        valid_mask: bool [H, W].
        rng: random generator.
        ratio: fraction of the valid pixels kept, in [0, 1].

    Returns:
        bool [H, W] subset of `valid_mask`.
    """
    _, valid = sanitize_depth(depth, valid_mask)
    return _subsample(valid, ratio, rng)


def image_gradient(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude [H, W] of the luminance of a uint8 [H, W, 3] image."""
    grey = np.asarray(image, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gy, gx = np.gradient(grey)
    return np.hypot(gx, gy)


def sfm_points(
    depth: np.ndarray,
    valid_mask: np.ndarray | None,
    image: np.ndarray,
    rng: np.random.Generator,
    ratio: float = 0.02,
    floor: float = 0.05,
) -> np.ndarray:
    """SfM-like points: round(ratio * #valid) pixels drawn with weight ~ image gradient magnitude.

    Structure-from-motion triangulates matched features, which sit on texture and edges; flat
    regions still get a few points through `floor` (relative to the mean gradient).

    Args:
        depth: float [H, W]; only its validity matters.
        valid_mask: bool [H, W].
        image: uint8 [H, W, 3] RGB.
        rng: random generator.
        ratio: fraction of valid pixels kept.
        floor: weight added everywhere, as a fraction of the mean gradient magnitude.

    Returns:
        bool [H, W] subset of `valid_mask`.
    """
    _, valid = sanitize_depth(depth, valid_mask)
    grad = image_gradient(image)
    weights = grad + floor * max(float(grad.mean()), 1e-3)
    return _subsample(valid, ratio, rng, weights)


def holes(
    depth: np.ndarray,
    valid_mask: np.ndarray | None,
    rng: np.random.Generator,
    count: int = 5,
    radius_range: tuple[float, float] = (0.04, 0.15),
) -> np.ndarray:
    """Remove `count` random elliptical blobs (reflective or dark surfaces a sensor misses).

    Args:
        depth: float [H, W]; only its validity matters.
        valid_mask: bool [H, W].
        rng: random generator.
        count: number of blobs.
        radius_range: blob semi-axes as fractions of the shorter image side.

    Returns:
        bool [H, W] subset of `valid_mask`.
    """
    if count < 0:
        raise ValueError(f"holes needs count >= 0, got {count}")
    _, valid = sanitize_depth(depth, valid_mask)
    h, w = valid.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    hole = np.zeros_like(valid)
    side = min(h, w)
    for _ in range(count):
        cu, cv = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(*radius_range, size=2) * side
        theta = rng.uniform(0, np.pi)
        du, dv = u - cu, v - cv
        x = du * np.cos(theta) + dv * np.sin(theta)
        y = -du * np.sin(theta) + dv * np.cos(theta)
        hole |= (x / a) ** 2 + (y / b) ** 2 <= 1.0
    return valid & ~hole


# --------------------------------------------------------------------------------------------
# registry: "name:arg" specs -> sample-level callables
# --------------------------------------------------------------------------------------------


def _parse_number(
    arg: str,
    name: str,
    kind: type,
    hint: str,
    default: float,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    if arg == "":
        return default
    try:
        value = kind(arg)
    except ValueError:
        raise ValueError(f"bad argument '{arg}' for sparsifier '{name}': expected {hint}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {'inf' if high is None else high}]"
        raise ValueError(f"argument {value} for sparsifier '{name}' is outside {bounds}")
    return value


def camera_pitch(sample: dict[str, Any]) -> float:
    """Optical-axis elevation in degrees (< 0: down) from `sample['scene']['camera']`, else 0."""
    camera = (sample.get("scene") or {}).get("camera") or {}
    return float(camera.get("pitch_deg", 0.0)) if isinstance(camera, dict) else 0.0


def within_lidar_band(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with `valid_mask` restricted to the LiDAR's elevation band (`elevation_band`
    at the sample's camera pitch): the pixels a LiDAR-trained model was ever supervised on,
    like the KITTI evaluation crops. Needs `intrinsics`."""
    if sample.get("intrinsics") is None:
        raise ValueError("scoring in the LiDAR band needs sample['intrinsics'] (3x3 camera matrix)")
    band = elevation_band(np.asarray(sample["depth"]).shape, sample["intrinsics"],
                          camera_pitch(sample))  # fmt: skip
    return {**sample, "valid_mask": np.asarray(sample["valid_mask"]) & band}


def _make_lidar(arg: str) -> Sparsifier:
    beams = _parse_number(arg, "lidar", int, "the number of beams, e.g. lidar:32", 32, low=1)

    def run(sample: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
        if sample.get("intrinsics") is None:
            raise ValueError("lidar sparsifier needs sample['intrinsics'] (3x3 camera matrix)")
        return lidar(
            sample["depth"],
            sample.get("valid_mask"),
            sample["intrinsics"],
            rng,
            beams=beams,
            pitch_deg=camera_pitch(sample),
        )

    return run


def _make_random(arg: str) -> Sparsifier:
    ratio = _parse_number(arg, "random", float, "a fraction, e.g. random:0.05", 0.05, 0.0, 1.0)
    return lambda s, rng: random_points(s["depth"], s.get("valid_mask"), rng, ratio=ratio)


def _make_sfm(arg: str) -> Sparsifier:
    ratio = _parse_number(arg, "sfm", float, "a fraction, e.g. sfm:0.02", 0.02, 0.0, 1.0)
    return lambda s, rng: sfm_points(s["depth"], s.get("valid_mask"), s["image"], rng, ratio=ratio)


def _make_holes(arg: str) -> Sparsifier:
    count = _parse_number(arg, "holes", int, "a blob count, e.g. holes:5", 5, low=0)
    return lambda s, rng: holes(s["depth"], s.get("valid_mask"), rng, count=count)


SPARSIFIERS: dict[str, Callable[[str], Sparsifier]] = {
    "lidar": _make_lidar,
    "random": _make_random,
    "sfm": _make_sfm,
    "holes": _make_holes,
}


def parse_sparsifier(spec: str) -> Sparsifier:
    """Build a sparsifier from `name[:arg]`, e.g. `lidar:32`, `random:0.05`, `sfm:0.02`, `holes:5`.

    Returns:
        f(sample, rng) -> bool [H, W] valid mask (a subset of the sample's mask).

    Raises:
        ValueError: unknown name or bad argument.
    """
    name, _, arg = spec.strip().partition(":")
    if name not in SPARSIFIERS:
        raise ValueError(f"unknown sparsifier '{name}'; choose from {sorted(SPARSIFIERS)}")
    return SPARSIFIERS[name](arg.strip())


def apply_sparsifier(
    sample: dict[str, Any], spec: str | Sparsifier, rng: np.random.Generator
) -> dict[str, Any]:
    """Return a shallow copy of `sample` with the sparsified `valid_mask` and depth 0 outside it."""
    fn = parse_sparsifier(spec) if isinstance(spec, str) else spec
    mask = fn(sample, rng)
    depth, valid = sanitize_depth(sample["depth"], mask)
    return {**sample, "depth": depth, "valid_mask": valid}
