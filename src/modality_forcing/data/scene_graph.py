"""Scene graphs of the procedural world: seeded sampling, camera geometry and captions.

A scene is a JSON-able dict (camera, light, sky, floor, walls, objects); `procedural.py` ray casts
it. World frame: metres, right-handed, y up, floor at y = 0; a camera at yaw 0 looks along +z with
+x on its left. Camera frame: OpenCV (x right, y down, z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Named albedos in [0, 1]. Captions use exactly these names.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.10),
    "green": (0.16, 0.60, 0.20),
    "blue": (0.14, 0.30, 0.82),
    "yellow": (0.93, 0.82, 0.15),
    "orange": (0.95, 0.50, 0.10),
    "purple": (0.50, 0.20, 0.66),
    "white": (0.92, 0.92, 0.90),
    "gray": (0.50, 0.50, 0.50),
    "black": (0.07, 0.07, 0.07),
    "cyan": (0.15, 0.78, 0.82),
    "pink": (0.96, 0.56, 0.72),
    "brown": (0.50, 0.30, 0.14),
}
SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder")
TEXTURES: tuple[str, ...] = ("solid", "checker", "stripes", "noise")
TEXTURE_WORDS: dict[str, str] = {"checker": "checkered", "stripes": "striped", "noise": "speckled"}
# (zenith, horizon) sky colours; the horizon colour doubles as fog colour.
SKIES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.30, 0.52, 0.90), (0.75, 0.85, 0.95)),  # clear
    ((0.62, 0.64, 0.68), (0.85, 0.86, 0.88)),  # overcast
    ((0.35, 0.30, 0.55), (0.98, 0.66, 0.42)),  # dusk
    ((0.10, 0.12, 0.22), (0.35, 0.38, 0.48)),  # night-ish studio
)
WALL_SIDES: tuple[str, ...] = ("back", "left", "right")
# Instance ids: 0 sky / nothing valid, 1 floor, 2-4 back/left/right wall, 5 + i the i-th object.
INSTANCE_SKY = 0
INSTANCE_FLOOR = 1
INSTANCE_WALL = {"back": 2, "left": 3, "right": 4}
FIRST_OBJECT_INSTANCE = 5

CAPTION_VOCAB: list[str] = sorted(
    {"a", "an", "and", "on", "of", "in", "front", "behind", "left", "right", "with", "the"}
    | {"floor", "wall"}
    | set(PALETTE)
    | set(SHAPES)
    | set(TEXTURE_WORDS.values())
)


@dataclass
class SceneConfig:
    """How scenes are sampled and rendered. Angles in degrees, lengths in metres."""

    height: int = 64
    width: int = 64
    shadows: bool = True
    min_objects: int = 1
    max_objects: int = 6
    max_range: float = 30.0  # farther / no hit -> valid_mask False; also where fog saturates
    fov_y_range: tuple[float, float] = (45.0, 75.0)
    camera_height_range: tuple[float, float] = (0.8, 2.5)
    pitch_range: tuple[float, float] = (-30.0, -5.0)  # elevation of the optical axis (< 0: down)
    object_distance_range: tuple[float, float] = (2.5, 12.0)  # horizontal, camera to object
    back_wall_prob: float = 0.5
    side_wall_prob: float = 0.25  # each of left and right
    camera_noise_std: float = 2.0  # max std of Gaussian pixel noise, in 8-bit levels
    chunk_pixels: int = 1 << 16  # pixels ray cast per vectorised call; never changes results

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self}")
        if self.max_range <= 0:
            raise ValueError(f"max_range must be > 0, got {self.max_range}")


def camera_basis(camera: dict[str, Any]) -> np.ndarray:
    """Camera-to-world rotation (float64 [3, 3]); columns are the right, down, forward axes.

    `yaw_deg` turns the camera about the vertical axis, `pitch_deg` is the elevation of the optical
    axis (negative looks down). No roll.
    """
    yaw, pitch = math.radians(camera["yaw_deg"]), math.radians(camera["pitch_deg"])
    cos_p = math.cos(pitch)
    forward = np.array([cos_p * math.sin(yaw), math.sin(pitch), cos_p * math.cos(yaw)])
    right = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])  # forward x up, normalised
    down = np.cross(forward, right)  # OpenCV: right x down = forward
    return np.stack([right, down, forward], axis=1)


def intrinsics(fov_y_deg: float, height: int, width: int) -> np.ndarray:
    """Pinhole K (float32 [3, 3]): the vertical FOV sets fy, square pixels (fx = fy), pixel (u, v)
    spans [u, u + 1] so its centre is at u + 0.5 and the principal point is (W / 2, H / 2)."""
    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return np.array([[fy, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], dtype=np.float32)


def to_camera(camera: dict[str, Any], points: np.ndarray) -> np.ndarray:
    """World points [N, 3] -> camera-frame points [N, 3] (OpenCV axes)."""
    rel = np.asarray(points, float) - np.asarray(camera["position"], float)
    return rel @ camera_basis(camera)  # row-vector form of R^T (p - o)


def _sample_camera(rng: np.random.Generator, cfg: SceneConfig) -> dict[str, Any]:
    return {
        "position": [0.0, float(rng.uniform(*cfg.camera_height_range)), 0.0],
        "yaw_deg": float(rng.uniform(-180.0, 180.0)),
        "pitch_deg": float(rng.uniform(*cfg.pitch_range)),
        "fov_y_deg": float(rng.uniform(*cfg.fov_y_range)),
        "noise_std": float(rng.uniform(0.0, cfg.camera_noise_std)),
    }


def _sample_size(rng: np.random.Generator, shape: str) -> list[float]:
    """Full extents [x, y, z] in the object's frame; footprint radius follows from them."""
    if shape == "sphere":
        return [float(2 * rng.uniform(0.3, 0.9))] * 3
    if shape == "cylinder":
        diameter = float(2 * rng.uniform(0.2, 0.6))
        return [diameter, float(rng.uniform(0.4, 1.8)), diameter]
    return [float(v) for v in rng.uniform([0.4, 0.3, 0.4], [1.4, 1.5, 1.4])]


