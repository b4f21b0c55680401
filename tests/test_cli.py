"""The command line: every subcommand's help, the README's main job, presets and plots."""

import subprocess
import sys

import pytest
from PIL import Image

from modality_forcing.cli import build_parser, main
from modality_forcing.config import MODEL_PRESETS

SUBCOMMANDS = ["prepare-data", "preview", "bench", "eval", "train", "presets", "plot"]


def test_every_subcommand_has_help(capsys):
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert set(SUBCOMMANDS) <= names
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: modality-forcing " + name in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "modality_forcing", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "prepare-data" in out.stdout


def test_readme_main_job_prepare_then_preview(tmp_path, capsys):
    shards = tmp_path / "val"
    main(["prepare-data", "procedural", "--split", "val", "--num", "6", "--size", "32",
          "--out", str(shards), "--shard-size", "4"])  # fmt: skip
    assert len(list(shards.glob("*.tar"))) == 2 and (shards / "index.json").is_file()
    png = tmp_path / "preview.png"
    main(["preview", "--shards", str(shards), "--num", "3", "--out", str(png)])
    assert Image.open(png).size[1] > 3 * 32


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-data", "procedural", "--num", "2", "--size", "3x", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "must be N or HxW" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare-data", "procedural", "--num", "2", "--out", str(tmp_path),
              "--sparsify", "radar:3"])  # fmt: skip
    assert "unknown sparsifier 'radar'" in capsys.readouterr().err


def test_presets_table_lists_every_preset(capsys):
    main(["presets"])
    out = capsys.readouterr().out
    assert all(f"| {name} |" in out for name in MODEL_PRESETS)
    assert "368.5M" in out and "1,000.3M" in out and "3,342.8M" in out


def test_plot_reads_a_run(tmp_path, capsys):
    from modality_forcing.config import resolve_train_config
    from modality_forcing.train import train

    run = tmp_path / "run"
    cfg = resolve_train_config(
        {"preset": "tiny", "out_dir": str(run), "batch_size": 2, "max_steps": 2, "log_every": 1,
         "precision": "fp32", "sample_every": 0, "data": {"height": 16, "width": 16}}
    )  # fmt: skip
    train(cfg)
    main(["plot", str(run), "--out", str(tmp_path / "loss.png")])
    assert Image.open(tmp_path / "loss.png").size[0] > 100
    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path / "nope")])
    assert "has no metrics.jsonl" in capsys.readouterr().err
