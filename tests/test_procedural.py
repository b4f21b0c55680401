"""The procedural RGB-D world: splits, determinism, closed-form geometry, captions, intrinsics."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from modality_forcing.data import raycast
from modality_forcing.data.procedural import (
    CAPTION_VOCAB,
    SceneConfig,
    render,
    render_scene_params,
    render_split,
    sample_scene,
)
from modality_forcing.data.scene_graph import (
    FIRST_OBJECT_INSTANCE,
    INSTANCE_FLOOR,
    TEXTURE_WORDS,
    camera_basis,
    caption_scene,
)
from modality_forcing.data.splits import SPLIT_RANGES, seed_split, split_seed, split_seeds

ARRAYS = ("image", "depth", "valid_mask", "normals", "instance", "intrinsics")


def _scene(camera: dict, objects: list | None = None, **extra) -> dict:
    """A hand-built scene: plain gray floor, overhead-ish sun, no noise, no walls."""
    return {
        "camera": {"noise_std": 0.0, **camera},
        "light": {"elevation_deg": 60.0, "azimuth_deg": 30.0, "ambient": 0.3, "diffuse": 0.7},
        "sky": {"zenith": [0.3, 0.5, 0.9], "horizon": [0.8, 0.8, 0.9]},
        "floor": {"color": "gray"},
        "walls": [],
        "objects": objects or [],
        **extra,
    }


def _assert_same(a: dict, b: dict) -> None:
    for key in ARRAYS:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert a["caption"] == b["caption"] and a["key"] == b["key"]


# ------------------------------------------------------------------------------------ splits


def test_splits_are_disjoint_and_checked() -> None:
    ranges = sorted(SPLIT_RANGES.values())
    for (first, size), (next_first, _) in itertools.pairwise(ranges):
        assert first + size <= next_first
    assert split_seeds("val", 3, start=2) == [split_seed("val", i) for i in (2, 3, 4)]
    assert {seed_split(split_seed(s, 7)) for s in SPLIT_RANGES} == set(SPLIT_RANGES)
    last = SPLIT_RANGES["test"][1] - 1
    assert seed_split(split_seed("test", last)) == "test"
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*train"):
        split_seed("dev", 0)
    with pytest.raises(ValueError, match="out of range"):
        split_seed("train", SPLIT_RANGES["train"][1])
    with pytest.raises(ValueError, match="out of range"):
        split_seed("val", -1)
    with pytest.raises(ValueError, match="out of range"):
        split_seeds("test", 2, start=last)


def test_render_split_uses_split_seeds() -> None:
    cfg = SceneConfig(height=16, width=24)
    samples = render_split("val", 5, 2, cfg)
    assert [s["key"] for s in samples] == [f"seed-{split_seed('val', i):09d}" for i in (5, 6)]


# ------------------------------------------------------------------------------ sample format


def test_sample_format_nonsquare() -> None:
    cfg = SceneConfig(height=40, width=56)
    (s,) = render(7, cfg)
    h, w = 40, 56
    expected = {
        "image": (np.uint8, (h, w, 3)),
        "depth": (np.float32, (h, w)),
        "valid_mask": (np.bool_, (h, w)),
        "normals": (np.float32, (h, w, 3)),
        "instance": (np.int32, (h, w)),
        "intrinsics": (np.float32, (3, 3)),
    }
    for key, (dtype, shape) in expected.items():
        assert s[key].dtype == dtype and s[key].shape == shape, key
    assert s["key"] == "seed-000000007" and isinstance(s["caption"], str)
    assert json.loads(json.dumps(s["scene"])) == s["scene"]


def test_pixel_invariants_over_many_scenes() -> None:
    cfg = SceneConfig(height=24, width=32)
    for s in render(range(40), cfg):
        valid, depth, inst = s["valid_mask"], s["depth"], s["instance"]
        assert np.all(depth[~valid] == 0) and np.all(inst[~valid] == 0)
        assert np.all(s["normals"][~valid] == 0)
        assert np.all((depth[valid] > 0) & (depth[valid] <= cfg.max_range))
        assert np.all(inst[valid] >= INSTANCE_FLOOR)
        assert np.allclose(np.linalg.norm(s["normals"][valid], axis=-1), 1.0, atol=1e-5)
        # every normal faces the camera: n . ray < 0 for the camera-frame ray (x, y, 1)
        k = s["intrinsics"]
        v, u = np.nonzero(valid)
        ray = np.stack([(u + 0.5 - k[0, 2]) / k[0, 0], (v + 0.5 - k[1, 2]) / k[1, 1], 1 + 0 * u])
        assert np.all(np.einsum("nc,cn->n", s["normals"][valid], ray) < 1e-4)


def test_scenes_are_plausible() -> None:
    cfg = SceneConfig()
    for seed in range(60):
        scene = sample_scene(seed, cfg)
        objs = scene["objects"]
        assert cfg.min_objects <= len(objs) <= cfg.max_objects
        fov = scene["camera"]["fov_y_deg"]
        assert cfg.fov_y_range[0] <= fov <= cfg.fov_y_range[1]
        for i, a in enumerate(objs):
            assert math.isclose(a["position"][1], a["size"][1] / 2)  # resting on the floor
            for b in objs[i + 1 :]:
                gap = math.dist(a["position"][::2], b["position"][::2])
                assert gap > max(a["size"][0], a["size"][2]) / 2  # footprints apart


# -------------------------------------------------------------------------------- determinism


def test_same_seed_bit_identical_alone_or_batched() -> None:
    cfg = SceneConfig(height=32, width=48)
    seeds = [3, 17, 123, 4321, 900_000_001]
    batched = render(seeds, cfg)
    alone = [render(s, SceneConfig(height=32, width=48, chunk_pixels=1))[0] for s in seeds]
    for a, b in zip(batched, alone, strict=True):
        _assert_same(a, b)
    _assert_same(render(seeds[::-1], cfg)[-1], batched[0])  # position in the batch is irrelevant
    assert not np.array_equal(batched[0]["image"], batched[1]["image"])


def test_screen_space_culling_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SceneConfig(height=24, width=40)
    culled = render(range(60), cfg)
    monkeypatch.setattr(raycast, "pixel_rect", lambda bounds, h, w: (slice(0, h), slice(0, w)))
    for a, b in zip(culled, render(range(60), cfg), strict=True):
        _assert_same(a, b)


# ------------------------------------------------------------------------- analytic geometry


def test_floor_depth_closed_form() -> None:
    h, pitch, fov = 1.5, -20.0, 60.0
    cfg = SceneConfig(height=30, width=44, max_range=1e4)
    camera = {"position": [2, h, -1], "yaw_deg": 35, "pitch_deg": pitch, "fov_y_deg": fov}
    s = render_scene_params(_scene(camera), cfg)
    fy = 0.5 * cfg.height / math.tan(math.radians(fov / 2))
    yn = (np.arange(cfg.height) + 0.5 - cfg.height / 2) / fy  # [H]
    down = math.radians(-pitch)
    denom = math.cos(down) * yn + math.sin(down)  # > 0: the row's rays reach the floor
    z = np.where(denom > 0, h / np.where(denom > 0, denom, 1), 0.0)
    assert np.array_equal(s["valid_mask"], np.broadcast_to((denom > 0)[:, None], s["depth"].shape))
    valid = s["valid_mask"]
    expected = np.broadcast_to(z[:, None], s["depth"].shape)
    np.testing.assert_allclose(s["depth"][valid], expected[valid], rtol=1e-4)
    assert np.all(np.diff(s["depth"][valid.all(axis=1)], axis=0) < 0)  # nearer toward the bottom
    assert np.all(s["instance"][valid] == INSTANCE_FLOOR) and np.all(s["instance"][~valid] == 0)
    n_floor = [0.0, -math.cos(math.radians(pitch)), math.sin(math.radians(pitch))]
    np.testing.assert_allclose(
        s["normals"][valid], np.broadcast_to(n_floor, (valid.sum(), 3)), atol=1e-5
    )


def test_max_range_cuts_the_far_floor() -> None:
    camera = {"position": [0, 1.5, 0], "yaw_deg": 0, "pitch_deg": -10, "fov_y_deg": 60}
    s = render_scene_params(_scene(camera), SceneConfig(height=40, width=40, max_range=8.0))
    rows = s["valid_mask"].all(axis=1)
    assert rows.any() and not rows.all() and s["depth"].max() <= 8.0


def _on_axis(distance: float, height: float, centre_y: float) -> tuple[dict, list[float]]:
    """A camera whose optical axis meets height centre_y at `distance`; returns it and the point."""
    pitch = math.degrees(math.asin((centre_y - height) / distance))
    camera = {"position": [0.5, height, 0.3], "yaw_deg": 20.0, "pitch_deg": pitch, "fov_y_deg": 50}
    forward = camera_basis(camera)[:, 2]
    return camera, (np.asarray(camera["position"]) + distance * forward).tolist()


def test_sphere_on_axis_depth() -> None:
    distance, radius = 6.0, 0.5
    camera, centre = _on_axis(distance, 2.0, radius)  # resting on the floor
    ball = {"shape": "sphere", "color": "red", "position": centre, "size": [2 * radius] * 3}
    s = render_scene_params(_scene(camera, [ball]), SceneConfig(height=65, width=81))
    c = (32, 40)  # the pixel whose centre lies on the optical axis
    assert s["instance"][c] == FIRST_OBJECT_INSTANCE
    assert math.isclose(s["depth"][c], distance - radius, rel_tol=1e-4)
    mine = s["instance"] == FIRST_OBJECT_INSTANCE
    nearest = np.unravel_index(np.argmin(np.where(mine, s["depth"], np.inf)), mine.shape)
    assert max(abs(nearest[0] - c[0]), abs(nearest[1] - c[1])) <= 1
    np.testing.assert_allclose(s["normals"][c], [0, 0, -1], atol=1e-3)


def test_cylinder_on_axis_depth() -> None:
    # the axis ray meets the side wall r / cos(pitch) before the vertical axis
    distance, radius, tall = 6.0, 0.4, 1.6
    camera, centre = _on_axis(distance, 2.0, tall / 2)
    obj = {
        "shape": "cylinder",
        "color": "red",
        "position": centre,
        "size": [2 * radius, tall, 2 * radius],
    }
    s = render_scene_params(_scene(camera, [obj]), SceneConfig(height=65, width=81))
    c, pitch = (32, 40), math.radians(camera["pitch_deg"])
    assert math.isclose(s["depth"][c], distance - radius / math.cos(pitch), rel_tol=1e-4)
    basis = camera_basis(camera)
    radial = -basis[:, 2] * np.array([1, 0, 1]) / math.cos(pitch)  # horizontal, toward camera
    np.testing.assert_allclose(s["normals"][c], radial @ basis, atol=1e-4)


def test_box_front_face_is_planar_depth() -> None:
    # camera level with the box centre looking straight at its front face (yaw 0, pitch 0)
    camera = {"position": [0.0, 0.5, 0.0], "yaw_deg": 0.0, "pitch_deg": 0.0, "fov_y_deg": 60}
    box = {"shape": "box", "color": "blue", "position": [0.0, 0.5, 5.0], "size": [2.0, 1.0, 1.0]}
    s = render_scene_params(_scene(camera, [box]), SceneConfig(height=33, width=47))
    face = s["instance"] == FIRST_OBJECT_INSTANCE
    assert face.sum() > 20
    # z-depth of a fronto-parallel face is constant (the Euclidean range is not)
    np.testing.assert_allclose(s["depth"][face], 4.5, rtol=1e-5)
    np.testing.assert_allclose(
        s["normals"][face], np.broadcast_to([0, 0, -1], (face.sum(), 3)), atol=1e-5
    )


def test_backprojection_matches_world_geometry() -> None:
    """Unproject with the returned intrinsics and depth (non-square): floor pixels land on y = 0,
    sphere pixels on the sphere's surface."""
    cfg = SceneConfig(height=36, width=70)
    for s in render(range(20), cfg):
        k, cam = s["intrinsics"], s["scene"]["camera"]
        v, u = np.nonzero(s["valid_mask"])
        z = s["depth"][v, u].astype(float)
        pts = np.stack([(u + 0.5 - k[0, 2]) / k[0, 0] * z, (v + 0.5 - k[1, 2]) / k[1, 1] * z, z])
        world = (camera_basis(cam) @ pts).T + cam["position"]
        inst = s["instance"][v, u]
        assert np.all(np.abs(world[inst == INSTANCE_FLOOR, 1]) < 1e-3 * (1 + z[inst == 1]))
        for i, obj in enumerate(s["scene"]["objects"]):
            if obj["shape"] == "sphere":
                on = world[inst == FIRST_OBJECT_INSTANCE + i]
                dist = np.linalg.norm(on - obj["position"], axis=1)
                np.testing.assert_allclose(dist, obj["size"][0] / 2, rtol=1e-3)