def footprint(obj: dict[str, Any]) -> float:
    """Radius of the circle that bounds an object's footprint on the floor."""
    sx, _, sz = obj["size"]
    return 0.5 * math.hypot(sx, sz) if obj["shape"] == "box" else 0.5 * sx


def _surface(rng: np.random.Generator, lo: float, hi: float) -> dict[str, Any]:
    """Colour, texture and texture frame shared by floors, walls and objects."""
    scale = float(rng.uniform(lo, hi))
    return {
        "color": str(rng.choice(list(PALETTE))),
        "texture": str(rng.choice(TEXTURES)),
        "texture_scale": scale,
        "texture_offset": [float(v) for v in rng.uniform(0.0, scale, size=3)],
    }


def _sample_objects(
    rng: np.random.Generator, cfg: SceneConfig, camera: dict[str, Any]
) -> list[dict[str, Any]]:
    """Objects resting on the floor where the camera sees them, footprints not overlapping.

    Positions come from rays through the central image region (vertical FOV only, narrowed for
    portrait images) so the same seed gives the same scene at every landscape resolution.
    """
    basis, origin = camera_basis(camera), np.asarray(camera["position"])
    tan_half = math.tan(math.radians(camera["fov_y_deg"]) / 2)
    half_x = 0.75 * tan_half * min(1.0, cfg.width / cfg.height)
    num = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    objects: list[dict[str, Any]] = []
    for _ in range(num):
        shape = str(rng.choice(SHAPES))
        obj = {"shape": shape, "size": _sample_size(rng, shape), **_surface(rng, 0.1, 0.4)}
        obj["yaw_deg"] = float(rng.uniform(0.0, 360.0))
        # rejection sampling: insist while below min_objects, else give up and place fewer
        for _try in range(100 if len(objects) >= cfg.min_objects else 10_000):
            xn, yn = rng.uniform(-half_x, half_x), rng.uniform(-0.9 * tan_half, 0.9 * tan_half)
            ray = basis @ np.array([xn, yn, 1.0])
            if ray[1] > -1e-3:
                continue
            ground = origin - origin[1] / ray[1] * ray
            dist = math.hypot(ground[0] - origin[0], ground[2] - origin[2])
            lo, hi = cfg.object_distance_range
            if not lo + footprint(obj) <= dist <= hi:
                continue
            if all(
                math.hypot(ground[0] - o["position"][0], ground[2] - o["position"][2])
                > footprint(obj) + footprint(o) + 0.05
                for o in objects
            ):
                obj["position"] = [float(ground[0]), obj["size"][1] / 2, float(ground[2])]
                objects.append(obj)
                break
    return objects


