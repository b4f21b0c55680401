"""The demo end to end on a tiny checkpoint trained in the test (the main job, fast variant)."""

import json

import numpy as np
import pytest
from PIL import Image

from modality_forcing.cli import main
from modality_forcing.config import resolve_train_config
from modality_forcing.demo import DemoConfig, demo_checkpoint, run_demo
from modality_forcing.train import train


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = resolve_train_config(
        {"preset": "tiny", "out_dir": str(run), "batch_size": 4, "max_steps": 2,
         "precision": "fp32", "sample_every": 0, "data": {"height": 16, "width": 16}}
    )  # fmt: skip
    final = train(cfg)
    main(["export-checkpoint", str(final), "--out", str(run / "export")])
    return run / "export"


def test_demo_runs_every_mode_and_scores(tiny_ckpt, tmp_path, monkeypatch):
    cfg = DemoConfig(num_prompts=2, num_images=2, num_eval=3, steps=2, ensemble=2)
    monkeypatch.chdir(tmp_path)  # a relative output folder, as users type it
    result = run_demo(tiny_ckpt, "demo", cfg)
    assert 0 <= result["image_to_depth"]["abs_rel"] < 10
    assert 0 <= result["image_to_depth"]["delta1"] <= 1
    folders = sorted(p.name for p in (tmp_path / "demo").iterdir() if p.is_dir())
    assert folders == ["d2i_0", "d2i_1", "eval", "i2d_0", "i2d_1", "joint_0", "joint_1"]
    for name in ["joint_0", "i2d_0"]:
        assert (tmp_path / "demo" / name / "cloud.glb").is_file()
    assert (tmp_path / "demo" / "i2d_0" / "uncertainty.png").is_file()
    sheet = np.asarray(Image.open(tmp_path / "demo" / "contact_sheet.png").convert("L"))
    assert sheet.std() > 20  # real tiles, not blank placeholders
    html = (tmp_path / "demo" / "index.html").read_text()
    assert "joint_0/rgb.png" in html and "d2i_1" in html
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["resolution"] == [16, 16]


def test_demo_cli_and_missing_checkpoint(tiny_ckpt, tmp_path, capsys):
    main(["demo", "--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "d"), "--num-eval", "2",
          "--steps", "1", "--ensemble", "1"])  # fmt: skip
    assert "AbsRel" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="modality-forcing train --config"):
        demo_checkpoint(tmp_path / "nothing")
