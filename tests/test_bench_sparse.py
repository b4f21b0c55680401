"""`modality-forcing bench sparse --budget tiny` runs end to end: trains each (setting, fill) at
equal compute, scores image -> depth, prints the table, writes JSON, and resumes finished runs."""

import json

import numpy as np
import pytest

from modality_forcing.bench.sparse import _per_image_abs_rel, setting_data
from modality_forcing.cli import main
from modality_forcing.data.benchmarks import get_benchmark


def test_tiny_sparse_bench_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sparse"
    args = ["bench", "sparse", "--budget", "tiny", "--out", str(out), "--sensor-scale", "2",
            "--settings", "dense", "lidar:32", "mixed", "--fills", "neutral", "noise"]  # fmt: skip
    main(args)
    captured = capsys.readouterr()
    printed = captured.out
    assert "bench sparse: runs: 100%" in captured.err and "| 6/6 " in captured.err
    assert "| setting | fill | steps |" in printed and "lowest: **" in printed
    report = json.loads((out / "sparse.json").read_text())
    rows = report["rows"]
    assert [(r["setting"], r["fill"]) for r in rows] == [
        (s, f) for f in ("neutral", "noise") for s in ("dense", "lidar:32", "mixed")
    ]
    assert all(r["steps"] == report["budget"]["steps"] == 4 for r in rows)  # equal compute
    assert all(0 <= r["abs_rel"] < 10 and 0 <= r["delta1"] <= 1 for r in rows)
    # the LiDAR-band score uses a subset of the test pixels (the KITTI-crop analogue)
    assert all(0 <= r["abs_rel_in_band"] < 10 and 0 <= r["delta1_in_band"] <= 1 for r in rows)
    assert all(0 < r["num_scored_in_band"] <= r["num_scored"] for r in rows)
    assert "in band" in printed
    for r in rows:  # each gap to dense comes with its paired bootstrap interval over the scenes
        if r["setting"] != "dense":
            ci = r["abs_rel_vs_dense_ci"]
            assert ci["low"] <= ci["ratio"] <= ci["high"] and ci["num_images"] > 0
    dense = {r["fill"]: r for r in rows if r["setting"] == "dense"}
    for r in rows:
        assert r["abs_rel_vs_dense"] == pytest.approx(
            r["abs_rel"] / dense[r["fill"]]["abs_rel"] - 1
        )
    assert rows[1]["depth_density"] < rows[0]["depth_density"]  # lidar is sparser than dense
    assert report["summary"]["best_fill"] in ("neutral", "noise")
    assert report["budget"]["sensor_scale"] == 2  # rendered at 32x32, fitted to 16x16
    # the mean training depth map scored on the same scenes, and every run's skill over it
    prior = report["prior"]
    assert 0 < prior["abs_rel"] < 10 and 0 < prior["abs_rel_in_band"] < 10
    for r in rows:
        assert r["skill"] == pytest.approx(1 - r["abs_rel"] / prior["abs_rel"])
        assert r["skill_in_band"] == pytest.approx(
            1 - r["abs_rel_in_band"] / prior["abs_rel_in_band"]
        )
        # object pixels: their own AbsRel and skill, the prior scored on the same pixels
        for part in ("", "_in_band"):
            assert r[f"object_skill{part}"] == pytest.approx(
                1 - r[f"object_abs_rel{part}"] / prior[f"object_abs_rel{part}"]
            )
    assert "objects: AbsRel" in printed
    assert f"the mean training depth map for every scene (AbsRel {prior['abs_rel']:.4f}" in printed

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("modality_forcing.training.loop.train", no_training)
    main(args)  # every run has a result.json with the same config: reused
    assert json.loads((out / "sparse.json").read_text())["rows"] == rows
    # another bench's folder holds the same run: used from there and scored here
    again = tmp_path / "again"
    main(["bench", "sparse", "--budget", "tiny", "--out", str(again), "--sensor-scale", "2",
          "--settings", "dense", "--fills", "noise", "--reuse-runs", str(out)])  # fmt: skip
    (row,) = json.loads((again / "sparse.json").read_text())["rows"]
    assert (
        row["reused_from"] == str(out / "dense-noise")
        and row["abs_rel"] == dense["noise"]["abs_rel"]
    )
    assert "dense (noise) from" in capsys.readouterr().out