def _sample_walls(
    rng: np.random.Generator, cfg: SceneConfig, camera: dict[str, Any], objects: list[dict]
) -> list[dict[str, Any]]:
    """Optional back wall (facing the camera) and side walls, all beyond every object."""
    right, _, _ = camera_basis(camera).T
    forward = np.array([right[2], 0.0, -right[0]])  # horizontal heading
    origin = np.asarray(camera["position"]) * np.array([1.0, 0.0, 1.0])
    outward = {"back": forward, "left": -right, "right": right}
    minimum = {"back": 4.0, "left": 2.0, "right": 2.0}
    # how far each wall must stay from the camera to leave every object in front of it
    reach = {
        side: max(
            [float(axis @ (np.asarray(o["position"]) - origin)) + footprint(o) for o in objects]
            + [minimum[side]]
        )
        for side, axis in outward.items()
    }
    walls = []
    for side in WALL_SIDES:
        prob = cfg.back_wall_prob if side == "back" else cfg.side_wall_prob
        present = rng.uniform() < prob
        dist = reach[side] + float(rng.uniform(1.0, 4.0))
        surface = {**_surface(rng, 0.3, 1.5), "height": float(rng.uniform(2.5, 6.0))}
        if present:
            point = origin + dist * outward[side]
            walls.append(
                {"side": side, "point": point.tolist(), "normal": (-outward[side]).tolist()}
                | surface
            )
    return walls


def sample_scene(seed: int, cfg: SceneConfig) -> dict[str, Any]:
    """Sample the JSON-able parameters of one scene from `numpy.random.default_rng(seed)`.

    Returns:
        dict with `seed`, `camera` (position, yaw/pitch/vertical FOV in degrees, pixel noise std),
        `light` (direction to a sun by elevation/azimuth, ambient and diffuse strength), `sky`
        (zenith and horizon RGB), `floor`, `walls` and `objects` (shape, centre `position`, full
        extents `size`, `yaw_deg`, colour name, texture and its frame, `instance` id).
    """
    rng = np.random.default_rng(seed)
    camera = _sample_camera(rng, cfg)
    light = {
        "elevation_deg": float(rng.uniform(25.0, 70.0)),
        "azimuth_deg": float(rng.uniform(0.0, 360.0)),
        "ambient": float(rng.uniform(0.25, 0.45)),
        "diffuse": float(rng.uniform(0.6, 0.85)),
    }
    zenith, horizon = SKIES[int(rng.integers(len(SKIES)))]
    floor = {**_surface(rng, 0.4, 1.5), "yaw_deg": float(rng.uniform(0.0, 90.0))}
    objects = _sample_objects(rng, cfg, camera)
    for i, obj in enumerate(objects):
        obj["instance"] = FIRST_OBJECT_INSTANCE + i
    walls = _sample_walls(rng, cfg, camera, objects)
    return {
        "seed": int(seed),
        "camera": camera,
        "light": light,
        "sky": {"zenith": list(zenith), "horizon": list(horizon)},
        "floor": floor,
        "walls": walls,
        "objects": objects,
    }


def _phrase(color: str, texture: str, noun: str) -> str:
    words = [color, TEXTURE_WORDS.get(texture, ""), noun]
    words = [w for w in words if w]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def relation(a_cam: np.ndarray, b_cam: np.ndarray) -> str:
    """Where camera-frame point `a` is relative to `b`, as seen from the camera."""
    dx, dz = a_cam[0] - b_cam[0], a_cam[2] - b_cam[2]
    # lateral offsets are judged generously: depth differences look compressed in an image
    if abs(dx) >= 0.5 * abs(dz):
        return "left of" if dx < 0 else "right of"
    return "in front of" if dz < 0 else "behind"


def caption_scene(scene: dict[str, Any]) -> str:
    """One sentence naming every object (colour, texture, shape), pairwise spatial relations,
    the floor and the walls, e.g. "a red sphere left of a blue striped box on a gray checkered
    floor in front of a white wall". Words come from `CAPTION_VOCAB` only."""
    objects = scene.get("objects", [])
    names = [_phrase(o["color"], o.get("texture", "solid"), o["shape"]) for o in objects]
    centres = to_camera(scene["camera"], [o["position"] for o in objects]) if objects else []
    clauses = []
    for i in range(0, len(objects), 2):  # pair objects in scene order: "A rel B"
        if i + 1 < len(objects):
            rel = relation(centres[i], centres[i + 1])
            clauses.append(f"{names[i]} {rel} {names[i + 1]}")
        else:
            clauses.append(names[i])
    floor = scene.get("floor", {"color": "gray"})
    floor_phrase = _phrase(floor["color"], floor.get("texture", "solid"), "floor")
    parts = [" and ".join(clauses), "on " + floor_phrase] if clauses else [floor_phrase]
    walls = {
        w["side"]: _phrase(w["color"], w.get("texture", "solid"), "wall")
        for w in scene.get("walls", [])
    }
    if "back" in walls:
        parts.append("in front of " + walls["back"])
    sides = [f"{walls[s]} on the {s}" for s in ("left", "right") if s in walls]
    if sides:
        parts.append("with " + " and ".join(sides))
    return " ".join(parts)
