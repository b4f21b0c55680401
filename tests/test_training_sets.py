"""Training-set readers on fixture files written here in each dataset's real format: units,
invalid pixels, intrinsics (Hypersim's distance -> planar depth in closed form), bad files."""

import math

import h5py
import numpy as np
import pytest
from PIL import Image

from modality_forcing.data.training_sets import fit_to_size, get_training_set, random_crop
from modality_forcing.data.training_sets.hypersim import tonemap


def _png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16)).save(path)


def _rgb(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _h5(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=array)


# ------------------------------------------------------------------------------------ Hypersim

H, W = 6, 8


def _hypersim_frame(root, scene="ai_001_001", cam="cam_00", frame="0000", distance=None):
    images = root / scene / "images"
    if distance is None:
        distance = np.full((H, W), 3.0)
    _h5(images / f"scene_{cam}_geometry_hdf5" / f"frame.{frame}.depth_meters.hdf5",
        distance.astype(np.float16))  # fmt: skip
    _h5(images / f"scene_{cam}_final_hdf5" / f"frame.{frame}.color.hdf5",
        np.full((H, W, 3), 0.5, np.float16))  # fmt: skip
    entity = np.zeros((H, W), np.int32)
    entity[0, 0] = -1  # no geometry here
    _h5(images / f"scene_{cam}_geometry_hdf5" / f"frame.{frame}.render_entity_id.hdf5", entity)


def test_hypersim_distance_becomes_planar_depth_with_the_standard_camera(tmp_path):
    f = (W / 2) / math.tan(math.radians(30))  # 60 deg horizontal FOV: 886.81 px at 1024 wide
    rows, cols = np.mgrid[0:H, 0:W]
    x, y = cols + 0.5 - W / 2, rows + 0.5 - H / 2
    z = 2.0 + 0.25 * rows  # planar depth we want back
    distance = z * np.sqrt(x**2 + y**2 + f**2) / f
    distance[0, 0] = np.nan  # Hypersim's "no geometry"
    _hypersim_frame(tmp_path, distance=distance)
    data = get_training_set("hypersim", tmp_path)
    s = data[0]
    stored = distance.astype(np.float16).astype(np.float64)  # what the file holds
    for r, c in [(0, 1), (5, 7), (2, 3), (3, 4)]:
        expected = stored[r, c] * f / math.sqrt(x[r, c] ** 2 + y[r, c] ** 2 + f**2)
        assert s["depth"][r, c] == pytest.approx(expected, rel=1e-6)
        assert s["depth"][r, c] == pytest.approx(z[r, c], rel=2e-3)  # float16 storage
    assert (
        not s["valid_mask"][0, 0] and s["depth"][0, 0] == 0 and s["valid_mask"].sum() == H * W - 1
    )
    np.testing.assert_allclose(s["intrinsics"], [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], 1e-5)
    assert s["key"] == "ai_001_001/cam_00/0000" and s["caption"] == ""
    # Hypersim's tonemap: constant 0.5 -> its 90th percentile maps to 0.8 after gamma 1/2.2
    assert s["image"].dtype == np.uint8 and (s["image"] == round(0.8 * 255)).all()


def test_hypersim_per_scene_tilt_shift_camera(tmp_path):
    m = np.array([[0.577, 0.0, 0.1], [0.0, 0.433, -0.05], [0.0, 0.0, -1.0]])  # M_cam_from_uv
    header = ["scene_name"] + [f"M_cam_from_uv_{i}{j}" for i in range(3) for j in range(3)]
    values = ["ai_001_001"] + [str(float(v)) for v in m.ravel()]
    (tmp_path / "metadata_camera_parameters.csv").write_text(
        ",".join(header) + "\n" + ",".join(values) + "\n"
    )
    _hypersim_frame(tmp_path, distance=np.full((H, W), 4.0))
    s = get_training_set("hypersim", tmp_path)[0]
    for r, c in [(0, 0), (5, 7), (2, 6)]:
        u, v = (c + 0.5) / W * 2 - 1, 1 - (r + 0.5) / H * 2
        ray = m @ np.array([u, v, 1.0])
        assert s["depth"][r, c] == pytest.approx(4.0 / np.linalg.norm(ray), rel=1e-6)
    fx = W / (2 * 0.577)
    assert s["intrinsics"][0, 0] == pytest.approx(fx, rel=1e-5)
    assert s["intrinsics"][0, 2] == pytest.approx(W / 2 - fx * 0.1, rel=1e-5)


def test_hypersim_preview_split_and_bad_files(tmp_path):
    _hypersim_frame(tmp_path, frame="0000")
    _hypersim_frame(tmp_path, frame="0001")
    _hypersim_frame(tmp_path, cam="cam_01", frame="0000")
    for cam, frame in [("cam_00", "0000"), ("cam_00", "0001"), ("cam_01", "0000")]:
        preview = tmp_path / "ai_001_001/images" / f"scene_{cam}_final_preview"
        _rgb(preview / f"frame.{frame}.tonemap.jpg", H, W)
    (tmp_path / "metadata_images_split_scene_v1.csv").write_text(
        "scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,"
        "split_partition_name\nai_001_001,cam_00,0,True,,train\nai_001_001,cam_00,1,True,,val\n"
        "ai_001_001,cam_01,0,False,bad,train\n"
    )
    assert len(get_training_set("hypersim", tmp_path, split="train")) == 1
    data = get_training_set("hypersim", tmp_path, tonemap="preview")
    assert len(data) == 3 and data[0]["image"].shape == (H, W, 3)
    color = tmp_path / "ai_001_001/images/scene_cam_00_final_hdf5/frame.0001.color.hdf5"
    color.write_bytes(b"not an hdf5 file")
    data = get_training_set("hypersim", tmp_path)
    with pytest.warns(RuntimeWarning, match="corrupt_file"):
        assert len(list(data)) == 2
    assert data.stats.counts["corrupt_file"] == 1
    with pytest.raises(ValueError, match="unknown tonemap"):
        get_training_set("hypersim", tmp_path, tonemap="aces")


def test_tonemap_uses_the_geometry_pixels_for_exposure():
    rgb = np.full((4, 4, 3), 0.5)
    rgb[0] = 100.0  # a bright window with no geometry must not set the exposure
    valid = np.ones((4, 4), bool)
    valid[0] = False
    out = tonemap(rgb, valid)
    assert (out[1:] == 204).all() and (out[0] == 255).all()


# ------------------------------------------------------------------------- Virtual KITTI 2


def test_vkitti2_centimetres_sky_and_intrinsics(tmp_path):
    frames = tmp_path / "Scene01" / "clone" / "frames"
    _rgb(frames / "rgb/Camera_0/rgb_00000.jpg", 2, 3)
    _rgb(frames / "rgb/Camera_1/rgb_00000.jpg", 2, 3)
    _png16(frames / "depth/Camera_0/depth_00000.png", [[150, 65535, 9000], [1, 2500, 0]])
    _png16(frames / "depth/Camera_1/depth_00000.png", [[100, 100, 100], [100, 100, 100]])
    (tmp_path / "Scene01/clone/intrinsic.txt").write_text(
        "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n"
        "0 0 725.0087 725.0087 620.5 187\n0 1 725.0087 725.0087 620.5 187\n"
    )
    data = get_training_set("vkitti2", tmp_path)
    assert len(data) == 2
    s = data[0]
    np.testing.assert_allclose(s["depth"], [[1.5, 0, 90.0], [0.01, 25.0, 0]], rtol=1e-6)
    assert s["valid_mask"].tolist() == [[True, False, True], [True, True, False]]  # sky, 0
    assert s["intrinsics"][0, 0] == pytest.approx(725.0087) and s["intrinsics"][1, 2] == 187
    assert s["key"] == "Scene01/clone/frames/rgb/Camera_0/rgb_00000"
    capped = get_training_set("vkitti2", tmp_path, max_depth=80.0, cameras=["Camera_0"])
    assert len(capped) == 1 and not capped[0]["valid_mask"][0, 2]


# ---------------------------------------------------------------------------- KITTI depth


def test_kitti_depth_png_over_256_zeros_invalid_raw_image_and_calib(tmp_path):
    drive = "2011_09_26_drive_0001_sync"
    depth_dir = tmp_path / "depth" / "train" / drive / "proj_depth" / "groundtruth" / "image_02"
    _png16(depth_dir / "0000000005.png", [[0, 256, 512], [1280, 0, 20480]])
    _png16(depth_dir / "0000000006.png", [[256] * 3] * 2)  # its raw frame is missing
    raw = tmp_path / "raw"
    _rgb(raw / "2011_09_26" / drive / "image_02" / "data" / "0000000005.png", 2, 3)
    (raw / "2011_09_26" / "calib_cam_to_cam.txt").write_text(
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 "
        "7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 "
        "2.745884e-03\n"
    )
    data = get_training_set("kitti_depth", tmp_path / "depth", raw_root=raw)
    assert data.kind == "sparse" and len(data) == 2
    s = data[0]
    np.testing.assert_allclose(s["depth"], [[0, 1, 2], [5, 0, 80]])
    assert s["valid_mask"].tolist() == [[False, True, True], [True, False, True]]
    assert s["intrinsics"][0, 0] == pytest.approx(721.5377) and s["intrinsics"][1, 2] == 172.854
    assert s["key"] == f"{drive}/image_02/0000000005"
    with pytest.warns(RuntimeWarning, match="no raw colour frame"):
        assert data[1] is None
    assert len(get_training_set("kitti_depth", tmp_path / "depth", split="train")) == 2
    with pytest.raises(FileNotFoundError, match="no samples"):
        get_training_set("kitti_depth", tmp_path / "depth", split="val", raw_root=raw)


def test_kitti_depth_size_mismatch_names_the_files(tmp_path):
    drive = "2011_09_26_drive_0001_sync"
    depth = tmp_path / "val" / drive / "proj_depth" / "velodyne_raw" / "image_03" / "0000000000.png"
    _png16(depth, [[256, 0], [0, 256]])
    _rgb(tmp_path / "2011_09_26" / drive / "image_03" / "data" / "0000000000.png", 3, 3)
    data = get_training_set("kitti_depth", tmp_path, layer="velodyne_raw")
    with pytest.raises(ValueError, match=r"0000000000\.png"):
        data.load(0)


# --------------------------------------------------------------------- image + sparse points


def test_points_npz_rasterised_nearest_wins_and_pixel_convention(tmp_path):
    _rgb(tmp_path / "seq" / "a.jpg", 4, 5)
    uv = np.array([[0.0, 0.0], [4.2, 2.9], [4.0, 3.0], [9.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    depth = np.array([1.5, 7.0, 3.0, 2.0, -1.0, np.nan])
    k = np.array([[5.0, 0, 2.5], [0, 5.0, 2.0], [0, 0, 1]])
    np.savez(tmp_path / "seq" / "a.npz", uv=uv, depth=depth, K=k)
    (tmp_path / "seq" / "a.txt").write_text("a kitchen\n")
    s = get_training_set("points", tmp_path)[0]
    expected = np.zeros((4, 5), np.float32)
    expected[0, 0], expected[3, 4] = 1.5, 3.0  # (4.2, 2.9) and (4.0, 3.0) share a pixel: 3 < 7
    np.testing.assert_array_equal(s["depth"], expected)
    assert s["valid_mask"].sum() == 2 and s["caption"] == "a kitchen" and s["key"] == "seq/a"
    np.testing.assert_allclose(s["intrinsics"], k)
    colmap = get_training_set("points", tmp_path, pixel_center=0.5)[0]
    assert colmap["valid_mask"][0, 0] and colmap["valid_mask"][2, 4]  # floor(): (4.2, 2.9)
    assert colmap["depth"][2, 4] == 7.0


def test_points_bad_files_are_skipped(tmp_path):
    for name in ("a", "b", "c"):
        _rgb(tmp_path / f"{name}.png", 4, 4)
    np.savez(tmp_path / "a.npz", uv=np.zeros((2, 2)), depth=np.ones(2))
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 truncated")
    np.savez(tmp_path / "c.npz", uv=np.zeros((3, 3)), depth=np.ones(3))  # wrong shape
    np.savez(tmp_path / "orphan.npz", uv=np.zeros((1, 2)), depth=np.ones(1))  # no image
    with pytest.warns(RuntimeWarning, match="missing_image"):
        data = get_training_set("points", tmp_path)
    with pytest.warns(RuntimeWarning, match="corrupt_file"):
        assert [s["key"] for s in data] == ["a"]
    assert data.stats.counts["corrupt_file"] == 2 and data.stats.counts["missing_image"] == 1


# ------------------------------------------------------------------------------- registry + fit


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training set 'nyu'; choose from \["):
        get_training_set("nyu", tmp_path)
    with pytest.raises(ValueError, match="needs a data root"):
        get_training_set("hypersim", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_training_set("vkitti2", tmp_path / "missing")


def test_fit_to_size_crops_the_centre_without_stretching():
    h, w = 20, 40
    cols = np.broadcast_to(np.arange(w, dtype=np.float32) + 1, (h, w)).copy()
    k = np.array([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]], np.float32)
    sample = {"image": np.zeros((h, w, 3), np.uint8), "depth": cols, "valid_mask": cols > 3,
              "intrinsics": k, "caption": ""}  # fmt: skip
    out = fit_to_size(sample, 16, 16)  # scale 0.8 -> 16 x 32, keep the middle 16 columns
    assert out["image"].shape == (16, 16, 3) and out["depth"].shape == (16, 16)
    assert set(np.unique(out["depth"])) <= set(np.arange(w) + 1.0)  # nearest: no new values
    np.testing.assert_array_equal(out["depth"][0], np.floor((np.arange(16) + 8 + 0.5) / 0.8) + 1)
    np.testing.assert_allclose(out["intrinsics"], [[24, 0, 8], [0, 24, 8], [0, 0, 1]], atol=1e-5)
    assert fit_to_size(out, 16, 16) is out


def test_random_crop_cuts_every_array_alike_and_moves_the_principal_point():
    h, w = 30, 40
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    k = np.array([[35.0, 0, w / 2], [0, 35.0, h / 2], [0, 0, 1]], np.float32)
    sample = {"image": np.zeros((h, w, 3), np.uint8), "depth": rows * 100 + cols + 1,
              "valid_mask": cols > 10, "intrinsics": k, "caption": "c"}  # fmt: skip
    rng = np.random.default_rng(3)
    sides = []
    for _ in range(20):
        out = random_crop(sample, 0.5, rng)
        ch, cw = out["depth"].shape
        sides.append(ch / h)
        assert out["image"].shape[:2] == (ch, cw) and out["valid_mask"].shape == (ch, cw)
        assert abs(ch / h - cw / w) < 0.05  # the aspect ratio is kept
        top, left = divmod(int(out["depth"][0, 0]) - 1, 100)  # where the window starts
        np.testing.assert_array_equal(
            out["depth"], sample["depth"][top : top + ch, left : left + cw]
        )
        expected = np.broadcast_to(np.arange(left, left + cw) > 10, (ch, cw))
        np.testing.assert_array_equal(out["valid_mask"], expected)
        # a pixel keeps its ray: (u - cx) / fx is unchanged once u is shifted by the window
        np.testing.assert_allclose(out["intrinsics"][:2, 2], k[:2, 2] - [left, top])
        np.testing.assert_array_equal(out["intrinsics"][:2, :2], k[:2, :2])
        assert out["caption"] == "c"
    assert min(sides) >= 0.5 - 1 / h and max(sides) <= 1 and max(sides) - min(sides) > 0.2
    assert random_crop(sample, 1.0, rng) is sample
    with pytest.raises(ValueError, match=r"crop must be in \(0, 1\]"):
        random_crop(sample, 0.0, rng)