def test_intrinsics_follow_vertical_fov() -> None:
    for h, w in ((48, 64), (64, 48), (31, 97)):
        (s,) = render(11, SceneConfig(height=h, width=w))
        fov = math.radians(s["scene"]["camera"]["fov_y_deg"])
        k = s["intrinsics"]
        assert math.isclose(k[1, 1], h / 2 / math.tan(fov / 2), rel_tol=1e-6)
        assert k[0, 0] == k[1, 1] and k[0, 2] == w / 2 and k[1, 2] == h / 2
        assert k[2].tolist() == [0, 0, 1] and k[0, 1] == k[1, 0] == 0


def test_shadows_only_darken_the_floor_behind_objects() -> None:
    camera = {"position": [0.0, 3.0, 0.0], "yaw_deg": 0.0, "pitch_deg": -30.0, "fov_y_deg": 60}
    sphere = {"shape": "sphere", "color": "white", "position": [0.0, 0.6, 5.0], "size": [1.2] * 3}
    scene = _scene(camera, [sphere])
    # sun toward world +x, which is image left (camera_basis): the shadow falls to the right
    scene["light"] = {"elevation_deg": 35.0, "azimuth_deg": 90.0}
    lit = render_scene_params(scene, SceneConfig(height=48, width=48, shadows=False))
    shaded = render_scene_params(scene, SceneConfig(height=48, width=48))
    darker = shaded["image"].astype(int).sum(-1) < lit["image"].astype(int).sum(-1)
    assert np.all(shaded["image"] <= lit["image"]) and darker.sum() > 10
    assert np.all(shaded["instance"][darker] == INSTANCE_FLOOR)
    cols = np.nonzero(darker)[1]
    sphere_cols = np.nonzero(shaded["instance"] == FIRST_OBJECT_INSTANCE)[1]
    assert cols.mean() > sphere_cols.mean() + 3


