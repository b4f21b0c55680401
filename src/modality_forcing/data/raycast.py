"""Vectorised ray-primitive intersections, screen-space bounds and solid textures (numpy).

Everything is elementwise float32 (+, -, *, /, sqrt, floor, min/max, where; no matmul, no sums
over an axis, no transcendental functions), so a pixel's value never depends on which other pixels
or scenes share the call: batching is bit-exact. Vectors are (x, y, z) tuples of arrays or floats
that broadcast together; functions return the ray parameter t, `inf` where the ray misses.
Degenerate directions divide by zero on purpose (inf); callers silence numpy's warnings.
"""

from __future__ import annotations

import math

import numpy as np

Scalar = np.ndarray | float
Vec = tuple[Scalar, Scalar, Scalar]
INF = float("inf")


def dot(a: Vec, b: Vec) -> Scalar:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def to_local(v: Vec, cos: Scalar, sin: Scalar) -> Vec:
    """World vector -> frame turned by yaw about +y (local z = (sin, 0, cos) in world)."""
    return (cos * v[0] - sin * v[2], v[1], sin * v[0] + cos * v[2])


def to_world(v: Vec, cos: Scalar, sin: Scalar) -> Vec:
    """Inverse of `to_local`."""
    return (cos * v[0] + sin * v[2], v[1], cos * v[2] - sin * v[0])


def planes(o: Vec, d: Vec, normal: Vec, offset: Scalar, top: Scalar, t_min: float) -> np.ndarray:
    """One-sided planes `normal . x = offset`, seen from the side `normal` points to and cut off
    above height `top` (inf for the floor)."""
    denom = dot(normal, d)
    t = (offset - dot(normal, o)) / denom
    return np.where((denom < 0) & (t > t_min) & (o[1] + t * d[1] <= top), t, INF)


def sphere(o: Vec, d: Vec, centre: Vec, radius: float, t_min: float) -> np.ndarray:
    """Nearest entry into a sphere (ray origins outside it)."""
    oc = sub(o, centre)
    a, b = dot(d, d), dot(oc, d)
    disc = b * b - a * (dot(oc, oc) - radius * radius)
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > t_min), t, INF)


def box(o: Vec, d: Vec, centre: Vec, half: Vec, cos: float, sin: float, t_min: float) -> np.ndarray:
    """Slab test against a box turned by yaw about the vertical axis."""
    lo, ld = to_local(sub(o, centre), cos, sin), to_local(d, cos, sin)
    near, far = -INF, INF
    for axis in range(3):
        inv = 1.0 / ld[axis]
        t1, t2 = (-half[axis] - lo[axis]) * inv, (half[axis] - lo[axis]) * inv
        near = np.maximum(near, np.minimum(t1, t2))
        far = np.minimum(far, np.maximum(t1, t2))
    return np.where((near <= far) & (near > t_min), near, INF)


def cylinder(o: Vec, d: Vec, centre: Vec, radius: float, half_h: float, t_min: float) -> np.ndarray:
    """Vertical capped cylinder: side wall, and the cap that faces the ray origin."""
    px, pz = o[0] - centre[0], o[2] - centre[2]
    a, b = d[0] * d[0] + d[2] * d[2], px * d[0] + pz * d[2]
    disc = b * b - a * (px * px + pz * pz - radius * radius)
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y_side = o[1] + t_side * d[1] - centre[1]
    side = (disc >= 0) & (t_side > t_min) & (np.abs(y_side) <= half_h)
    cap_y = np.where(o[1] > centre[1], centre[1] + half_h, centre[1] - half_h)
    t_cap = (cap_y - o[1]) / d[1]
    cx, cz = px + t_cap * d[0], pz + t_cap * d[2]
    cap = (t_cap > t_min) & (cx * cx + cz * cz <= radius * radius)
    return np.minimum(np.where(side, t_side, INF), np.where(cap, t_cap, INF))


def box_normal(p: Vec, centre: Vec, half: Vec, cos: float, sin: float) -> Vec:
    """Outward normal of the face a surface point lies on (largest |local| / half extent)."""
    local = to_local(sub(p, centre), cos, sin)
    ratio = [np.abs(local[i]) / half[i] for i in range(3)]
    is_x = (ratio[0] >= ratio[1]) & (ratio[0] >= ratio[2])
    is_y = ~is_x & (ratio[1] >= ratio[2])
    masks = (is_x, is_y, ~is_x & ~is_y)
    n = tuple(np.where(m, np.sign(local[i]), 0.0).astype(np.float32) for i, m in enumerate(masks))
    return to_world(n, cos, sin)


