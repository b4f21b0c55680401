"""The embedded procedural RGB-D world: seeded scene graphs (`scene_graph.py`) ray cast into RGB,
metric z-depth, normals, instance ids, intrinsics and a caption (`data/batch.py` sample format).

Instance ids: 0 sky / invalid, 1 floor, 2-4 back / left / right wall, 5 + i the i-th object of
`scene["objects"]`. Depth, normals and instance are zero wherever `valid_mask` is False (no surface
within `max_range` metres of z-depth). Normals are unit vectors in the OpenCV camera frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import raycast as rc
from .scene_graph import (
    CAPTION_VOCAB,
    FIRST_OBJECT_INSTANCE,
    INSTANCE_FLOOR,
    INSTANCE_WALL,
    PALETTE,
    SKIES,
    WALL_SIDES,
    SceneConfig,
    camera_basis,
    caption_scene,
    intrinsics,
    sample_scene,
)
from .splits import split_seeds

__all__ = [
    "CAPTION_VOCAB",
    "SceneConfig",
    "render",
    "render_scene_params",
    "render_scenes",
    "render_split",
    "sample_scene",
]

_KINDS = {"plane": 1, "sphere": 2, "box": 3, "cylinder": 4}
_TEX = {"solid": 0, "checker": 1, "stripes": 2, "noise": 3}
# Columns of the surface table [B, C, F]; C = floor + 3 wall slots + objects (scene order).
# CENTRE holds an object's centre or a plane's unit normal; HALF an object's half extents.
KIND, INST, ALB, ALB2, TEX, INV_SCALE = 0, 1, slice(2, 5), slice(5, 8), 8, 9
ORIGIN, COS, SIN = slice(10, 13), 13, 14  # texture frame: origin and yaw about +y
CENTRE, HALF, OFFSET, TOP = slice(15, 18), slice(18, 21), 21, 22  # geometry
NUM_FEATURES = 23
NUM_PLANES = 1 + len(WALL_SIDES)
_T_MIN = 1e-4  # smallest ray parameter that counts as a hit (not the ray's own start surface)
_SHADOW_BIAS = 1e-3  # metres along the normal before a shadow ray starts
# what a hand-built scene may leave out
_DEFAULT_LIGHT = {"elevation_deg": 50.0, "azimuth_deg": 30.0, "ambient": 0.35, "diffuse": 0.75}
_DEFAULT_SKY = {"zenith": list(SKIES[0][0]), "horizon": list(SKIES[0][1])}


def _surface_row(surface: dict[str, Any], inst: int, kind: str, yaw_deg: float) -> np.ndarray:
    """Shared columns: kind, instance, two albedos, texture and its frame (origin, yaw, scale)."""
    row = np.zeros(NUM_FEATURES)
    alb = np.asarray(PALETTE[surface["color"]])
    # texture colour 2: a darker shade of bright colours, a lighter one of dark colours
    row[ALB], row[ALB2] = alb, alb * 0.4 if alb.mean() > 0.25 else alb + (1.0 - alb) * 0.4
    row[[KIND, INST, TEX]] = _KINDS[kind], inst, _TEX[surface.get("texture", "solid")]
    row[INV_SCALE] = 1.0 / surface.get("texture_scale", 0.5)
    row[COS], row[SIN] = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    row[ORIGIN] = surface.get("texture_offset", [0.0, 0.0, 0.0])
    return row


def _wall_row(wall: dict[str, Any]) -> np.ndarray:
    normal = np.asarray(wall["normal"], float)
    normal /= np.linalg.norm(normal)
    point = np.asarray(wall["point"], float)
    yaw = math.degrees(math.atan2(normal[0], normal[2]))  # texture frame: local z = normal
    row = _surface_row(wall, INSTANCE_WALL[wall["side"]], "plane", yaw)
    tangent = np.array([row[COS], 0.0, -row[SIN]])  # local x axis in world
    off = row[ORIGIN].copy()
    # the wall sits mid-cell along its normal so floor() never flickers on it
    row[ORIGIN] = point - 0.5 * wall.get("texture_scale", 0.5) * normal + off[0] * tangent
    row[ORIGIN.start + 1] += off[1]
    row[CENTRE], row[OFFSET], row[TOP] = normal, normal @ point, wall.get("height", math.inf)
    return row


def _scene_rows(scene: dict[str, Any]) -> np.ndarray:
    """Floor, three wall slots (kind 0 if absent, never hit) and the objects: [4 + n, F]."""
    floor = scene.get("floor", {"color": "gray"})
    rows = [_surface_row(floor, INSTANCE_FLOOR, "plane", floor.get("yaw_deg", 0.0))]
    rows[0][ORIGIN.start + 1] = -0.5 * floor.get("texture_scale", 0.5)  # floor mid-cell too
    rows[0][CENTRE], rows[0][TOP] = (0.0, 1.0, 0.0), math.inf
    walls = {w["side"]: _wall_row(w) for w in scene.get("walls", [])}
    rows += [walls.get(side, np.zeros(NUM_FEATURES)) for side in WALL_SIDES]
    for i, obj in enumerate(scene.get("objects", [])):
        inst = obj.get("instance", FIRST_OBJECT_INSTANCE + i)
        row = _surface_row(obj, inst, obj["shape"], obj.get("yaw_deg", 0.0))
        row[ORIGIN] += obj["position"]
        row[CENTRE], row[HALF] = obj["position"], 0.5 * np.asarray(obj["size"], float)
        rows.append(row)
    return np.stack(rows)


@dataclass
class _Batch:
    """Per-batch ray-casting state. Arrays are float32; per-scene constants are [B, 1, 1]."""

    table: np.ndarray  # [B, C, F] surface parameters, object slots padded with kind 0
    origin: tuple[np.ndarray, ...]  # camera centres, 3 x [B, 1, 1]
    dirs: rc.Vec  # ray directions, 3 x [B, H, W]; camera-frame z = 1, so t is z-depth
    rot: np.ndarray  # camera-to-world rotations [B, 3, 3] (columns: right, down, forward)
    k: np.ndarray  # intrinsics [B, 3, 3]
    light: rc.Vec  # unit direction to the sun, 3 x [B, 1, 1]


def _setup(scenes: Sequence[dict[str, Any]], cfg: SceneConfig) -> _Batch:
    rows = [_scene_rows(s) for s in scenes]
    table = np.zeros((len(rows), max(len(r) for r in rows), NUM_FEATURES), np.float32)
    for b, r in enumerate(rows):
        table[b, : len(r)] = r
    k = np.stack([intrinsics(s["camera"]["fov_y_deg"], cfg.height, cfg.width) for s in scenes])
    rot = np.stack([camera_basis(s["camera"]) for s in scenes]).astype(np.float32)
    pos = np.array([s["camera"]["position"] for s in scenes], np.float32)
    u = np.arange(cfg.width, dtype=np.float32) + 0.5  # pixel centres
    v = np.arange(cfg.height, dtype=np.float32) + 0.5
    xn = (u[None, None] - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None]  # [B, 1, W]
    yn = (v[None, :, None] - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None]  # [B, H, 1]
    r = rot[:, :, :, None, None]
    dirs = tuple(r[:, i, 0] * xn + r[:, i, 1] * yn + r[:, i, 2] for i in range(3))
    sun = []
    for s in scenes:
        light = _DEFAULT_LIGHT | s.get("light", {})
        el, az = math.radians(light["elevation_deg"]), math.radians(light["azimuth_deg"])
        sun.append([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    sun = np.array(sun, np.float32)[:, :, None, None]
    origin = tuple(pos[:, i, None, None] for i in range(3))
    return _Batch(table, origin, dirs, rot, k, tuple(sun[:, i] for i in range(3)))


@dataclass
class _Object:
    b: int  # scene index in the batch
    slot: int  # table column
    row: list[float]  # its table row (float32 values)
    centre: np.ndarray  # camera-frame centre, float64 [3]
    bounds: rc.Bounds  # image-plane box of its bounding ball
    rect: tuple[slice, slice] | None  # the pixels inside `bounds`


def _objects(batch: _Batch, cfg: SceneConfig) -> list[_Object]:
    """Every object slot in use, in scene then slot order."""
    out = []
    for b in range(batch.table.shape[0]):
        pos = np.array([c[b, 0, 0] for c in batch.origin], float)
        for slot in range(NUM_PLANES, batch.table.shape[1]):
            row = batch.table[b, slot].tolist()
            if row[KIND] > 0:
                centre = (np.asarray(row[CENTRE]) - pos) @ batch.rot[b]
                bounds = rc.ball_bounds(centre, _bound(row), batch.k[b])
                rect = rc.pixel_rect(bounds, cfg.height, cfg.width)
                out.append(_Object(b, slot, row, centre, bounds, rect))
    return out


def _intersect(row: list[float], o: rc.Vec, d: rc.Vec) -> np.ndarray:
    centre, half = tuple(row[CENTRE]), tuple(row[HALF])
    if row[KIND] == _KINDS["sphere"]:
        return rc.sphere(o, d, centre, half[0], _T_MIN)
    if row[KIND] == _KINDS["box"]:
        return rc.box(o, d, centre, half, row[COS], row[SIN], _T_MIN)
    return rc.cylinder(o, d, centre, half[0], half[1], _T_MIN)


def _bound(row: list[float]) -> float:
    """Radius of a ball around the object's centre that contains it."""
    hx, hy, hz = row[HALF]
    if row[KIND] == _KINDS["sphere"]:
        return hx
    if row[KIND] == _KINDS["box"]:
        return math.sqrt(hx * hx + hy * hy + hz * hz)
    return math.hypot(hx, hy)  # cylinder: radius, half height


