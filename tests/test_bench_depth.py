"""`modality-forcing bench depth --budget tiny` end to end: trains the regressor and MF recipes at
equal compute, scores curves and the inference sweep, writes the report and plots, resumes, and
combines training seeds."""

import json
import math

import pytest

from modality_forcing.bench.depth import (
    ANY_COMPUTE,
    BUDGETS,
    EQUAL_COMPUTE,
    RECIPES,
    Setting,
    recipe_config,
    sweep_settings,
)
from modality_forcing.bench.seeds import PRIOR
from modality_forcing.cli import main
from modality_forcing.config import resolve_train_config
from modality_forcing.metrics.bootstrap import verdict_word


def test_tiny_depth_bench_end_to_end(tmp_path, capsys, monkeypatch):
    """Two training seeds: each seed's full report in OUT/seed<S>, then MF against the
    regressor over seeds and scenes."""
    top = tmp_path / "depth"
    args = ["bench", "depth", "--budget", "tiny", "--out", str(top), "--seeds", "0", "1"]
    main(args)
    out = top / "seed0"
    captured = capsys.readouterr()
    printed = captured.out
    assert "## Recipes at equal compute" in printed and "## Verdicts" in printed
    # progress goes to stderr, the report to stdout
    assert "bench depth: recipes" in captured.err and "bench depth: recipes" not in printed
    assert "bench depth: inference settings" in captured.err
    report = json.loads((out / "depth.json").read_text())
    assert list(report["recipes"]) == ["regressor-l1", "mf-naive", "mf"]
    budget = report["budget"]
    for r in report["recipes"].values():
        assert r["steps"] == budget["steps"]  # equal compute
        assert len(r["curve"]) == budget["curve_points"]
        assert all(p["seconds"] > 0 and math.isfinite(p["abs_rel@1"]) for p in r["curve"])
        for scores in (*r["val"].values(), *r["test"].values()):
            assert 0 < scores["abs_rel"] < 10 and 0 <= scores["delta1"] <= 1
    assert set(report["recipes"]["regressor-l1"]["test"]) == {"1"}  # a regressor: one readout
    sweep = report["sweep"]
    assert [r["frame"] for r in sweep[-2:]] == ["letterbox", "stretch"]
    # the framing is scored on val too and chosen there, whatever test says
    framed = {r["frame"]: r for r in sweep[-2:]}
    assert all(r["val"] and r["test"] for r in framed.values())
    assert report["verdict"]["frame"] == min(framed, key=lambda f: framed[f]["val"]["abs_rel"])
    ens = [r for r in sweep if r["ensemble"] > 1]
    assert ens and all(-1 <= r["test"]["spearman"] <= 1 for r in ens)
    v = report["verdict"]
    # the regressor has MF's depth loss, and MF is compared at its compute (1 evaluation)
    assert v["regressor"] == "regressor-l1" and v["depth_loss"] == "l1"
    assert report["recipes"]["mf"]["depth_loss"] == report["recipes"]["regressor-l1"]["depth_loss"]
    chosen = next(r for r in sweep if r["setting"] == v["equal_compute_setting"])
    assert chosen["evaluations"] == 1 and chosen["frame"] == "square"
    ones = [r for r in sweep if r["evaluations"] == 1 and r["frame"] == "square"]
    assert chosen["val"]["abs_rel"] == min(r["val"]["abs_rel"] for r in ones)  # chosen on val
    assert v["ratio_to_regressor"] == pytest.approx(
        v["equal_compute_test_abs_rel"] / v["regressor_test_abs_rel"]
    )
    # the step-count diagnostic for every MF recipe (not the regressor), plotted and printed
    assert "x0_error_by_t" not in report["recipes"]["regressor-l1"]
    levels = [r["t"] for r in report["recipes"]["mf"]["x0_error_by_t"]]
    assert levels[0] == 0.0 and levels[-1] == 1.0 and "## One-call depth estimate" in printed
    for png in ("accuracy_vs_steps.png", "accuracy_vs_time.png", "x0_error_vs_t.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "REPORT.md").read_text().startswith("preset tiny")
    # the mean-depth prior, scored like a model, and every recipe's skill over it
    prior = report["prior"]["test"]
    assert 0 < prior["abs_rel"] < 10 and f"test AbsRel {prior['abs_rel']:.4f}" in printed
    mf_one = report["recipes"]["mf"]["test"]["1"]
    assert f"{1 - mf_one['abs_rel'] / prior['abs_rel']:.3f} / " in printed
    # the verdict's comparisons, paired over the test scenes: the ratio is the verdict's own
    equal = report["intervals"][EQUAL_COMPUTE]
    assert equal["setting"] == v["equal_compute_setting"]
    assert equal["ratio"] == pytest.approx(v["ratio_to_regressor"], rel=1e-6)
    assert [len(x) for x in equal["per_image"]] == [budget["num_test"]] * 2
    assert report["intervals"][ANY_COMPUTE]["setting"] == v["best_setting"]
    # over the seeds: per-seed ratios that match each seed's own, one interval, its word
    combined = json.loads((top / "depth_seeds.json").read_text())
    assert combined["seeds"] == [0, 1] and set(combined["comparisons"]) == {
        EQUAL_COMPUTE,
        ANY_COMPUTE,
    }
    for name, ci in combined["comparisons"].items():
        own = [json.loads((top / f"seed{s}" / "depth.json").read_text())["intervals"][name]
               for s in (0, 1)]  # fmt: skip
        assert ci["per_seed"] == pytest.approx([o["ratio"] for o in own], rel=1e-6)
        assert ci["target"] == 1.1 and ci["verdict"] == verdict_word(ci, 1.1)
    assert combined["chosen_on_val"]["0"]["MF at 1 evaluation"] == v["equal_compute_setting"]
    assert "bench depth over 2 training seeds" in (top / "REPORT_seeds.md").read_text()
    # each model's test AbsRel over the seeds, its skill over the prior and on object pixels
    reports = [json.loads((top / f"seed{s}" / "depth.json").read_text()) for s in (0, 1)]
    rows = combined["image_to_depth"]
    mf = rows["mf, 1 evaluation (chosen on val)"]
    own = []
    for r in reports:
        square = {x["setting"]: x for x in r["sweep"] if x["frame"] == "square"}
        own.append(square[r["verdict"]["equal_compute_setting"]]["test"]["abs_rel"])
    assert mf["per_seed"] == pytest.approx(own) and mf["abs_rel"] == pytest.approx(sum(own) / 2)
    prior = rows[PRIOR]
    assert prior["abs_rel"] == pytest.approx(reports[0]["prior"]["test"]["abs_rel"])
    assert mf["skill"] == pytest.approx(1 - mf["abs_rel"] / prior["abs_rel"])
    assert mf["object_skill"] == pytest.approx(1 - mf["object_abs_rel"] / prior["object_abs_rel"])
    assert mf["images"] == 2 * budget["num_test"] and prior["skill"] == 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("modality_forcing.training.loop.train", no_training)
    main(args)  # runs and scores are cached: the same report without training
    assert json.loads((out / "depth.json").read_text())["sweep"] == sweep
    # another bench's folder: its finished runs of the same config are used, not trained again
    again = tmp_path / "again"
    scores = ["--scores", str(tmp_path / "scores")]
    main(["bench", "depth", "--budget", "tiny", "--out", str(again), "--reuse-runs", str(top),
          *scores])  # fmt: skip
    reused = json.loads((again / "depth.json").read_text())
    for name, r in reused["recipes"].items():
        assert r["reused_from"] == str(out / name)  # seed 0's runs (this bench's seed)
        assert r["test"] == report["recipes"][name]["test"] and r["curve"]
    assert "reused here (`--reuse-runs`)" in (again / "REPORT.md").read_text()
    # the stored report alone (another machine, no run folders): found, nothing trained
    fresh = tmp_path / "fresh"
    main(["bench", "depth", "--budget", "tiny", "--out", str(fresh), *scores])
    rebuilt = json.loads((fresh / "depth.json").read_text())
    assert rebuilt["scores"]["found"] == 1 and not (fresh / "mf").exists()
    assert json.dumps(rebuilt["intervals"]) == json.dumps(reused["intervals"])
    # another seed is another training: not found (and would train)
    with pytest.raises(AssertionError, match="trained again"):
        main(["bench", "depth", "--budget", "tiny", "--out", str(fresh), *scores, "--seeds", "5"])


def test_recipes_resolve_and_differ_only_where_they_say(tmp_path):
    budget = BUDGETS["small"]
    configs = {r: resolve_train_config(recipe_config(r, budget, tmp_path / r)) for r in RECIPES}
    assert configs["regressor"].forcing.policy == "regression"
    naive = configs["mf-naive"].optim
    assert naive.ema_decay == 0 and naive.schedule == "constant"
    assert configs["mf-l1"].loss.depth_loss == "l1"
    for cfg in configs.values():  # equal compute and data
        assert (cfg.max_steps, cfg.batch_size, cfg.seed) == (600, 32, 0)
        assert cfg.keep_checkpoints == 0 and cfg.ckpt_every == 150
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_config("nope", budget, tmp_path)


def test_settings_count_network_evaluations():
    assert Setting(4).evaluations == 4
    assert Setting(4, "heun").evaluations == 7  # no second evaluation on the last step
    assert Setting(4, ensemble=5).evaluations == 20
    names = [s.name for s in sweep_settings(BUDGETS["small"])]
    assert len(names) == len(set(names))
    assert {"euler-1", "euler-50", "heun-10", "euler-4 shift-1", "euler-10 ens5-mean"} <= set(names)


def test_x0_error_by_t_reads_the_models_estimate_at_each_noise_level(monkeypatch):
    """The step-count diagnostic: the network given the GT depth noised to t. With a network
    that returns its depth input (a perfect denoiser at t = 0 only), the error is 0 at t = 0
    and grows with t; a t = 1 estimate is pure noise."""
    from modality_forcing.backbones import build_model
    from modality_forcing.bench.common import load_scenes
    from modality_forcing.bench.x0_error import x0_error_by_t
    from modality_forcing.config import model_preset

    model = build_model(model_preset("tiny")).eval()
    monkeypatch.setattr(model, "forward", lambda xt, t, text: {"depth": xt["depth"]})
    scenes = load_scenes("val", 6, 16, 16)
    rows = x0_error_by_t(model, scenes, levels=(0.0, 0.3, 1.0), chunk=4)
    assert [r["t"] for r in rows] == [0.0, 0.3, 1.0] and all(r["images"] == 6 for r in rows)
    assert rows[0]["abs_rel"] < 1e-3 < rows[1]["abs_rel"] < rows[2]["abs_rel"]
    # the real network runs through the same path (every image scored or counted as NaN)
    monkeypatch.undo()
    real = x0_error_by_t(model, scenes, levels=(0.5,), chunk=4)
    assert real[0]["images"] == 6 and 0 <= real[0]["nan_images"] <= 6