def cylinder_normal(p: Vec, centre: Vec, radius: float, half_h: float) -> Vec:
    """Outward normal (unnormalised): radial on the side wall, vertical on the caps."""
    px, py, pz = sub(p, centre)
    cap = np.abs(py) / half_h >= np.sqrt(px * px + pz * pz) / radius
    return (np.where(cap, 0.0, px), np.where(cap, np.sign(py), 0.0), np.where(cap, 0.0, pz))


Bounds = tuple[float, float, float, float] | None  # row lo/hi, column lo/hi; None: everywhere


def ball_bounds(centre: np.ndarray, radius: float, k: np.ndarray) -> Bounds:
    """Image-plane box (continuous pixel coordinates, not clipped to the image) that contains the
    projection of a ball given in the camera frame; None if the ball reaches behind the camera.

    The tangent cone of the ball projects to an exact interval per axis.
    """
    x, y, z = centre
    if z - radius <= 1e-3:
        return None
    out = []
    for c, f, p in ((y, k[1, 1], k[1, 2]), (x, k[0, 0], k[0, 2])):
        root = radius * math.sqrt(c * c + z * z - radius * radius)
        den = z * z - radius * radius
        out += [p + f * (c * z - root) / den, p + f * (c * z + root) / den]
    return out[0], out[1], out[2], out[3]


def union_bounds(a: Bounds, b: Bounds) -> Bounds:
    """Box around both. Perspective maps the convex hull of two balls in front of the camera
    (a capsule) to the convex hull of their images, so this also bounds a capsule's image."""
    if a is None or b is None:
        return None
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def pixel_rect(bounds: Bounds, height: int, width: int) -> tuple[slice, slice] | None:
    """Rows and columns of the pixels whose centres (at +0.5) lie in `bounds`, with one pixel of
    margin against rounding; None if none do."""
    if bounds is None:
        return slice(0, height), slice(0, width)
    v0, v1 = max(0, math.floor(bounds[0] - 0.5) - 1), min(height, math.ceil(bounds[1] - 0.5) + 2)
    u0, u1 = max(0, math.floor(bounds[2] - 0.5) - 1), min(width, math.ceil(bounds[3] - 0.5) + 2)
    return (slice(v0, v1), slice(u0, u1)) if v0 < v1 and u0 < u1 else None


def checker(q: Vec) -> np.ndarray:
    """0/1 3-D checkerboard with unit cells."""
    return np.remainder(np.floor(q[0]) + np.floor(q[1]) + np.floor(q[2]), 2.0)


def stripes(q: Vec) -> np.ndarray:
    """0/1 diagonal stripes of unit width (across x on the floor, slanted on vertical faces)."""
    return np.remainder(np.floor(q[0] + q[1]), 2.0)


_LATTICE = 32  # value-noise lattice period in cells
_VALUES = np.random.default_rng(0).random(_LATTICE**3, dtype=np.float32)


def value_noise(q: Vec) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1], unit lattice spacing (trilinear with smoothstep weights,
    lattice values from a fixed table that repeats every 32 cells)."""
    cell = [np.floor(c) for c in q]
    w = [(c - f) * (c - f) * (3.0 - 2.0 * (c - f)) for c, f in zip(q, cell, strict=True)]
    i = [f.astype(np.int64) & (_LATTICE - 1) for f in cell]
    j = [(a + 1) & (_LATTICE - 1) for a in i]
    ix = (i[0] * _LATTICE * _LATTICE, j[0] * _LATTICE * _LATTICE)
    iy = (i[1] * _LATTICE, j[1] * _LATTICE)

    def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return a + (b - a) * t

    def along_x(y: int, z: np.ndarray) -> np.ndarray:
        return lerp(_VALUES[ix[0] + iy[y] + z], _VALUES[ix[1] + iy[y] + z], w[0])

    z0, z1 = (lerp(along_x(0, z), along_x(1, z), w[1]) for z in (i[2], j[2]))
    return lerp(z0, z1, w[2])