def _nearest(batch: _Batch, objects: list[_Object]) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter (z-depth, inf on a miss) and table slot of the nearest surface, [B, H, W].

    Planes are tested at every pixel; each object only inside the screen rectangle its bounding
    ball projects to, which is exact (never misses a hit) and spares most of the work.
    """
    tab = batch.table[:, :NUM_PLANES, :, None, None]  # [B, 4, F, 1, 1]
    o = tuple(c[:, None] for c in batch.origin)
    d = tuple(c[:, None] for c in batch.dirs)
    normal = tuple(tab[:, :, c] for c in range(CENTRE.start, CENTRE.stop))
    t_planes = rc.planes(o, d, normal, tab[:, :, OFFSET], tab[:, :, TOP], _T_MIN)
    t_planes = np.where(tab[:, :, KIND] > 0, t_planes, rc.INF)  # [B, 4, H, W]
    best, slot = t_planes[:, 0].copy(), np.zeros(t_planes[:, 0].shape, np.int64)
    for c in range(1, NUM_PLANES):
        closer = t_planes[:, c] < best  # strict: the first surface wins exact ties
        best, slot = np.where(closer, t_planes[:, c], best), np.where(closer, c, slot)
    for obj in objects:
        if obj.rect is None:
            continue
        region = (obj.b, *obj.rect)
        o_b = tuple(float(c[obj.b, 0, 0]) for c in batch.origin)
        t_obj = _intersect(obj.row, o_b, tuple(c[region] for c in batch.dirs))
        closer = t_obj < best[region]
        best[region] = np.where(closer, t_obj, best[region])
        slot[region] = np.where(closer, obj.slot, slot[region])
    return best, slot


def _normals(
    batch: _Batch, objects: list[_Object], g: np.ndarray, p: rc.Vec, slot: np.ndarray
) -> rc.Vec:
    """Unit world normals [B, H, W]: plane normals from the gathered rows g [F, B, H, W], object
    normals computed only inside each object's rectangle, where it is the nearest surface."""
    n = [g[c].copy() for c in range(CENTRE.start, CENTRE.stop)]
    for obj in objects:
        if obj.rect is None:
            continue
        region, row = (obj.b, *obj.rect), obj.row
        mine = slot[region] == obj.slot
        if not mine.any():
            continue
        centre, half, pr = tuple(row[CENTRE]), tuple(row[HALF]), tuple(c[region] for c in p)
        if row[KIND] == _KINDS["sphere"]:
            on = rc.sub(pr, centre)
        elif row[KIND] == _KINDS["box"]:
            on = rc.box_normal(pr, centre, half, row[COS], row[SIN])
        else:
            on = rc.cylinder_normal(pr, centre, half[0], half[1])
        for i in range(3):
            n[i][region] = np.where(mine, on[i], n[i][region])
    norm = np.sqrt(rc.dot(n, n))
    return tuple(c / norm for c in n)


