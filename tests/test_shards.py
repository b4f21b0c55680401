"""Webdataset shards: exact round trips, resumable atomic writes, argument checks, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rgbd_samples import make_sample

from modality_forcing.data.shards import (
    ShardDataset,
    iter_batches,
    iter_shard_samples,
    write_shards,
)

ARGS = {"source": "test", "height": 24, "width": 32}


def make_samples(start: int, count: int) -> list[dict]:
    return [make_sample(i) for i in range(start, start + count)]


@pytest.mark.parametrize("depth_format", ["png16", "npy"])
def test_round_trip(tmp_path: Path, depth_format: str) -> None:
    out = write_shards(tmp_path, 5, make_samples, ARGS, 2, depth_format, progress=False)
    got = list(iter_shard_samples(out))
    assert [s["key"] for s in got] == [f"seed-{i:09d}" for i in range(5)]
    for i, s in enumerate(got):
        ref = make_sample(i)
        assert np.array_equal(s["image"], ref["image"]) and s["image"].dtype == np.uint8
        assert np.array_equal(s["valid_mask"], ref["valid_mask"])
        err = np.abs(s["depth"] - ref["depth"]).max()
        assert err <= (0.0005 + 1e-6 if depth_format == "png16" else 0.0)
        assert s["depth"].dtype == np.float32 and (s["depth"][~s["valid_mask"]] == 0).all()
        assert s["caption"] == ref["caption"]
        assert s["scene"] == ref["scene"]
        assert np.array_equal(s["intrinsics"], ref["intrinsics"])


def test_png16_saturates_far_depth_to_invalid(tmp_path: Path) -> None:
    sample = make_sample(0)
    sample["depth"][0, :3] = [65.0, 65.535, 70.0]
    sample["valid_mask"][0, :3] = True
    write_shards(tmp_path, 1, lambda s, c: [sample], ARGS, progress=False)
    (got,) = iter_shard_samples(tmp_path)
    assert got["valid_mask"][0, :3].tolist() == [True, True, False]
    assert got["depth"][0, 2] == 0 and abs(got["depth"][0, 1] - 65.535) < 1e-3


def test_index_and_no_temp_files(tmp_path: Path) -> None:
    write_shards(tmp_path, 5, make_samples, ARGS, 2, progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["complete"] and index["num_samples"] == 5
    assert [s["count"] for s in index["shards"]] == [2, 2, 1]
    assert index["shards"][1]["first_key"] == "seed-000000002"
    assert index["args"]["height"] == 24 and index["args"]["shard_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.json",
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]


def test_resume_after_interruption(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(start: int, count: int) -> list[dict]:
        calls.append(start)
        if start == 4:
            raise KeyboardInterrupt  # the run dies while producing the third shard
        return make_samples(start, count)

    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path, 7, flaky, ARGS, 2, progress=False)
    assert not json.loads((tmp_path / "index.json").read_text())["complete"]
    (tmp_path / "shard-000002.tar.tmp").write_bytes(b"half a shard")  # stale temp file
    first = (tmp_path / "shard-000000.tar").read_bytes()

    calls.clear()
    write_shards(tmp_path, 7, lambda s, c: calls.append(s) or make_samples(s, c), ARGS, 2)
    assert calls == [4, 6]  # finished shards were skipped
    assert (tmp_path / "shard-000000.tar").read_bytes() == first
    assert not list(tmp_path.glob("*.tmp"))
    assert [s["key"] for s in iter_shard_samples(tmp_path)] == [f"seed-{i:09d}" for i in range(7)]
    # Same arguments again: nothing to do, deterministic bytes.
    calls.clear()
    write_shards(tmp_path, 7, lambda s, c: calls.append(s) or make_samples(s, c), ARGS, 2)
    assert calls == []


def test_mismatched_arguments_rejected(tmp_path: Path) -> None:
    write_shards(tmp_path, 2, make_samples, ARGS, 2, progress=False)
    with pytest.raises(ValueError, match=r"other arguments \(height: 24 -> 48\)"):
        write_shards(tmp_path, 2, make_samples, {**ARGS, "height": 48}, 2, progress=False)
    with pytest.raises(ValueError, match="depth_format"):
        write_shards(tmp_path, 2, make_samples, ARGS, 2, "npy", progress=False)
    with pytest.raises(ValueError, match="unknown depth format"):
        write_shards(tmp_path / "x", 2, make_samples, ARGS, 2, "exr", progress=False)


def test_batches_and_dataset(tmp_path: Path) -> None:
    write_shards(tmp_path, 5, make_samples, ARGS, 2, progress=False)
    batches = list(iter_batches(iter_shard_samples(tmp_path), 2))
    assert [len(b["caption"]) for b in batches] == [2, 2, 1]
    b = batches[0]
    assert b["image"].shape == (2, 3, 24, 32) and b["depth"].shape == (2, 1, 24, 32)
    assert b["valid_mask"].dtype == torch.bool and b["image"].min() >= -1
    ds = ShardDataset(tmp_path, batch_size=2, shuffle_buffer=3, seed=1, drop_last=True)
    keys = [k for batch in ds for k in batch["caption"]]
    assert len(keys) == 4
    loader = torch.utils.data.DataLoader(ShardDataset(tmp_path), batch_size=None, num_workers=0)
    assert len(list(loader)) == 5


def test_corrupt_shards_are_skipped(tmp_path: Path) -> None:
    write_shards(tmp_path, 4, make_samples, ARGS, 2, progress=False)
    shard = tmp_path / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated mid-sample
    ds = ShardDataset(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping bad data"):
        keys = [s["key"] for s in ds]
    assert keys[:2] == ["seed-000000000", "seed-000000001"]
    assert len(keys) < 4 and ds.stats.total >= 1


def test_prepare_procedural_and_preview(tmp_path: Path) -> None:
    pytest.importorskip("modality_forcing.data.procedural")
    from modality_forcing.data.prepare import prepare_procedural
    from modality_forcing.data.preview import write_preview

    kw = {"split": "val", "num": 3, "height": 16, "width": 24, "shard_size": 2}
    out = prepare_procedural(tmp_path / "s", sparsify="random:0.1", **kw)
    first = [s["valid_mask"] for s in iter_shard_samples(out)]
    assert len(first) == 3 and all(0 < m.mean() <= 0.11 for m in first)
    again = prepare_procedural(tmp_path / "t", sparsify="random:0.1", **kw)  # deterministic
    assert all(
        np.array_equal(a, b["valid_mask"])
        for a, b in zip(first, iter_shard_samples(again), strict=True)
    )
    png = write_preview(tmp_path / "p.png", shards=out, num=2)
    from PIL import Image

    assert Image.open(png).size[1] > 2 * 16
