"""RGB-D folder reader: both layouts, every depth format, optional masks/captions/meta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rgbd_samples import make_sample, write_split_layout

from modality_forcing.data import decode
from modality_forcing.data.folder import iter_folder_samples, list_folder


@pytest.mark.parametrize("depth_ext", [".npy", ".png"])
def test_split_layout(tmp_path: Path, depth_ext: str) -> None:
    refs = write_split_layout(tmp_path, depth_ext=depth_ext)
    got = list(iter_folder_samples(tmp_path))
    assert [s["key"] for s in got] == ["img0", "img1", "img2"]
    for s, ref in zip(got, refs, strict=True):
        assert np.array_equal(s["image"], ref["image"])
        assert np.array_equal(s["valid_mask"], ref["valid_mask"])
        tol = 0.0 if depth_ext == ".npy" else 0.0005 + 1e-6
        assert np.abs(s["depth"] - ref["depth"]).max() <= tol
        assert s["caption"] == ref["caption"]  # trailing newline stripped
        assert np.array_equal(s["intrinsics"], ref["intrinsics"]) and s["scene"] == ref["scene"]


def test_flat_layout_jpg_optional_parts(tmp_path: Path) -> None:
    s = make_sample(5)
    Image.fromarray(s["image"]).save(tmp_path / "a.b.rgb.jpg", quality=95)
    np.save(tmp_path / "a.b.depth.npy", s["depth"][..., None])  # [H, W, 1] is accepted
    (tmp_path / "a.b.txt").write_text("a caption")
    Image.fromarray(s["image"]).save(tmp_path / "c.rgb.png")  # image only: no depth, no caption
    items = list_folder(tmp_path)
    assert [i.name for i in items] == ["a.b", "c"]
    assert items[0].mask is None and items[1].depth is None
    stats = decode.SkipCounter()
    a, c = iter_folder_samples(tmp_path, stats=stats)
    assert a["image"].shape == (24, 32, 3) and a["caption"] == "a caption"
    # Without a mask file, validity comes from the depth itself (zeros are invalid).
    assert np.array_equal(a["valid_mask"], s["valid_mask"])
    assert not c["valid_mask"].any() and c["caption"] == ""
    assert stats.as_dict() == {"missing_depth": 1, "missing_caption": 1}


def test_depth_png_scale(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "image" / "k.png")
    Image.fromarray(np.full((4, 5), 512, np.uint16)).save(tmp_path / "depth" / "k.png")
    (s,) = iter_folder_samples(tmp_path, depth_scale=256.0)  # KITTI convention
    assert np.allclose(s["depth"], 2.0) and s["valid_mask"].all()


def test_exr_needs_openexr(tmp_path: Path) -> None:
    try:
        import OpenEXR  # noqa: F401

        pytest.skip("OpenEXR installed; the missing-dependency error cannot be shown")
    except ImportError:
        pass
    (tmp_path / "image").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "image" / "k.png")
    (tmp_path / "depth" / "k.exr").write_bytes(b"not really")
    with pytest.raises(ImportError, match=r"OpenEXR.*modality-forcing\[exr\]"):
        list(iter_folder_samples(tmp_path))


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no images"):
        list_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_folder(tmp_path / "nope")
