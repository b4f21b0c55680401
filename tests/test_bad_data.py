"""Bad-data rules: corrupt/truncated files are skipped and counted, bad depth becomes invalid
pixels, an image/depth size mismatch is an error naming the file, a missing caption is ""."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rgbd_samples import make_sample, write_split_layout

from modality_forcing.data import decode, shards
from modality_forcing.data.folder import iter_folder_samples
from modality_forcing.data.shards import iter_shard_samples, write_shards


def _shards_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Callable) -> Path:
    """Three samples in one shard; `edit(record)` corrupts the middle one before writing."""
    original = shards.encode_sample

    def encode(sample: dict, depth_format: str = "png16") -> dict:
        record = original(sample, depth_format)
        if sample["key"] == "seed-000000001":
            edit(record)
        return record

    monkeypatch.setattr(shards, "encode_sample", encode)
    make = lambda s, c: [make_sample(i) for i in range(s, s + c)]  # noqa: E731
    return write_shards(tmp_path, 3, make, {}, progress=False)


@pytest.mark.parametrize(
    "member, reason",
    [("rgb.png", "corrupt_file"), ("depth.png", "corrupt_file"), ("mask.png", "corrupt_file")],
)
def test_truncated_png_in_shard_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str, reason: str
) -> None:
    def cut(record: dict) -> None:
        record[member] = record[member][: len(record[member]) // 2]

    stats = decode.SkipCounter()
    with pytest.warns(RuntimeWarning, match=f"{reason}.*seed-000000001"):
        keys = [
            s["key"] for s in iter_shard_samples(_shards_with(tmp_path, monkeypatch, cut), stats)
        ]
    assert keys == ["seed-000000000", "seed-000000002"]
    assert stats.as_dict() == {reason: 1}


def test_garbage_image_in_folder_is_skipped(tmp_path: Path) -> None:
    write_split_layout(tmp_path, n=3)
    (tmp_path / "image" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    png = (tmp_path / "image" / "img2.png").read_bytes()
    (tmp_path / "image" / "img2.png").write_bytes(png[: len(png) // 2])  # truncated
    stats = decode.SkipCounter()
    with pytest.warns(RuntimeWarning, match="corrupt_file"):
        keys = [s["key"] for s in iter_folder_samples(tmp_path, stats=stats)]
    assert keys == ["img0"] and stats.as_dict() == {"corrupt_file": 2}


def test_bad_depth_values_become_invalid(tmp_path: Path) -> None:
    write_split_layout(tmp_path, n=1)
    depth = np.full((24, 32), 2.0, np.float32)
    depth[0, :4] = [np.nan, np.inf, -1.0, 0.0]
    np.save(tmp_path / "depth" / "img0.npy", depth)
    (tmp_path / "mask" / "img0.png").unlink()  # validity from the depth alone
    (s,) = iter_folder_samples(tmp_path)
    assert s["valid_mask"][0, :5].tolist() == [False] * 4 + [True]
    assert (s["depth"][0, :4] == 0).all() and np.isfinite(s["depth"]).all()
    assert s["valid_mask"].sum() == 24 * 32 - 4


def test_size_mismatch_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_split_layout(tmp_path, n=2)
    np.save(tmp_path / "depth" / "img1.npy", np.ones((12, 16), np.float32))
    with pytest.raises(ValueError, match=r"img1\.npy.*24x32.*12x16"):
        list(iter_folder_samples(tmp_path))


def test_size_mismatch_in_shard_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def shrink(record: dict) -> None:
        record["depth.png"] = decode.encode_depth_png16(np.ones((12, 16), np.float32))

    with pytest.raises(ValueError, match=r"seed-000000001.*24x32.*12x16"):
        list(iter_shard_samples(_shards_with(tmp_path, monkeypatch, shrink)))


def test_missing_caption_is_empty(tmp_path: Path) -> None:
    write_split_layout(tmp_path, n=2)
    for f in (tmp_path / "caption").iterdir():
        f.unlink()
    stats = decode.SkipCounter()
    samples = list(iter_folder_samples(tmp_path, stats=stats))
    assert [s["caption"] for s in samples] == ["", ""]
    assert stats.as_dict() == {"missing_caption": 2}


def test_missing_caption_member_in_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(record: dict) -> None:
        del record["txt"]
        # A foreign writer that never had captions: no member list in the meta either.
        record["json"] = b'{"key": "seed-000000001"}'

    samples = list(iter_shard_samples(_shards_with(tmp_path, monkeypatch, drop)))
    assert [s["caption"] for s in samples][1] == ""
    assert len(samples) == 3


def test_mask_excludes_pixels_with_depth() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    depth = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), bool)
    s = decode.assemble_sample("x", image, depth, mask)
    assert not s["valid_mask"].any() and (s["depth"] == 0).all()
