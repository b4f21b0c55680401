"""Benchmark readers on tiny fixture files written in each dataset's distributed format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modality_forcing.data.benchmarks import BENCHMARKS, get_benchmark
from modality_forcing.data.benchmarks import base as benchmarks_base
from modality_forcing.data.benchmarks.kitti import eval_crop_mask, kb_crop

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")


def _png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def _rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


# -- NYUv2 ----------------------------------------------------------------------------------------


def _write_nyu(root: Path, num: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labeled .mat as MATLAB v7.3 stores it: h5py sees images [N, 3, W, H], depths [N, W, H]."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num, 480, 640, 3), dtype=np.uint8)  # [N, H, W, 3]
    depths = rng.uniform(0.5, 9.5, (num, 480, 640)).astype(np.float32)  # [N, H, W]
    depths[:, 200, 300] = 12.0  # beyond the 10 m range
    depths[:, 201, 300] = 0.0  # no measurement
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)  # [N, 3, W, H]
        f["depths"] = depths.transpose(0, 2, 1)  # [N, W, H]
        f["rawDepths"] = (depths * 0.5).transpose(0, 2, 1)
    scipy_io.savemat(root / "splits.mat", {"trainNdxs": [[1], [3]], "testNdxs": [[2], [4]]})
    return images, depths


def test_nyuv2_layout_split_and_eigen_crop(tmp_path: Path) -> None:
    images, depths = _write_nyu(tmp_path)
    bench = get_benchmark("nyuv2", tmp_path)
    assert len(bench) == 2 and bench.depth_range == (1e-3, 10.0)
    sample = bench[1]
    assert sample["key"] == "0004"  # official 1-based index
    np.testing.assert_array_equal(sample["image"], images[3])
    assert sample["image"].dtype == np.uint8 and sample["depth"].dtype == np.float32
    mask = sample["valid_mask"]
    np.testing.assert_array_equal(sample["depth"][mask], depths[3][mask])
    assert not mask[:45].any() and not mask[471:].any()
    assert not mask[:, :41].any() and not mask[:, 601:].any()
    assert mask[45, 41] and mask[470, 600]
    assert not mask[200, 300] and not mask[201, 300]
    assert sample["depth"][200, 300] == 0.0  # invalid depth is zeroed
    assert mask.sum() == 426 * 560 - 2
    raw, ref = get_benchmark("nyuv2", tmp_path, depth_field="rawDepths")[0], bench[0]
    assert raw["valid_mask"][200, 300]  # 12 m * 0.5 is in range in the raw field
    both = raw["valid_mask"] & ref["valid_mask"]
    np.testing.assert_allclose(raw["depth"][both], ref["depth"][both] * 0.5)


def test_nyuv2_split_sources(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    assert [s["key"] for s in get_benchmark("nyuv2", tmp_path, split="train")] == ["0001", "0003"]
    assert len(get_benchmark("nyuv2", tmp_path, split="all")) == 4
    text = tmp_path / "mine.txt"
    text.write_text("# 1-based\n3\n1\n")
    assert [s["key"] for s in get_benchmark("nyuv2", tmp_path, split_file=text)] == ["0003", "0001"]
    (tmp_path / "splits.mat").unlink()
    with pytest.raises(ValueError, match="1-based"):  # the packaged 654-frame list needs 1449
        get_benchmark("nyuv2", tmp_path)
    text.write_text("5\n")
    with pytest.raises(ValueError, match="1-based"):
        get_benchmark("nyuv2", tmp_path, split_file=text)


# -- KITTI ----------------------------------------------------------------------------------------


def test_kitti_kb_crop_garg_mask_and_units(tmp_path: Path) -> None:
    h, w = 375, 1242
    rows, cols = np.mgrid[0:h, 0:w]
    depth = 5.0 + (rows % 50) + cols / w * 10.0
    depth[rows > 350] = 0.0  # no LiDAR return
    depth[:, 700] = 90.0  # beyond 80 m
    image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], -1).astype(np.uint8)
    drive = "2011_09_26/2011_09_26_drive_0002_sync"
    _rgb(tmp_path / drive / "image_02/data/0000000069.png", image)
    _png16(tmp_path / "gt" / drive / "0000000069.png", np.round(depth * 256))
    split = tmp_path / "eigen.txt"
    split.write_text(
        f"{drive}/image_02/data/0000000069.png gt/{drive}/0000000069.png 721.5377\n"
        f"{drive}/image_02/data/0000000070.png None 721.5377\n"
    )
    bench = get_benchmark("kitti", tmp_path, split_file=split)
    assert len(bench) == 1  # the line without ground truth is skipped
    sample = bench[0]
    assert sample["key"] == f"{drive}/image_02/data/0000000069"
    assert sample["image"].shape == (352, 1216, 3) and sample["depth"].shape == (352, 1216)
    top, left = h - 352, (w - 1216) // 2  # 23, 13
    np.testing.assert_array_equal(sample["image"], image[top:, left : left + 1216])
    expected = np.round(depth[top:, left : left + 1216] * 256) / 256
    mask = sample["valid_mask"]
    np.testing.assert_allclose(sample["depth"][mask], expected[mask], rtol=0, atol=1e-6)
    garg = eval_crop_mask((352, 1216), "garg")
    r0, r1, c0, c1 = int(0.40810811 * 352), int(0.99189189 * 352), int(0.03594771 * 1216), 1172
    assert garg[r0:r1, c0:c1].all() and garg.sum() == (r1 - r0) * (c1 - c0)
    assert not (mask & ~garg).any()
    assert not mask[:, 700 - left].any()  # 90 m is out of range
    assert not mask[351 - top + 1 :].any()  # zero depth rows (original rows > 350)
    assert mask[r0, 600] and not mask[r0 - 1, 600]


def test_kitti_helpers_and_errors(tmp_path: Path) -> None:
    assert kb_crop(np.zeros((376, 1241))).shape == (352, 1216)
    with pytest.raises(ValueError, match="KB crop"):
        kb_crop(np.zeros((300, 1216)))
    with pytest.raises(ValueError, match="unknown eval crop 'x'; choose from"):
        eval_crop_mask((4, 4), "x")
    assert eval_crop_mask((4, 4), "none").all()
    with pytest.raises(FileNotFoundError, match="no split list for split 'odometry'"):
        get_benchmark("kitti", tmp_path, split="odometry")


# -- ETH3D, ScanNet -------------------------------------------------------------------------------


def test_eth3d_raw_float32_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    depth = rng.uniform(1, 20, (6, 9)).astype(np.float32)
    depth[0, 0] = np.inf  # unknown
    rel_img, rel_depth = "courtyard/images/dslr_images/DSC_0286.JPG", "courtyard/depth/DSC_0286.JPG"
    _rgb(tmp_path / rel_img, image)
    (tmp_path / rel_depth).parent.mkdir(parents=True)
    depth.astype("<f4").tofile(tmp_path / rel_depth)  # the raw ETH3D depth binary
    (tmp_path / "test.txt").write_text(f"{rel_img} {rel_depth}\n")
    sample = get_benchmark("eth3d", tmp_path)[0]
    assert sample["key"] == "courtyard/images/dslr_images/DSC_0286"
    assert sample["image"].shape == (6, 9, 3)
    assert not sample["valid_mask"][0, 0] and sample["valid_mask"].sum() == 53
    np.testing.assert_array_equal(sample["depth"][1:], depth[1:])
    depth[:, :8].astype("<f4").tofile(tmp_path / rel_depth)
    with pytest.raises(ValueError, match="float32 values"):
        get_benchmark("eth3d", tmp_path)[0]


def test_scannet_millimetre_png(tmp_path: Path) -> None:
    mm = np.array([[0, 500, 9999], [10001, 1500, 65535]])
    _png16(tmp_path / "scene0707_00/depth/000000.png", mm)
    _rgb(tmp_path / "scene0707_00/color/000000.jpg", np.zeros((2, 3, 3), np.uint8))
    split = tmp_path / "list.txt"
    split.write_text("scene0707_00/color/000000.jpg scene0707_00/depth/000000.png\n")
    sample = get_benchmark("scannet", tmp_path, split_file=split)[0]
    np.testing.assert_allclose(sample["depth"], [[0, 0.5, 9.999], [0, 1.5, 0]], rtol=1e-6)
    assert sample["valid_mask"].tolist() == [[False, True, True], [False, True, False]]
    _rgb(tmp_path / "scene0707_00/color/000000.jpg", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="resize the colour"):
        get_benchmark("scannet", tmp_path, split_file=split)[0]


# -- DIODE ----------------------------------------------------------------------------------------


def _write_diode(root: Path, scene_type: str, name: str, depth: np.ndarray) -> None:
    folder = root / "val" / scene_type / "scene_00019" / "scan_00183"
    _rgb(folder / f"{name}.png", np.full((*depth.shape, 3), 7, np.uint8))
    np.save(folder / f"{name}_depth.npy", depth[..., None].astype(np.float32))  # [H, W, 1]
    np.save(folder / f"{name}_depth_mask.npy", (depth != 2.0).astype(np.float32))


def test_diode_listing_mask_and_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benchmarks_base, "SPLITS_DIR", tmp_path / "no_packaged_lists")
    _write_diode(tmp_path, "indoors", "00019_00183_indoors_000_010", np.array([[0.5, 1.0, 2.0]]))
    _write_diode(tmp_path, "outdoor", "00019_00183_outdoor_000_010", np.array([[400.0, 30, 349]]))
    bench = get_benchmark("diode", tmp_path)
    assert [s["valid_mask"].tolist() for s in bench] == [
        [[False, True, False]],  # 0.5 < 0.6 m; the 2.0 pixel is masked by the file mask
        [[False, True, True]],  # 400 > 350 m
    ]
    assert bench[0]["key"] == "val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010"
    assert len(get_benchmark("diode", tmp_path, split="val_outdoor")) == 1
    with pytest.raises(ValueError, match="unknown split 'test'; choose from"):
        get_benchmark("diode", tmp_path, split="test")


# -- packaged split lists -------------------------------------------------------------------------


def _split_rows(name: str) -> list[list[str]]:
    path = benchmarks_base.SPLITS_DIR / name
    rows = benchmarks_base.read_split_lines(path)
    assert path.read_text().endswith("\n") and len({r[0] for r in rows}) == len(rows)
    return rows


def test_packaged_split_lists() -> None:
    nyu = [int(r[0]) for r in _split_rows("nyuv2_test.txt")]
    assert len(nyu) == 654 and nyu == sorted(nyu) and nyu[0] == 1 and nyu[-1] == 1449
    kitti = _split_rows("kitti_eigen_test.txt")
    assert len(kitti) == 697 and sum(r[1] != "None" for r in kitti) == 652
    assert kitti[0][:2] == [
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png",
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png",
    ]
    assert len(_split_rows("eth3d_test.txt")) == 454
    assert len(_split_rows("scannet_test.txt")) == 800
    diode = _split_rows("diode_val.txt")
    indoors, outdoor = _split_rows("diode_val_indoors.txt"), _split_rows("diode_val_outdoor.txt")
    assert (len(diode), len(indoors), len(outdoor)) == (771, 325, 446)
    assert diode == indoors + outdoor
    assert all(
        r[1] == r[0][:-4] + "_depth.npy" and r[2] == r[0][:-4] + "_depth_mask.npy" for r in diode
    )
    assert all(r[0].startswith("val/indoors/") for r in indoors)


@pytest.mark.parametrize(
    ("name", "count"), [("kitti", 652), ("eth3d", 454), ("scannet", 800), ("diode", 771)]
)
def test_readers_default_to_packaged_lists(tmp_path: Path, name: str, count: int) -> None:
    bench = get_benchmark(name, tmp_path)  # an empty root: no split file anywhere but the package
    assert len(bench) == count
    image, depth = bench.entries[0][:2]
    if name == "kitti":
        rows = np.arange(375)[:, None].repeat(1242, 1)
        _rgb(tmp_path / image, np.zeros((375, 1242, 3), np.uint8))
        _png16(tmp_path / depth, np.where(rows > 200, 10 * 256, 0))
    elif name == "eth3d":
        _rgb(tmp_path / image, np.zeros((4, 6, 3), np.uint8))
        (tmp_path / depth).parent.mkdir(parents=True)
        np.full((4, 6), 3.0, "<f4").tofile(tmp_path / depth)
    elif name == "scannet":
        _rgb(tmp_path / image, np.zeros((4, 6, 3), np.uint8))
        _png16(tmp_path / depth, np.full((4, 6), 3000))
    else:
        _rgb(tmp_path / image, np.zeros((4, 6, 3), np.uint8))
        np.save(tmp_path / depth, np.full((4, 6, 1), 3.0, np.float32))
        np.save(tmp_path / bench.entries[0][2], np.ones((4, 6), np.float32))
    sample = bench[0]
    assert sample["key"] == image.rsplit(".", 1)[0] and sample["valid_mask"].any()
    np.testing.assert_allclose(
        sample["depth"][sample["valid_mask"]], 10.0 if name == "kitti" else 3.0
    )


def test_nyuv2_defaults_to_packaged_list(tmp_path: Path) -> None:
    # A full-length labeled file whose chunks are never written: HDF5 stores nothing for them.
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:
        f.create_dataset("images", (1449, 3, 640, 480), "u1", chunks=(1, 3, 640, 480))
        f.create_dataset("depths", (1449, 640, 480), "f4", chunks=(1, 640, 480), fillvalue=2.0)
    bench = get_benchmark("nyuv2", tmp_path)
    assert len(bench) == 654 and bench.entries[:3] == [0, 1, 8] and bench.entries[-1] == 1448
    sample = bench[2]
    assert sample["key"] == "0009" and sample["valid_mask"].sum() == 426 * 560


# -- folder, procedural, registry -----------------------------------------------------------------


def test_folder_reader(tmp_path: Path) -> None:
    _rgb(tmp_path / "images/a.png", np.full((2, 2, 3), 9, np.uint8))
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth/a.npy", np.array([[1.0, 2.0], [3.0, -1.0]], np.float32))
    _png16(tmp_path / "mask/a.png", np.array([[1, 0], [1, 1]]))
    _rgb(tmp_path / "images/sub/b.jpg", np.zeros((2, 2, 3), np.uint8))
    _png16(tmp_path / "depth/sub/b.png", np.array([[1000, 2500], [0, 4000]]))
    bench = get_benchmark("folder", tmp_path)
    assert [s["key"] for s in bench] == ["a", "sub/b"]
    a, b = bench
    assert a["valid_mask"].tolist() == [[True, False], [True, False]]  # mask file, then depth <= 0
    np.testing.assert_allclose(b["depth"], [[1.0, 2.5], [0.0, 4.0]])
    (tmp_path / "keys.txt").write_text("sub/b\n")
    assert len(get_benchmark("folder", tmp_path, split_file=tmp_path / "keys.txt")) == 1
    capped = get_benchmark("folder", tmp_path, depth_range=(0.0, 3.0))
    assert capped[1]["valid_mask"].tolist() == [[True, True], [False, False]]


@pytest.mark.skipif(
    importlib.util.find_spec("modality_forcing.data.procedural") is None,
    reason="procedural world not available",
)
def test_procedural_benchmark() -> None:
    bench = get_benchmark("procedural", None, num=3, height=24, width=32)
    samples = list(bench)
    assert len(samples) == 3 and bench.depth_range == (1e-3, 30.0)
    assert samples[0]["image"].shape == (24, 32, 3) and samples[0]["depth"].dtype == np.float32
    assert all((s["depth"][s["valid_mask"]] < 30).all() for s in samples)
    assert len({s["key"] for s in samples}) == 3
    np.testing.assert_array_equal(bench[1]["depth"], samples[1]["depth"])  # index == iterate


def test_registry() -> None:
    assert set(BENCHMARKS) >= {"nyuv2", "kitti", "eth3d", "scannet", "diode", "folder"}
    with pytest.raises(ValueError, match=r"unknown benchmark 'bogus'; choose from \["):
        get_benchmark("bogus", ".")
    with pytest.raises(ValueError, match="--data-root"):
        get_benchmark("kitti", None)