# ----------------------------------------------------------------------------------- captions


def test_caption_names_every_object_in_a_fixed_vocabulary() -> None:
    cfg = SceneConfig()
    vocab = set(CAPTION_VOCAB)
    for seed in range(200):
        scene = sample_scene(seed, cfg)
        caption = caption_scene(scene)
        assert set(caption.split()) <= vocab, caption
        for obj in scene["objects"]:
            words = [obj["color"], TEXTURE_WORDS.get(obj["texture"]), obj["shape"]]
            phrase = " ".join(w for w in words if w)
            same = sum(o == obj for o in scene["objects"])
            assert caption.count(phrase) >= same, (phrase, caption)


@pytest.mark.parametrize(("offset", "relation"), [
    ((-2.0, 0.0), "left of"),
    ((2.0, 0.0), "right of"),
    ((0.0, -3.0), "in front of"),
    ((0.0, 3.0), "behind"),
])  # fmt: skip
def test_caption_spatial_relations(offset: tuple[float, float], relation: str) -> None:
    camera = {"position": [0.0, 1.5, 0.0], "yaw_deg": 0.0, "pitch_deg": -15.0, "fov_y_deg": 60}
    # yaw 0 looks along +z; image right is world -x (camera_basis), so flip x for "left of"
    a = {"shape": "sphere", "color": "red", "position": [-offset[0], 0.5, 8 + offset[1]]}
    b = {"shape": "box", "color": "blue", "texture": "stripes", "position": [0, 0.5, 8]}
    a["size"] = b["size"] = [1, 1, 1]
    scene = _scene(camera, [a, b])
    scene["floor"] = {"color": "gray", "texture": "checker"}
    scene["walls"] = [{"side": "back", "color": "gray", "point": [0, 0, 15], "normal": [0, 0, -1]}]
    expected = f"a red sphere {relation} a blue striped box on a gray checkered floor"
    assert caption_scene(scene) == expected + " in front of a gray wall"