def _shadowed(
    batch: _Batch, objects: list[_Object], p: rc.Vec, n: rc.Vec, cfg: SceneConfig
) -> np.ndarray:
    """True where the ray from a surface point toward the sun meets an object, [B, H, W].

    Only points in an object's shadow volume can be blocked by it: the bounding ball swept away
    from the sun down to floor level, a capsule whose screen rectangle is the union of its end
    balls' rectangles (perspective maps the convex hull of two balls to that of their images).
    """
    blocked = np.zeros(p[0].shape, bool)
    for obj in objects:
        b, row, radius = obj.b, obj.row, _bound(obj.row)
        sun = tuple(float(c[b, 0, 0]) for c in batch.light)
        if sun[1] > 0.05:
            reach = (row[CENTRE.start + 1] + radius) / sun[1]  # until the ball is under the floor
            end = obj.centre - reach * (np.asarray(sun) @ batch.rot[b].astype(float))
            bounds = rc.union_bounds(obj.bounds, rc.ball_bounds(end, radius, batch.k[b]))
        else:
            bounds = None
        rect = rc.pixel_rect(bounds, cfg.height, cfg.width)
        if rect is None:
            continue
        region = (b, *rect)
        start = tuple(p[i][region] + _SHADOW_BIAS * n[i][region] for i in range(3))
        blocked[region] |= _intersect(row, start, sun) < rc.INF
    return blocked


