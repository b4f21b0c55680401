"""Export: colour maps, 16-bit depth PNG round trip, back-projection, point clouds, gallery."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modality_forcing.inference.export import (
    colorize_depth,
    colorize_disparity,
    colorize_uncertainty,
    depth_edge_mask,
    depth_to_points,
    intrinsics_from_fov,
    load_depth_png16,
    save_depth_png16,
    save_point_cloud,
    save_result,
)
from modality_forcing.inference.gallery import write_gallery

pytest.importorskip("scipy")


def _scene(h: int = 12, w: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth depth ramp (no edges at rtol 0.04), a few invalid pixels, random RGB, a mask."""
    rng = np.random.default_rng(0)
    depth = np.linspace(2.0, 2.3, h * w, dtype=np.float32).reshape(h, w)
    depth[0, 0], depth[1, 1], depth[2, 2] = 0.0, np.nan, np.inf
    valid = np.ones((h, w), bool)
    valid[-1, -1] = False
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return depth, rgb, valid


def test_depth_png16_round_trip_within_quantisation(tmp_path: Path) -> None:
    depth, _, valid = _scene()
    depth[4:6] *= 7.3  # an uneven range, not a multiple of the code step
    lo, hi = save_depth_png16(tmp_path / "d.png", depth, valid)
    with Image.open(tmp_path / "d.png") as img:
        assert np.asarray(img).dtype == np.uint16
    back, back_valid = load_depth_png16(tmp_path / "d.png", (lo, hi))
    expect_valid = valid & np.isfinite(depth) & (depth > 0)
    assert np.array_equal(back_valid, expect_valid)
    assert np.all(back[~expect_valid] == 0)
    assert lo == pytest.approx(depth[expect_valid].min()) and hi == pytest.approx(
        depth[expect_valid].max()
    )
    err = np.abs(back[expect_valid] - depth[expect_valid])
    assert err.max() <= (hi - lo) / 65534 / 2 + 1e-6 * hi


def test_depth_png16_degenerate_cases(tmp_path: Path) -> None:
    const = np.full((3, 4), 2.5, np.float32)
    const[0, 0] = 0
    rng = save_depth_png16(tmp_path / "c.png", const)
    assert rng == (2.5, 2.5)
    back, valid = load_depth_png16(tmp_path / "c.png", rng)
    assert valid.sum() == 11 and np.all(back[valid] == 2.5) and back[0, 0] == 0
    empty = np.full((3, 4), np.nan, np.float32)
    rng = save_depth_png16(tmp_path / "e.png", empty)
    back, valid = load_depth_png16(tmp_path / "e.png", rng)
    assert not valid.any() and np.all(back == 0)


def test_colour_maps_shapes_near_red_and_invalid_black() -> None:
    depth, _, valid = _scene()
    for img in (
        colorize_depth(depth, valid),
        colorize_disparity(depth, valid),
        colorize_uncertainty(depth, valid),
    ):
        assert img.shape == (*depth.shape, 3) and img.dtype == np.uint8
        assert np.all(img[-1, -1] == 0)  # masked pixel
    spectral = colorize_depth(depth, valid).astype(int)
    near, far = spectral[0, 5], spectral[-2, -2]  # near and far end of the ramp
    assert near[0] > far[0] + 50 and far[2] > near[2] + 50  # Spectral: dark red -> blue
    assert np.all(spectral[0, 0] == 0) and np.all(spectral[1, 1] == 0)  # zero and NaN depth
    magma = colorize_disparity(depth, valid).astype(int)
    assert magma[0, 5].sum() > magma[-2, -2].sum() + 200  # near = bright in disparity
    assert np.all(colorize_depth(np.zeros((2, 3))) == 0)


