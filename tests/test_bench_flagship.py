"""`bench flagship` on the tiny smoke recipe: both stages train by wall time, every checkpoint is
scored on val with the fidelity metrics, and the report, choice and curves are written."""

from __future__ import annotations

import json

import pytest

from modality_forcing.bench.flagship import TARGETS, progress, run_flagship_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_progress_caps_each_target_and_counts_missing_modes_as_zero():
    full = {"image_to_depth": {"skill": 0.9}, "depth_to_image": {"floor": {"accuracy": 1.0},
            "objects": {"accuracy": 0.6}}, "joint": {"relative": 0.7}}  # fmt: skip
    assert progress(full) == 1.0
    half = {"image_to_depth": {"skill": 0.25}}
    assert progress(half) == pytest.approx(0.5 / len(TARGETS))


def test_tiny_flagship_bench_scores_every_checkpoint(tmp_path, capsys):
    report = run_flagship_benchmark(tmp_path, ["tiny"], minutes=0.1, eval_minutes=0.02,
                                    num_val=4, precision="fp32")  # fmt: skip
    curve = report["recipes"]["tiny"]["curve"]
    stages = [p["stage"] for p in curve]
    assert stages[0] == "t2i" and stages[-1] == "mf" and len(curve) >= 3
    minutes = [p["minutes"] for p in curve]
    assert minutes == sorted(minutes) and minutes[-1] <= 0.5  # cumulative over both stages
    last = curve[-1]["scores"]
    for mode in ("image_to_depth", "depth_to_image", "joint", "marginal"):
        assert mode in last
    assert "marginal" in curve[0]["scores"] and "image_to_depth" not in curve[0]["scores"]
    assert 0 <= curve[-1]["progress"] <= 1 and report["chosen"] == "tiny"
    assert "bench flagship: recipes" in capsys.readouterr().err
    saved = json.loads((tmp_path / "flagship.json").read_text())
    assert saved["chosen"] == "tiny" and (tmp_path / "curves.png").is_file()
    assert "Chosen on val" in (tmp_path / "REPORT.md").read_text()
    # The same run folders scored as an existing run (scripts/flagship_cpu.sh's layout): the
    # same points, read from the per-checkpoint score caches.
    from modality_forcing.bench.flagship import score_run

    scored = score_run(tmp_path / "tiny", tmp_path / "scored", num_val=4, precision="fp32")
    again = scored["recipes"]["flagship"]["curve"]
    assert [(p["stage"], p["step"]) for p in again] == [(p["stage"], p["step"]) for p in curve]
    assert again[-1]["scores"] == last and again[-1]["minutes"] == pytest.approx(minutes[-1])
    assert (tmp_path / "scored" / "REPORT.md").is_file()
    # Scoring leaves every checkpoint sealed: the scored run still resumes.
    import yaml

    from modality_forcing.config import resolve_train_config
    from modality_forcing.training.loop import Trainer

    run = tmp_path / "tiny" / "mf"
    cfg = resolve_train_config(yaml.safe_load((run / "config.yaml").read_text()), [])
    assert Trainer(cfg, resume=True).state.step == curve[-1]["step"]
    # A continuation forked from the last checkpoint (scripts/flagship_cpu.sh's `mf2`): the fork
    # resumes at the parent's step and time, trains on under changed settings, leaves the parent
    # untouched, and its points follow the parent's in the scored curve without a repeat.
    from modality_forcing.training.loop import train
    from modality_forcing.training.run_dir import fork_run

    parent = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    fork = tmp_path / "tiny" / "mf2"
    fork_run(run, fork)
    with pytest.raises(FileExistsError, match="already has a checkpoint"):
        fork_run(run, fork)
    more = resolve_train_config(yaml.safe_load((run / "config.yaml").read_text()),
                                [f"out_dir={fork}", f"max_steps={curve[-1]['step'] + 2}",
                                 "max_minutes=null", "loss.object_weight=4"])  # fmt: skip
    train(more, resume=True)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == parent
    chained = score_run(tmp_path / "tiny", tmp_path / "chained", num_val=4, precision="fp32")
    points = chained["recipes"]["flagship"]["curve"]
    assert [(p["stage"], p["step"]) for p in points[: len(again)]] == [
        (p["stage"], p["step"]) for p in again
    ]
    tail = points[len(again) :]
    assert [p["stage"] for p in tail] == ["mf2"] and tail[0]["step"] == curve[-1]["step"] + 2
    assert tail[0]["minutes"] >= again[-1]["minutes"]
    # Runs side by side (the arms of an A/B): one curve each, named by folder, one chosen.
    import shutil

    shutil.copytree(tmp_path / "tiny", tmp_path / "arms" / "twin")
    both = score_run([tmp_path / "tiny", tmp_path / "arms" / "twin"], tmp_path / "ab",
                     num_val=4, precision="fp32")  # fmt: skip
    assert set(both["recipes"]) == {"tiny", "twin"} and both["chosen"] in ("tiny", "twin")
    assert both["recipes"]["twin"]["curve"] == points  # the copied score caches, as they were
    assert (
        "| metric (val, last checkpoint) | tiny | twin |"
        in (tmp_path / "ab" / "REPORT.md").read_text()
    )
    with pytest.raises(ValueError, match="distinct folder names"):
        score_run([tmp_path / "tiny", tmp_path / "tiny"], tmp_path / "ab", num_val=4)
    # The score cache is kept per scene count: more val scenes are scored anew, never read from
    # the cache of fewer; the 4-scene scores stay as they were.
    from modality_forcing.bench.fidelity import load_fidelity_scenes
    from modality_forcing.bench.flagship import score_checkpoints

    stage_dir = tmp_path / "tiny" / "mf2"
    for n in (6, 4):
        scenes = load_fidelity_scenes("val", n, tuple(saved["recipes"]["tiny"]["recipe"]["size"]))
        scored = score_checkpoints(stage_dir, scenes, "mf2", 0.0, "fp32")
        assert {p["scores"]["num_scenes"] for p in scored} == {n}
    assert scored[-1]["scores"] == tail[-1]["scores"]  # 4 scenes: read back from the cache
