"""Fidelity metrics (`metrics/fidelity.py`, the shipped attribute probe): real renders score high,
noise and constant images score at chance, the trivial prior has skill 0."""

from __future__ import annotations

import numpy as np
import pytest

from modality_forcing.data.attributes import (
    COLOURS,
    SINGLE,
    palette_references,
    region_colours,
    stack_attributes,
)
from modality_forcing.data.procedural import SceneConfig, render_split
from modality_forcing.metrics.fidelity import (
    above_chance,
    attribute_scores,
    constant_prediction,
    frechet_distance,
    region_colour_scores,
    skill,
    summarise_regions,
)
from modality_forcing.metrics.probe import PROBE_DIR, load_probe, read_attributes

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = SceneConfig(32, 32)


@pytest.fixture(scope="module")
def scenes():
    return render_split("val", 0, 24, CFG)


@pytest.fixture(scope="module")
def references(scenes):  # each scene's regions re-rendered in every palette colour (made once)
    return [palette_references(s, CFG) for s in scenes]


def _region_summary(scenes, references, image_of) -> dict:
    records = []
    for i, (s, refs) in enumerate(zip(scenes, references, strict=True)):
        named = {k: COLOURS.index(c) for k, c in region_colours(s["scene"]).items()}
        records += region_colour_scores(image_of(i, s), s["instance"], refs, named)
    return summarise_regions(records)


def test_real_renders_get_every_region_colour_right(scenes, references):
    summary = _region_summary(scenes, references, lambda i, s: s["image"])
    assert summary["all"]["accuracy"] == 1.0 and summary["all"]["regions"] > 50
    assert summary["all"]["colour_error"] == pytest.approx(0.0, abs=1e-6)
    assert summary["floor"]["regions"] == len(scenes)


def test_constant_noise_and_swapped_images_score_near_chance(scenes, references):
    rng = np.random.default_rng(0)
    flat = _region_summary(scenes, references, lambda i, s: np.full_like(s["image"], 128))
    noise = _region_summary(
        scenes, references, lambda i, s: rng.integers(0, 256, s["image"].shape, dtype=np.uint8)
    )
    swapped = _region_summary(
        scenes, references, lambda i, s: scenes[(i + 1) % len(scenes)]["image"]
    )
    for summary in (flat, noise, swapped):  # chance is 1 / 12 per region
        assert summary["all"]["accuracy"] < 0.25
        assert summary["all"]["colour_error"] > 0.1


def test_skill_is_zero_for_the_prior_and_one_for_perfect():
    assert skill(0.25, 0.25) == 0.0 and skill(0.0, 0.25) == 1.0
    assert skill(0.125, 0.25) == pytest.approx(0.5)


def test_attribute_scores_accuracy_and_jaccard():
    labels = {"floor": np.array([0, 1, 2]), "colours": np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])}
    predicted = {
        "floor": np.eye(3)[[0, 1, 0]],  # 2 of 3 right
        "colours": np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.1], [0.0, 0.0, 0.0]]),  # 1/2, 1, 1
    }
    scores = attribute_scores(predicted, labels)
    assert scores["floor"] == pytest.approx(2 / 3)
    assert scores["colours"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["mean"] == pytest.approx((2 / 3 + 2.5 / 3) / 2)


def test_constant_prediction_is_the_majority_answer():
    labels = {"floor": np.array([2, 2, 1, 0]), "shapes": np.array([[1, 0], [1, 1], [1, 0], [0, 0]])}
    const = constant_prediction(labels)
    assert (const["floor"].argmax(1) == 2).all()
    np.testing.assert_allclose(const["shapes"][0], [0.75, 0.25])
    chance = attribute_scores(const, labels)
    assert chance["floor"] == 0.5 and chance["shapes"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert above_chance(0.5, 1.0, 0.5) == 0.0 and above_chance(0.75, 1.0, 0.5) == 0.5


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    a = np.random.default_rng(0).normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(16.0, rel=1e-6)  # |shift|^2 = 4 x 2^2
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, a[:, :3])


def test_shipped_probe_reads_real_renders_and_not_noise():
    probe, meta = load_probe()
    assert (PROBE_DIR / "model.safetensors").stat().st_size < 2 * 2**20  # under 2 MB
    assert meta["val_accuracy"]["mean"] > 0.6  # its own report, from `bench probe`
    samples = render_split("test", 0, 200, CFG)
    labels = stack_attributes([s["scene"] for s in samples])
    real = attribute_scores(read_attributes(probe, np.stack([s["image"] for s in samples]))[0],
                            labels)  # fmt: skip
    assert real["mean"] > 0.6 and real["floor"] > 0.8
    chance = attribute_scores(constant_prediction(labels), labels)  # best image-blind answer
    assert above_chance(real["mean"], real["mean"], chance["mean"]) == 1.0
    rng = np.random.default_rng(0)
    for fake in (np.full((200, 32, 32, 3), 128, np.uint8),
                 rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)):  # fmt: skip
        scores = attribute_scores(read_attributes(probe, fake)[0], labels)
        for k in (*SINGLE, "mean"):
            assert scores[k] <= chance[k] + 0.1, (k, scores[k], chance[k])
        assert above_chance(scores["mean"], real["mean"], chance["mean"]) < 0.3


def test_probe_features_separate_real_from_noise():
    probe, _ = load_probe()
    a = np.stack([s["image"] for s in render_split("test", 0, 100, CFG)])
    b = np.stack([s["image"] for s in render_split("test", 100, 100, CFG)])
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    fa, fb, fn = (read_attributes(probe, x)[1] for x in (a, b, noise))
    assert frechet_distance(fa, fn) > 5 * frechet_distance(fa, fb)


def test_bench_probe_trains_saves_and_loads_a_probe(tmp_path, capsys):
    from modality_forcing.bench.probe import train_probe

    info = train_probe(tmp_path, num_train=24, num_val=8, steps=3, batch=8, width=8)
    probe, meta = load_probe(tmp_path)
    assert meta["steps"] == 3 and meta["num_train"] == 24 and probe.width == 8
    assert set(meta["val_accuracy"]) == set(info["val_accuracy"])
    assert "bench probe: training steps: 100%" in capsys.readouterr().err
