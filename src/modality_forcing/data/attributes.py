"""What a caption of the procedural world says, as labels: the targets of the attribute probe
(`metrics/probe.py`) and the reference colours of the region-colour score (`metrics/fidelity.py`).

Attributes of a scene: floor colour, back-wall colour (or none), object count, the set of object
colours and the set of object shapes, all named in its caption (`scene_graph.caption_scene`).
Region references: each visible region (floor, walls, objects; by instance id) re-rendered with
every palette colour, so a generated region's mean colour can be matched to colour *names* under
the scene's own lighting, texture and fog.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .procedural import render_scenes
from .scene_graph import (
    FIRST_OBJECT_INSTANCE,
    INSTANCE_FLOOR,
    INSTANCE_WALL,
    PALETTE,
    SHAPES,
    SceneConfig,
)

COLOURS: tuple[str, ...] = tuple(PALETTE)
MAX_OBJECTS = 6  # `SceneConfig.max_objects`: count classes are 1..MAX_OBJECTS
# Sizes of the probe's heads: single-label (softmax) and multi-label (sigmoid) attributes.
SINGLE = {"floor": len(COLOURS), "wall": len(COLOURS) + 1, "count": MAX_OBJECTS}
MULTI = {"colours": len(COLOURS), "shapes": len(SHAPES)}
ATTRIBUTES = (*SINGLE, *MULTI)


def scene_attributes(scene: dict[str, Any]) -> dict[str, np.ndarray]:
    """Labels of one scene.

    Returns:
        `floor` int (palette index), `wall` int (0: no back wall, else 1 + palette index),
        `count` int (objects - 1), `colours` float32 [12] and `shapes` float32 [3] (multi-hot).
    """
    objects = scene.get("objects", [])
    back = [w for w in scene.get("walls", []) if w["side"] == "back"]
    colours = np.zeros(len(COLOURS), np.float32)
    shapes = np.zeros(len(SHAPES), np.float32)
    for obj in objects:
        colours[COLOURS.index(obj["color"])] = 1.0
        shapes[SHAPES.index(obj["shape"])] = 1.0
    return {
        "floor": np.int64(COLOURS.index(scene.get("floor", {"color": "gray"})["color"])),
        "wall": np.int64(1 + COLOURS.index(back[0]["color"]) if back else 0),
        "count": np.int64(min(max(len(objects), 1), MAX_OBJECTS) - 1),
        "colours": colours,
        "shapes": shapes,
    }


def stack_attributes(scenes: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """`scene_attributes` of many scenes, stacked: ints [N], multi-hots [N, K]."""
    rows = [scene_attributes(s) for s in scenes]
    return {k: np.stack([r[k] for r in rows]) for k in ATTRIBUTES}


def region_colours(scene: dict[str, Any]) -> dict[int, str]:
    """Instance id -> the colour name the caption gives that surface (floor, walls, objects)."""
    names = {INSTANCE_FLOOR: scene.get("floor", {"color": "gray"})["color"]}
    for wall in scene.get("walls", []):
        names[INSTANCE_WALL[wall["side"]]] = wall["color"]
    for i, obj in enumerate(scene.get("objects", [])):
        names[obj.get("instance", FIRST_OBJECT_INSTANCE + i)] = obj["color"]
    return names


def _recoloured(scene: dict[str, Any], instance: int, colour: str) -> dict[str, Any]:
    out = copy.deepcopy(scene)
    if instance == INSTANCE_FLOOR:
        out.setdefault("floor", {"color": "gray"})["color"] = colour
    for wall in out.get("walls", []):
        if INSTANCE_WALL[wall["side"]] == instance:
            wall["color"] = colour
    for i, obj in enumerate(out.get("objects", [])):
        if obj.get("instance", FIRST_OBJECT_INSTANCE + i) == instance:
            obj["color"] = colour
    return out


def palette_references(
    sample: dict[str, Any], cfg: SceneConfig, min_pixels: int = 4
) -> dict[int, np.ndarray]:
    """Mean rendered colour of each visible region under every palette colour.

    Args:
        sample: a rendered procedural sample (`scene`, `instance` [H, W]).
        cfg: the render settings it was made with (size, shadows).
        min_pixels: regions with fewer visible pixels are left out (too small to judge).

    Returns:
        instance id -> float32 [len(COLOURS), 3] mean RGB in [0, 1] over that region's pixels
        when the region is painted each palette colour (nothing else changes).
    """
    instance = np.asarray(sample["instance"])
    ids = [i for i in region_colours(sample["scene"]) if (instance == i).sum() >= min_pixels]
    variants = [_recoloured(sample["scene"], i, c) for i in ids for c in COLOURS]
    renders = render_scenes(variants, cfg) if variants else []
    refs = {}
    for k, i in enumerate(ids):
        mask = instance == i
        block = renders[k * len(COLOURS) : (k + 1) * len(COLOURS)]
        refs[i] = np.stack([r["image"][mask].mean(0) / 255.0 for r in block]).astype(np.float32)
    return refs
