"""The dataset mixture: sampling frequencies match the weights, every draw depends on the global
sample index alone, samples are fitted to the training size, and the config round-trips."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from modality_forcing.config import MixtureEntry, resolve_train_config, to_dict
from modality_forcing.data.stream import make_source
from modality_forcing.data.training_sets.mixture import SPARSE_CROP, Mixture

PROC = {"name": "procedural"}


def test_frequencies_match_weights():
    weights = [0.5, 0.3, 0.2, 0.0]
    mix = Mixture([{**PROC, "weight": w} for w in weights], 16, 16)
    n = 20_000
    counts = np.bincount([mix.choose(i)[0] for i in range(n)], minlength=len(weights))
    for p, c in zip(weights, counts, strict=True):
        sigma = math.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(c / n - p) < 4 * sigma + 1e-12  # a zero weight is never drawn
    items = [mix.choose(i)[1] for i in range(200)]
    assert len(set(items)) == 200  # items drawn with replacement from 900M scenes: no repeats


def test_draws_depend_on_the_index_alone():
    entries = [{**PROC, "weight": 1.0}, {**PROC, "weight": 1.0, "sparsify": "random:0.1"}]
    a, b = Mixture(entries, 16, 16, shadows=False), Mixture(entries, 16, 16, shadows=False)
    order = [7, 3, 11, 3]
    first = [a.sample(i) for i in order]
    second = [b.sample(i) for i in reversed(order)][::-1]
    for s, t in zip(first, second, strict=True):
        assert np.array_equal(s["image"], t["image"]) and np.array_equal(s["depth"], t["depth"])
        assert np.array_equal(s["valid_mask"], t["valid_mask"]) and s["sparse"] == t["sparse"]
    assert {a.choose(i)[0] for i in range(20)} == {0, 1}
    sparse = [a.sample(i) for i in range(20) if a.choose(i)[0] == 1]
    # ~10% of pixels; the sparse member's default crop resamples them, so a margin
    assert all(s["sparse"] and s["valid_mask"].mean() <= 0.2 for s in sparse)


def test_source_is_rank_exact_and_fits_file_sets(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):  # a generic points set of 24 x 40 images
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        uv = rng.uniform(0, [40, 24], (30, 2))
        np.savez(tmp_path / f"{i}.npz", uv=uv, depth=rng.uniform(1, 5, 30))
    data = {"source": "mixture", "height": 16, "width": 16, "shadows": False, "mixture": [
        {"name": "points", "root": str(tmp_path), "weight": 1.0, "kind": "sparse"},
        {"name": "procedural", "weight": 1.0},
    ]}  # fmt: skip
    cfg = resolve_train_config({"data": data}).data
    assert isinstance(cfg.mixture[0], MixtureEntry)
    whole = make_source(cfg, global_batch=8, micro_batch=8).get(step=2, micro=0)
    assert whole["image"].shape == (8, 3, 16, 16) and whole["valid_mask"].shape == (8, 1, 16, 16)
    for rank in (0, 1):  # 2 ranks x 2 micro-batches of 2: the same 8 samples, rank-sliced
        src = make_source(cfg, global_batch=8, micro_batch=2, rank=rank, world=2)
        for micro in (0, 1):
            part = src.get(step=2, micro=micro)
            start = (micro * 2 + rank) * 2
            assert torch.equal(part["depth"], whole["depth"][start : start + 2])
    assert src.state() == {}


def test_bad_mixtures_raise(tmp_path):
    with pytest.raises(ValueError, match="lists no entries"):
        Mixture([], 16, 16)
    with pytest.raises(ValueError, match="weights sum to 0"):
        Mixture([{**PROC, "weight": 0.0}], 16, 16)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        Mixture([{**PROC, "weight": -1.0}], 16, 16)
    with pytest.raises(ValueError, match="says kind 'dense'"):
        Mixture([{**PROC, "kind": "dense", "sparsify": "lidar:32"}], 16, 16)
    with pytest.raises(ValueError, match="unknown mixture kind"):
        Mixture([{**PROC, "kind": "semi"}], 16, 16)
    with pytest.raises(ValueError, match="unknown training set"):
        Mixture([{"name": "nyu", "root": str(tmp_path)}], 16, 16)
    with pytest.raises(ValueError, match="unknown field"):
        Mixture([{**PROC, "wieght": 1.0}], 16, 16)
    with pytest.raises(ValueError, match="unknown data source 'mix'"):
        make_source(resolve_train_config({"data": {"source": "mix"}}).data, 4, 4)


def test_mixture_config_round_trips_through_yaml(tmp_path):
    import yaml

    from modality_forcing.config import load_train_config, save_yaml

    data = {"source": "mixture", "depth_fill": "noise", "mixture": [
        {"name": "kitti_depth", "root": "/data/kitti", "weight": 0.5,
         "options": {"raw_root": "/data/raw", "layer": "velodyne_raw"}},
        {"name": "procedural", "weight": 0.5, "sparsify": "lidar:32"},
    ]}  # fmt: skip
    cfg = resolve_train_config({"data": data})
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_train_config(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert again.data.mixture[0].options["layer"] == "velodyne_raw"
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["depth_fill"] == "noise"


def test_procedural_num_scenes_cycles_a_finite_training_set():
    data = resolve_train_config({"data": {"height": 16, "width": 16, "num_scenes": 3}}).data
    batch = make_source(data, global_batch=8, micro_batch=8).get(step=0, micro=0)
    unlimited = make_source(resolve_train_config({"data": {"height": 16, "width": 16}}).data, 8, 8)
    first = unlimited.get(step=0, micro=0)
    for i in range(8):  # sample i is training scene i mod 3
        assert torch.equal(batch["image"][i], first["image"][i % 3])
    assert not torch.equal(first["image"][3], first["image"][0])
    bad = resolve_train_config({"data": {"num_scenes": 0}}).data
    with pytest.raises(ValueError, match="num_scenes"):
        make_source(bad, 4, 4).get(0, 0)


def test_crop_moves_the_lidar_band_around_the_frame():
    """A LiDAR only sees an elevation band; with `crop` its rows land anywhere in the training
    frame (here: the bottom rows get depth), and every draw still depends on the index alone."""
    member = {**PROC, "sparsify": "lidar:32", "options": {"height": 64, "width": 64}}

    def bottom_row_measured(mix: Mixture) -> float:
        return float(np.mean([mix.sample(i)["valid_mask"][-1].any() for i in range(40)]))

    plain = Mixture([{**member, "crop": 1.0}], 16, 16, shadows=False)
    cropped = Mixture([{**member, "crop": 0.5}], 16, 16, shadows=False)
    assert bottom_row_measured(plain) < 0.05 and bottom_row_measured(cropped) > 0.1
    # the default: sparse members are cropped (SPARSE_CROP), dense ones are not
    default = Mixture([member, {**PROC, "options": member["options"]}], 16, 16, shadows=False)
    assert [m.crop for m in default.members] == [SPARSE_CROP, 1.0]
    i = next(i for i in range(20) if default.choose(i)[0] == 0)
    explicit = Mixture([{**member, "crop": SPARSE_CROP}], 16, 16, shadows=False)
    assert np.array_equal(default.sample(i)["depth"], explicit.sample(i)["depth"])
    again = Mixture([{**member, "crop": 0.5}], 16, 16, shadows=False)
    for i in (5, 2):
        a, b = cropped.sample(i), again.sample(i)
        assert np.array_equal(a["depth"], b["depth"]) and np.array_equal(a["image"], b["image"])
    with pytest.raises(ValueError, match=r"crop must be in \(0, 1\]"):
        Mixture([{**member, "crop": 1.5}], 16, 16)