def test_summary_says_n_a_for_mixed_when_no_mixed_run():
    from modality_forcing.bench.sparse import summarise

    rows = [{"setting": "dense", "fill": "neutral", "abs_rel": 0.2},
            {"setting": "lidar:32", "fill": "neutral", "abs_rel": 0.25}]  # fmt: skip
    verdict = summarise(rows)["verdicts"]["neutral"]
    assert verdict["mixed_at_least_dense"] is None
    assert verdict["worst_sparse_gap"] == pytest.approx(0.25)
    assert not verdict["sparse_within_target"]
    only_dense = summarise([rows[0]])["verdicts"]["neutral"]  # nothing sparse: no vacuous "met"
    assert only_dense["sparse_within_target"] is None and only_dense["worst_sparse_gap"] is None


def test_bad_setting_or_budget_is_rejected(capsys):
    with pytest.raises(ValueError, match="unknown sparsifier 'sonar'"):
        setting_data("sonar:4")
    with pytest.raises(SystemExit):
        main(["bench", "sparse", "--budget", "huge"])
    with pytest.raises(SystemExit):  # before any training, with the reason on stderr
        main(["bench", "sparse", "--budget", "tiny", "--crop", "1.5"])
    assert "--crop must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_val_split_and_crop_are_kept_apart_from_the_test_report(tmp_path):
    out = tmp_path / "sparse"
    main(["bench", "sparse", "--budget", "tiny", "--out", str(out), "--settings", "lidar:32",
          "--fills", "neutral", "--crop", "0.5", "--split", "val"])  # fmt: skip
    report = json.loads((out / "sparse_val.json").read_text())
    assert report["split"] == "val" and report["budget"]["crop"] == 0.5
    assert not (out / "sparse.json").exists()  # the test report is only written for --split test
    run = out / "lidar_32-neutral"
    assert (run / "result_val.json").is_file() and (run / "eval_val" / "per_sample.csv").is_file()
    result = json.loads((run / "result_val.json").read_text())
    assert result["split"] == "val"
    assert [m["crop"] for m in result["config"]["data"]["mixture"]] == [0.5]
    scored = set(_per_image_abs_rel(run / "eval_val"))
    val = get_benchmark("procedural", None, split="val", num=4, height=16, width=16)
    assert scored == {s["key"] for s in val}  # scored on the validation scenes


def test_dense_members_can_come_from_another_domain():
    from modality_forcing.data.training_sets.mixture import SPARSE_CROP, Mixture

    data = setting_data("mixed", (32, 32), dense_scene={"shadows": False})
    dense, sparse = data["mixture"]
    assert dense["options"]["scene"] == {"shadows": False} and "scene" not in sparse["options"]
    assert "crop" not in dense and sparse["crop"] == SPARSE_CROP
    mix = Mixture(data["mixture"], 32, 32)
    assert [m.data.scene.shadows for m in mix.members] == [False, True]
    i = next(i for i in range(20) if mix.choose(i)[0] == 0)
    shadowed = Mixture(setting_data("mixed", (32, 32))["mixture"], 32, 32).sample(i)
    unshadowed = mix.sample(i)  # the same scene, rendered without cast shadows: never brighter
    assert np.array_equal(unshadowed["depth"], shadowed["depth"])
    assert (unshadowed["image"].astype(int) >= shadowed["image"].astype(int)).all()
    assert (unshadowed["image"] != shadowed["image"]).any()


def test_unknown_scene_option_is_named():
    from modality_forcing.data.training_sets import get_training_set

    with pytest.raises(ValueError, match=r"unknown scene option\(s\) \['walls'\]; choose from"):
        get_training_set("procedural", None, scene={"walls": 0})
    world = get_training_set("procedural", None, height=16, width=16,
                             scene={"back_wall_prob": 0.0, "max_objects": 2})  # fmt: skip
    assert world.scene.back_wall_prob == 0.0 and world.scene.max_objects == 2