def _pattern(
    g: np.ndarray, p: rc.Vec, n: rc.Vec, t: np.ndarray, batch: _Batch, hit: np.ndarray
) -> np.ndarray:
    """Texture weight in [0, 1] between albedo 1 and 2, faded to 0.5 where a texture cell spans
    under ~2 pixels (a cheap box-filter stand-in so distant checkers do not alias)."""
    tex, inv = g[TEX], g[INV_SCALE]
    rel = rc.sub(p, tuple(g[c] for c in range(ORIGIN.start, ORIGIN.stop)))
    q = tuple(c * inv for c in rc.to_local(rel, g[COS], g[SIN]))
    pattern = np.where(tex == 1, rc.checker(q), np.where(tex == 2, rc.stripes(q), 0.0))
    noisy = (tex == 3) & hit
    if noisy.any():
        pattern[noisy] = rc.value_noise(tuple(c[noisy] for c in q))
    # texture cells per pixel: z / fx metres per pixel, stretched at grazing angles
    d = batch.dirs
    cos_view = np.abs(rc.dot(n, d)) / np.sqrt(rc.dot(d, d))
    cells = t * inv / (batch.k[:, 0, 0, None, None] * np.maximum(cos_view, 0.1))
    w = np.clip(2.0 - 3.0 * cells, 0.0, 1.0)
    return np.where(tex > 0, pattern * w + 0.5 * (1.0 - w), 0.0).astype(np.float32)


def _ray_cast(scenes: Sequence[dict[str, Any]], cfg: SceneConfig) -> dict[str, np.ndarray]:
    """Ray cast scenes at cfg's resolution. Returns channel-first float32/bool/int32 arrays:
    image [3, B, H, W] in [0, 1] before noise, depth / valid_mask / instance [B, H, W], normals
    [3, B, H, W] (camera frame), intrinsics [B, 3, 3]."""
    batch = _setup(scenes, cfg)
    objects = _objects(batch, cfg)
    t, slot = _nearest(batch, objects)
    hit = np.isfinite(t)
    t = np.where(hit, t, 0.0)
    # the hit surface's parameter row per pixel: [F, B * C] taken at slot -> [F, B, H, W]
    num_b, num_c = batch.table.shape[:2]
    flat = slot + num_c * np.arange(num_b)[:, None, None]
    g = np.take(batch.table.reshape(num_b * num_c, -1).T, flat, axis=1)
    p = tuple(o + t * d for o, d in zip(batch.origin, batch.dirs, strict=True))
    n = _normals(batch, objects, g, p, slot)
    lam = np.maximum(rc.dot(n, batch.light), 0.0)
    if cfg.shadows:
        lam = np.where(_shadowed(batch, objects, p, n, cfg), 0.0, lam)
    env = [(_DEFAULT_LIGHT | s.get("light", {}), _DEFAULT_SKY | s.get("sky", {})) for s in scenes]
    light = np.array([[li["ambient"], li["diffuse"]] for li, _ in env], np.float32)[..., None, None]
    sky = np.array([[sk["zenith"], sk["horizon"]] for _, sk in env], np.float32)
    zenith, horizon = sky[:, 0].T[..., None, None], sky[:, 1].T[..., None, None]  # [3, B, 1, 1]
    albedo = g[ALB] + (g[ALB2] - g[ALB]) * _pattern(g, p, n, t, batch, hit)
    colour = albedo * (light[:, 0] + light[:, 1] * lam)
    fog = np.clip(t / cfg.max_range, 0.0, 1.0)  # aerial perspective, complete at max_range
    colour = colour + (horizon - colour) * (fog * fog)
    up = np.clip(2.0 * batch.dirs[1] / np.sqrt(rc.dot(batch.dirs, batch.dirs)), 0.0, 1.0)
    image = np.where(hit, colour, horizon + (zenith - horizon) * up)
    valid = hit & (t <= cfg.max_range)
    r = batch.rot[:, :, :, None, None]
    n_cam = [r[:, 0, j] * n[0] + r[:, 1, j] * n[1] + r[:, 2, j] * n[2] for j in range(3)]
    return {
        "image": np.clip(image, 0.0, 1.0),
        "depth": np.where(valid, t, 0.0).astype(np.float32),
        "valid_mask": valid,
        "normals": np.where(valid, np.stack(n_cam), 0.0).astype(np.float32),
        "instance": np.where(valid, g[INST], 0).astype(np.int32),
        "intrinsics": batch.k,
    }