def test_uncertainty_colours_increase_and_mask() -> None:
    unc = np.tile(np.linspace(0.0, 1.0, 10, dtype=np.float32), (4, 1))
    unc[0, 0] = np.nan
    img = colorize_uncertainty(unc).astype(int)
    assert np.all(img[0, 0] == 0)
    # viridis goes dark purple -> yellow: green rises with uncertainty.
    assert img[1, -1, 1] > img[1, 1, 1] + 100


def test_intrinsics_non_square() -> None:
    k = intrinsics_from_fov(48, 64, 60.0)
    f = 24 / math.tan(math.radians(30))
    assert k.shape == (3, 3)
    np.testing.assert_allclose(k, [[f, 0, 32], [0, f, 24], [0, 0, 1]])
    kh = intrinsics_from_fov(48, 64, 60.0, axis="horizontal")
    assert kh[0, 0] == pytest.approx(32 / math.tan(math.radians(30))) and kh[0, 0] == kh[1, 1]
    with pytest.raises(ValueError, match="choose from"):
        intrinsics_from_fov(48, 64, 60.0, axis="diagonal")


def test_backprojection_of_a_plane() -> None:
    h, w, z = 4, 6, 2.0
    depth = np.full((h, w), z, np.float32)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    k = intrinsics_from_fov(h, w, 60.0)
    pts, cols = depth_to_points(depth, rgb, k, center=False)
    assert pts.shape == (h * w, 3) and pts.dtype == np.float32 and cols.dtype == np.uint8
    np.testing.assert_allclose(pts[:, 2], -z)
    np.testing.assert_allclose(pts[:, :2].mean(0), 0, atol=1e-6)  # cx, cy at the centre
    f = k[0, 0]
    # Top-left pixel: left of centre (x < 0) and above it (+Y up after the y flip).
    np.testing.assert_allclose(pts[0], [(0.5 - 3) * z / f, (2 - 0.5) * z / f, -z], rtol=1e-5)
    assert tuple(cols[0]) == (255, 0, 0)
    centred, _ = depth_to_points(depth, rgb, k)
    np.testing.assert_allclose(np.median(centred, 0), 0, atol=1e-6)
    np.testing.assert_allclose(centred - centred[0], pts - pts[0], atol=1e-6)
    with pytest.raises(ValueError, match="rgb shape"):
        depth_to_points(depth, rgb[:, :-1], k)


def test_edge_mask_flags_step_and_drops_points() -> None:
    depth = np.ones((6, 8), np.float32)
    depth[:, 4:] = 2.0
    edge = depth_edge_mask(depth)
    assert edge[:, 3:5].all() and not edge[:, :3].any() and not edge[:, 5:].any()
    rgb = np.zeros((6, 8, 3), np.uint8)
    k = intrinsics_from_fov(6, 8, 60.0)
    pts, _ = depth_to_points(depth, rgb, k, center=False)
    assert len(pts) == 6 * 8 - edge.sum()
    assert not np.any(np.isclose(pts[:, 0], (3.5 - 4) * 1.0 / k[0, 0]))  # column 3 is gone
    assert len(depth_to_points(depth, rgb, k, edge_rtol=0)[0]) == 6 * 8
    # Sparse depth: isolated valid pixels are not edges just because their neighbours are holes.
    sparse = np.zeros((6, 8), np.float32)
    sparse[::3, ::3] = 1.5
    assert not depth_edge_mask(sparse).any()


def test_point_cloud_files_load_back(tmp_path: Path) -> None:
    trimesh = pytest.importorskip("trimesh")
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    ply = trimesh.load(save_point_cloud(tmp_path / "c.ply", pts, cols))
    scene = trimesh.load(save_point_cloud(tmp_path / "c.glb", pts, cols))
    glb = next(iter(scene.geometry.values()))
    for cloud in (ply, glb):
        assert len(cloud.vertices) == 50
        np.testing.assert_allclose(cloud.vertices, pts, atol=1e-6)
        assert np.array_equal(np.asarray(cloud.colors)[:, :3], cols)
    with pytest.raises(ValueError, match=r"\.ply"):
        save_point_cloud(tmp_path / "c.obj", pts, cols)
    with pytest.raises(ValueError, match="empty"):
        save_point_cloud(tmp_path / "e.ply", pts[:0], cols[:0])


