"""The command line: every subcommand's help, the README's main job, presets and plots."""

import subprocess
import sys

import numpy as np
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


def _choices(parser, *path):
    """Choices of option path[-1] of subcommand path[:-1] (e.g. "bench", "paper", "--budget")."""
    for name in path[:-1]:
        parser = next(a for a in parser._actions if hasattr(a, "choices") and a.choices
                      and name in a.choices).choices[name]  # fmt: skip
    return set(next(a for a in parser._actions if path[-1] in a.option_strings).choices)


def test_cli_choices_match_the_registries():
    from modality_forcing.backbones import BACKBONES
    from modality_forcing.bench import depth, paper, peer, sparse
    from modality_forcing.data.letterbox import FRAMES
    from modality_forcing.inference.pipeline import FORMAT_LOADERS
    from modality_forcing.model.factory import MODEL_FAMILIES
    from modality_forcing.sampling.config import FRAMES as SAMPLING_FRAMES
    from modality_forcing.sampling.config import MODES

    parser = build_parser()
    trainable = set(MODEL_FAMILIES) - {"official"}  # a release is loaded, not trained
    assert _choices(parser, "train", "--backbone") == trainable == {"native", *BACKBONES} - {
        "official"}  # fmt: skip
    assert _choices(parser, "sample", "--mode") == set(MODES)
    assert _choices(parser, "sample", "--format") == set(FORMAT_LOADERS)
    assert _choices(parser, "eval", "--frame") == set(FRAMES) == set(SAMPLING_FRAMES)
    for suite, module in (("sparse", sparse), ("depth", depth), ("paper", paper)):
        assert _choices(parser, "bench", suite, "--budget") == set(module.BUDGETS)
    assert _choices(parser, "bench", "throughput", "--vs") == set(peer.PEERS)


def test_bench_suites_take_only_their_own_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "paper", "--presets", "cpu-s"])  # a throughput flag
    assert exit_info.value.code == 2 and "--presets" in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "flagship", "--run", "r"])
    assert (args.out, args.num_eval) == ("bench_out/flagship", 64)
    args = build_parser().parse_args(["bench", "throughput", "--debug"])
    assert args.out == "bench_out/throughput.json" and args.debug


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
    from modality_forcing.training.loop import train

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


def test_train_fork_from_continues_a_run_in_a_new_folder(tmp_path, capsys):
    import json

    base = ["train", "--precision", "fp32", "--set", "preset=tiny", "batch_size=2",
            "data.height=16", "data.width=16", "data.shadows=false", "sample_every=0",
            "log_every=1", "ckpt_every=100"]  # fmt: skip
    main([*base, "max_steps=2", "--out", str(tmp_path / "a")])
    fork = [*base, "max_steps=3", "loss.object_weight=3", "--out", str(tmp_path / "b"),
            "--fork-from", str(tmp_path / "a")]  # fmt: skip
    main(fork)
    assert "forked" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]  # the parent's log, then the fork's own step
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("step_*")) == [
        "step_0000002"
    ]
    main(fork)  # run again: resumes the fork (already at max_steps), no second copy
    assert "forked" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "c"), "--fork-from", str(tmp_path / "none")])
    assert "has no checkpoint" in capsys.readouterr().err


def test_version_and_sample_with_the_shipped_checkpoint(tmp_path, capsys):
    from modality_forcing import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip().endswith(__version__)
    main(["sample", "--mode", "joint", "--prompt", "a red sphere", "--steps", "1",
          "--precision", "fp32", "--out", str(tmp_path)])  # fmt: skip
    assert (tmp_path / "index.html").is_file() and "gallery:" in capsys.readouterr().out
    assert {"rgb.png", "depth.npy", "cloud.glb"} <= {p.name for p in tmp_path.glob("*/*")}
    few = tmp_path / "few"
    main(["sample", "--prompt", "a red sphere", "--steps", "1", "--precision", "fp32",
          "--outputs", "depth,color", "--out", str(few)])  # fmt: skip
    written = {p.name for p in next(few.glob("*/")).iterdir()}
    assert written == {"depth.npy", "depth_color.png", "metadata.json"}
    with pytest.raises(SystemExit):
        main(["sample", "--outputs", "depth,obj", "--out", str(few)])
    assert "unknown output(s) ['obj']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--format", "official", "--out", str(tmp_path)])
    assert "--format official needs --ckpt" in capsys.readouterr().err


def test_sample_reads_a_folder_and_with_recursive_its_subfolders(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(photos / "a.png")
    Image.fromarray(rgb).save(photos / "trip" / "a.webp")  # same name, another folder
    args = ["sample", "--mode", "image_to_depth", "--image", str(photos), "--precision", "fp32",
            "--outputs", "depth"]  # fmt: skip
    main([*args, "--out", str(tmp_path / "flat")])
    assert len([p for p in (tmp_path / "flat").iterdir() if p.is_dir()]) == 1
    main([*args, "--recursive", "--out", str(tmp_path / "deep")])
    names = sorted(p.name for p in (tmp_path / "deep").iterdir() if p.is_dir())
    assert len(names) == 2 and any("trip_a" in n for n in names), names
    assert all((tmp_path / "deep" / n / "depth.npy").is_file() for n in names)
