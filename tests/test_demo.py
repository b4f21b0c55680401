"""The demo end to end on a tiny checkpoint trained in the test (the main job, fast variant)."""

import json

import numpy as np
import pytest
from PIL import Image

from modality_forcing.cli import main
from modality_forcing.config import resolve_train_config
from modality_forcing.demo import DemoConfig, demo_checkpoint, run_demo
from modality_forcing.sampling.config import SamplingConfig
from modality_forcing.training.loop import train


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
    cfg = DemoConfig(num_prompts=2, num_images=2, num_eval=3, num_generate=2,
                     generation=SamplingConfig(steps=2),
                     gallery_depth=SamplingConfig(steps=2, ensemble=2))  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a relative output folder, as users type it
    result = run_demo(tiny_ckpt, "demo", cfg)
    i2d = result["image_to_depth"]
    assert 0 <= i2d["abs_rel"] < 10 and 0 <= i2d["delta1"] <= 1 and i2d["num_scenes"] == 3
    assert i2d["skill"] == pytest.approx(1 - i2d["abs_rel"] / i2d["prior_abs_rel"])
    assert 0 <= result["depth_to_image"]["floor"]["accuracy"] <= 1
    assert result["depth_to_image"]["floor"]["regions"] == 2  # one floor per scene
    t2i = result["text_to_image"]
    assert 0 <= t2i["attributes"]["mean"] <= 1 and t2i["real_attributes"]["mean"] > 0.5
    assert result["joint_consistency_abs_rel"] >= 0
    folders = sorted(p.name for p in (tmp_path / "demo").iterdir() if p.is_dir())
    assert folders == ["d2i_0", "d2i_1", "i2d_0", "i2d_1", "joint_0", "joint_1"]
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
          "--num-generate", "2", "--steps", "1", "--ensemble", "1"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    for start in ("image->depth skill: ", "depth->image region colour accuracy: floor ",
                  "text->image attribute accuracy: ", "joint consistency "):  # fmt: skip
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    with pytest.raises(FileNotFoundError, match="modality-forcing train --config"):
        demo_checkpoint(tmp_path / "nothing")