def _to_sample(scene: dict[str, Any], out: dict[str, np.ndarray], b: int) -> dict[str, Any]:
    """Batch row b -> the numpy sample dict of `data/batch.py`, with seeded camera noise."""
    image = out["image"][:, b].transpose(1, 2, 0) * np.float32(255.0)
    std = scene["camera"].get("noise_std", 0.0)
    if std > 0:
        # its own stream (not the scene's), so noise never shifts the scene parameters
        rng = np.random.default_rng([scene.get("seed", 0), 1])
        image = image + np.float32(std) * rng.standard_normal(image.shape, dtype=np.float32)
    seed = scene.get("seed")
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "depth": out["depth"][b],
        "valid_mask": out["valid_mask"][b],
        "normals": np.ascontiguousarray(out["normals"][:, b].transpose(1, 2, 0)),
        "instance": out["instance"][b],
        "intrinsics": out["intrinsics"][b],
        "caption": caption_scene(scene),
        "scene": scene,
        "key": f"seed-{seed:09d}" if seed is not None else "scene",
    }


def render_scenes(scenes: Sequence[dict[str, Any]], cfg: SceneConfig) -> list[dict[str, Any]]:
    """Render scene dicts (sampled or hand-built) at cfg's resolution, one sample dict each.

    Scenes are ray cast together in chunks of about `cfg.chunk_pixels` pixels; every result is
    bit-identical to rendering that scene alone.
    """
    chunk = max(1, cfg.chunk_pixels // (cfg.height * cfg.width))
    samples = []
    with np.errstate(divide="ignore", invalid="ignore"):  # inf / nan mark misses on purpose
        for start in range(0, len(scenes), chunk):
            part = scenes[start : start + chunk]
            out = _ray_cast(part, cfg)
            samples += [_to_sample(s, out, b) for b, s in enumerate(part)]
    return samples


def render_scene_params(scene: dict[str, Any], cfg: SceneConfig) -> dict[str, Any]:
    """Render one scene dict (e.g. hand-built for an analytic test) to a sample dict.

    A hand-built scene needs `camera` (`position`, `yaw_deg`, `pitch_deg`, `fov_y_deg`) and may
    give `objects` (`shape`, `color`, centre `position`, full extents `size`), `walls` (`side`,
    `color`, `point`, `normal`, `height`), `floor`, `light`, `sky` and textures; see
    `scene_graph.sample_scene` for every key. Missing ones default to a plain gray floor, a
    clear sky, a fixed sun and no camera noise.
    """
    return render_scenes([scene], cfg)[0]


def render(seeds: int | Sequence[int], cfg: SceneConfig) -> list[dict[str, Any]]:
    """Sample and render one scene per seed.

    Returns:
        One sample per seed: `image` uint8 [H, W, 3], `depth` float32 [H, W] (metres, z along
        the optical axis, 0 where invalid), `valid_mask` bool [H, W], `normals` float32 [H, W, 3],
        `instance` int32 [H, W], `intrinsics` float32 [3, 3], `caption`, `scene`, `key`.
    """
    seeds = [seeds] if isinstance(seeds, int | np.integer) else list(seeds)
    return render_scenes([sample_scene(int(s), cfg) for s in seeds], cfg)


def render_split(split: str, start: int, num: int, cfg: SceneConfig) -> list[dict[str, Any]]:
    """Render samples `start .. start + num - 1` of a split (seeds from `splits.py`)."""
    return render(split_seeds(split, num, start), cfg)