def test_save_result_writes_everything(tmp_path: Path) -> None:
    pytest.importorskip("trimesh")
    depth, rgb, valid = _scene()
    unc = np.abs(np.random.default_rng(2).normal(size=depth.shape)).astype(np.float32)
    files = save_result(
        tmp_path / "r",
        image=rgb,
        depth=depth,
        uncertainty=unc,
        valid_mask=valid,
        metadata={"prompt": "a room", "seed": np.int64(3)},
    )
    names = {p.name for p in files.values()}
    assert names == {
        "rgb.png", "depth.npy", "depth16.png", "depth_color.png", "disparity_magma.png",
        "uncertainty.npy", "uncertainty.png", "cloud.ply", "cloud.glb", "metadata.json",
    }  # fmt: skip
    assert all(p.is_file() for p in files.values())
    assert not list((tmp_path / "r").glob("*.tmp"))  # no temp files left behind
    meta = json.loads(files["metadata"].read_text())
    assert meta["prompt"] == "a room" and meta["seed"] == 3 and meta["fov_deg"] == 60.0
    assert meta["depth_description"].startswith("relative depth, unit mean over valid pixels")
    assert set(meta["files"].values()) == names and len(meta["intrinsics"]) == 3
    back, back_valid = load_depth_png16(files["depth16"], meta["depth16_range"])
    saved = np.load(files["depth"])
    assert saved.dtype == np.float32 and np.array_equal(saved > 0, back_valid)
    lo, hi = meta["depth16_range"]
    np.testing.assert_allclose(back, saved, atol=(hi - lo) / 65534)
    assert np.array_equal(np.asarray(Image.open(files["rgb"])), rgb)
    assert meta["num_points"] == (saved > 0).sum()  # smooth ramp: no edge pixel dropped


def test_save_result_depth_only_metric(tmp_path: Path) -> None:
    depth, _, _ = _scene()
    files = save_result(tmp_path, depth=depth, metadata={"depth_space": "metric"})
    assert "rgb" not in files and "cloud_ply" not in files
    meta = json.loads(files["metadata"].read_text())
    assert meta["depth_description"].startswith("metric depth in metres")
    with pytest.raises(ValueError, match="choose from"):
        save_result(tmp_path, depth=depth, metadata={"depth_space": "inverse"})


def test_gallery_relative_links_and_escaping(tmp_path: Path) -> None:
    pytest.importorskip("trimesh")
    depth, rgb, valid = _scene()
    root = tmp_path / "gallery"
    a = save_result(root / "a", image=rgb, depth=depth, valid_mask=valid)
    b = save_result(root / "b", image=rgb, depth=depth, uncertainty=depth, point_cloud=False)
    entries = [
        {"title": "A", "caption": "a <b>bold</b> & room", "mode": "joint", "files": a},
        {  # relative paths are taken relative to the gallery folder
            "title": "B",
            "prompt": "i2d",
            "mode": "i2d",
            "files": {k: p.relative_to(root) for k, p in b.items()},
        },
    ]
    html_path = write_gallery(root, entries)
    text = html_path.read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; room" in text and "<b>bold" not in text
    links = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert "a/cloud.glb" in links and "a/depth.npy" in links and "b/uncertainty.png" in links
    assert "a/depth16.png" in links and "a/cloud.ply" in links
    assert not any(link.startswith("/") or str(tmp_path) in link for link in links)
    moved = shutil.move(str(root), str(tmp_path / "moved"))  # links survive a move
    assert all((Path(moved) / link).exists() for link in links)
    with Image.open(Path(moved) / "contact_sheet.png") as sheet:
        sheet.verify()
        assert sheet.format == "PNG" and sheet.size[1] > 2 * 160
