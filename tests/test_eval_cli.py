"""`modality-forcing eval` end to end: predictions folders scored on a folder dataset and on the
procedural world, reports, counts and clear errors."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modality_forcing.cli import build_parser, main
from modality_forcing.data.benchmarks import BENCHMARKS, get_benchmark
from modality_forcing.data.scene_graph import FIRST_OBJECT_INSTANCE
from modality_forcing.inference.evaluate import score_predictions
from modality_forcing.metrics.alignment import PROTOCOLS


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        Image.fromarray(array).save(path)


@pytest.fixture
def folder_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three scored images (one with a constant prediction) and one without valid depth."""
    rng = np.random.default_rng(0)
    root, preds = tmp_path / "data", tmp_path / "preds"
    for key in ("a", "sub/b", "c", "empty"):
        depth = rng.uniform(1.0, 8.0, (12, 16)).astype(np.float32)
        if key == "empty":
            depth[:] = 0.0
        _write(root / "images" / f"{key}.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        _write(root / "depth" / f"{key}.npy", depth)
        pred = (depth - 0.5) / 2.0  # affine in depth: least squares recovers it exactly
        if key == "c":
            pred[:] = 1.0  # constant: degenerate for the affine fits, fine for median / none
        if key == "sub/b":  # as a 16-bit PNG in millimetres
            _write(preds / f"{key}.png", np.round(pred * 1000).astype(np.uint16))
        else:
            _write(preds / f"{key}.npy", pred)
    return root, preds


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:alignment:RuntimeWarning")  # image "c" is degenerate
def test_eval_folder_all_protocols(folder_dataset, tmp_path, capsys) -> None:
    root, preds = folder_dataset
    out = tmp_path / "out"
    code, text = _run(
        ["eval", "--predictions", str(preds), "--dataset", "folder", "--data-root", str(root),
         "--out", str(out), "--depth-range", "0.001", "10"],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    assert "| AbsRel ↓ |" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 4 and summary["skipped_keys"] == ["empty"]
    protos = summary["protocols"]
    assert list(protos) == list(PROTOCOLS)
    lsq = protos["least_squares"]
    assert (lsq["num_scored"], lsq["num_degenerate"]) == (2, 1)
    assert lsq["metrics"]["abs_rel"] < 1e-3  # PNG quantisation only
    assert lsq["metrics"]["delta1"] == 1.0
    assert (protos["median"]["num_scored"], protos["median"]["num_degenerate"]) == (3, 0)
    assert protos["none"]["metrics"]["abs_rel"] > 0.3
    with (out / "per_sample.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(PROTOCOLS)
    row = next(r for r in rows if r["key"] == "c" and r["protocol"] == "least_squares")
    assert row["degenerate"] == "True" and row["abs_rel"] == "nan"
    row = next(r for r in rows if r["key"] == "a" and r["protocol"] == "least_squares")
    assert float(row["scale"]) == pytest.approx(2.0) and float(row["shift"]) == pytest.approx(0.5)
    md = (out / "summary.md").read_text()
    assert all(name in md for name in PROTOCOLS) and "images degenerate" in md


@pytest.mark.filterwarnings("ignore:alignment:RuntimeWarning")
def test_eval_errors(folder_dataset, tmp_path, capsys) -> None:
    root, preds = folder_dataset
    base = ["eval", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "o")]
    code, err = _run([*base, "--ckpt", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "is not a checkpoint directory" in err
    code, err = _run([*base, "--predictions", str(preds), "--protocol", "bogus"], capsys)
    assert code == 2 and "unknown protocol 'bogus'; choose from" in err
    np.save(preds / "a.npy", np.ones((6, 8), np.float32))
    code, err = _run([*base, "--predictions", str(preds)], capsys)
    assert code == 2 and str(preds / "a.npy") in err and "--resize-predictions" in err
    code, _ = _run([*base, "--predictions", str(preds), "--resize-predictions"], capsys)
    assert code == 0
    (preds / "a.npy").unlink()
    code, err = _run([*base, "--predictions", str(preds)], capsys)
    assert code == 2 and "no prediction for 'a'" in err


def test_score_predictions_with_a_function_and_disparity(folder_dataset) -> None:
    root, _ = folder_dataset
    bench = get_benchmark("folder", root, depth_range=(1e-3, 10.0))

    def predict(sample: dict) -> np.ndarray:
        depth = sample["depth"]
        return np.where(depth > 0, 3.0 / np.maximum(depth, 1e-6) + 0.2, 0.0)

    summary = score_predictions(
        bench, predict, "all", prediction_space="disparity", limit=2, progress=False
    )
    assert summary.protocols == ["least_squares_disparity"]
    assert summary.num_samples == 2
    assert summary.metrics["least_squares_disparity"]["abs_rel"] < 1e-6


def test_help_lists_every_benchmark_and_protocol() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["eval"].format_help()
    assert all(name in text for name in [*BENCHMARKS, *PROTOCOLS])


@pytest.mark.skipif(
    importlib.util.find_spec("modality_forcing.data.procedural") is None,
    reason="procedural world not available",
)
def test_eval_procedural_with_prediction_files(tmp_path, capsys) -> None:
    preds = tmp_path / "preds"
    for sample in get_benchmark("procedural", None, num=4, height=24, width=32):
        _write(preds / f"{sample['key']}.npy", sample["depth"] * 0.25)  # scale only
    out = tmp_path / "out"
    code, text = _run(
        ["eval", "--predictions", str(preds), "--dataset", "procedural", "--limit", "4",
         "--size", "24x32", "--protocol", "median", "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth_range"] == [0.001, 30.0]
    assert summary["protocols"]["median"]["num_scored"] == 4
    assert summary["protocols"]["median"]["metrics"]["abs_rel"] < 1e-6


def test_procedural_scenes_are_also_scored_on_their_object_pixels(tmp_path, folder_dataset):
    """Scenes with an instance map get `object_abs_rel` (per image in the CSV, a mean over the
    images showing objects in the summary); a dataset without instance maps gets no column."""
    scenes = list(get_benchmark("procedural", None, num=6, height=24, width=32))
    objects = {s["key"]: (s["instance"] >= FIRST_OBJECT_INSTANCE) & s["valid_mask"]
               for s in scenes}  # fmt: skip
    assert any(o.any() for o in objects.values())

    def predict(sample: dict) -> np.ndarray:  # exact except 50% too far on object pixels
        return np.where(objects[sample["key"]], 1.5, 1.0) * sample["depth"]

    summary = score_predictions(scenes, predict, "none", (1e-3, 30.0), tmp_path / "out",
                                progress=False)  # fmt: skip
    metrics = summary.metrics["none"]
    assert metrics["object_abs_rel"] == pytest.approx(0.5)
    fractions = [objects[s["key"]].sum() / s["valid_mask"].sum() for s in scenes]
    assert metrics["abs_rel"] == pytest.approx(0.5 * np.mean(fractions))
    with (tmp_path / "out" / "per_sample.csv").open(newline="") as f:
        rows = {r["key"]: float(r["object_abs_rel"]) for r in csv.DictReader(f)}
    for key, o in objects.items():  # NaN for a scene without a visible object
        assert rows[key] == pytest.approx(0.5) if o.any() else np.isnan(rows[key])
    assert "AbsRel on objects" in (tmp_path / "out" / "summary.md").read_text()
    root, _ = folder_dataset
    plain = score_predictions(get_benchmark("folder", root, depth_range=(1e-3, 10.0)),
                              lambda s: s["depth"], "none", progress=False)  # fmt: skip
    assert "object_abs_rel" not in plain.metrics["none"]


def test_eval_from_a_checkpoint_on_procedural(tmp_path, capsys) -> None:
    """Train a tiny model for a few steps, then score its image -> depth on procedural scenes."""
    from modality_forcing.config import resolve_train_config
    from modality_forcing.training.loop import train

    cfg = resolve_train_config(
        {"preset": "tiny", "out_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 2,
         "precision": "fp32", "sample_every": 0, "data": {"height": 16, "width": 16}}
    )  # fmt: skip
    ckpt = train(cfg)
    out = tmp_path / "eval"
    args = ["eval", "--ckpt", str(ckpt), "--dataset", "procedural", "--limit", "3",
            "--size", "24x32", "--steps", "2", "--ensemble", "2", "--out", str(out),
            "--protocol", "least_squares"]  # fmt: skip
    code, _ = _run(args, capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 3
    abs_rel = summary["protocols"]["least_squares"]["metrics"]["abs_rel"]
    assert np.isfinite(abs_rel) and 0 <= abs_rel < 10


def test_export_inputs_then_score_another_methods_predictions(tmp_path, capsys) -> None:
    from PIL import Image

    inputs = tmp_path / "inputs"
    code, text = _run(
        ["eval", "--export-inputs", str(inputs), "--dataset", "procedural", "--limit", "3",
         "--size", "24x32"],
        capsys,
    )  # fmt: skip
    assert code == 0 and "wrote 3 input images" in text, text
    manifest = json.loads((inputs / "inputs.json").read_text())
    assert manifest["num"] == 3 and all(v == [24, 32] for v in manifest["sizes"].values())
    bench = list(get_benchmark("procedural", None, num=3, height=24, width=32))
    for sample in bench:  # the inputs are the benchmark's images, under its keys
        with Image.open(inputs / f"{sample['key']}.png") as png:
            assert np.array_equal(np.asarray(png), np.asarray(sample["image"]))
        _write(inputs / f"{sample['key']}.npy", np.asarray(sample["depth"]) * 3)  # "a method"
    code, text = _run(
        ["eval", "--predictions", str(inputs), "--dataset", "procedural", "--limit", "3",
         "--size", "24x32", "--protocol", "median", "--out", str(tmp_path / "out")],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["protocols"]["median"]["num_scored"] == 3
