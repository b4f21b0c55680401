"""`modality-forcing bench paper --budget tiny`: every claim's section is produced with finite
numbers, every run's config is saved, skill is reported against the mean training depth map,
and images that score NaN are counted and printed, never silently dropped."""

import json
import math

import pytest
import torch

from modality_forcing.bench.common import failures_section, nan_failures
from modality_forcing.bench.paper import (
    BUDGETS,
    CONSISTENCY,
    PAPER_SIZE_2,
    image_to_depth_rows,
    run_configs,
    verdicts,
)
from modality_forcing.bench.paper_eval import score_depth
from modality_forcing.bench.paper_report import setting_text
from modality_forcing.bench.runs import RunPool
from modality_forcing.bench.score_cache import ScoreCache
from modality_forcing.bench.seeds import PRIOR
from modality_forcing.cli import main
from modality_forcing.config import resolve_train_config
from modality_forcing.metrics.bootstrap import verdict_word


def _finite_numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _finite_numbers(v)
    elif isinstance(tree, float):
        yield tree


def test_tiny_paper_bench_produces_every_section(tmp_path, capsys, monkeypatch):
    """Two training seeds: each seed's full report in OUT/seed<S>, then the comparisons over
    seeds and scenes."""
    top = tmp_path / "paper"
    main(["bench", "paper", "--budget", "tiny", "--out", str(top), "--seeds", "0", "1"])
    out = top / "seed0"
    captured = capsys.readouterr()
    text = captured.out
    assert "bench paper: claims: 100%" in captured.err  # every claim measured
    for n in range(1, 7):
        assert f"## {n}. " in text
    report = json.loads((out / "paper.json").read_text())
    for key in (
        "permutations",
        "shared_t",
        "regressor",
        "scaling",
        "sparse",
        "sparse_in_band",
        "schedules",
        "intervals",
    ):
        assert report[key]
    ci = report["intervals"]["3: mf / regressor"]  # the same ratio as claim 3, with its interval
    assert ci["ratio"] == pytest.approx(report["regressor"]["ratio"], rel=1e-9)
    assert ci["low"] <= ci["ratio"] <= ci["high"] and ci["num_images"] == 8
    assert "How sure?" in text
    for value in _finite_numbers({k: v for k, v in report.items() if k != "verdicts"}):
        assert math.isfinite(value)
    i2d = report["permutations"]["image_to_depth"]
    mf = i2d["mf"]["least_squares"]["abs_rel"]
    prior = i2d["mean training depth"]["least_squares"]["abs_rel"]
    assert report["verdicts"]["1_skill"]["mf"] == pytest.approx(1 - mf / prior)
    objects = {k: i2d[k]["least_squares"]["object_abs_rel"] for k in ("mf", "mean training depth")}
    assert report["verdicts"]["1_object_skill"]["mf"] == pytest.approx(
        1 - objects["mf"] / objects["mean training depth"]
    )
    assert "untrained" not in i2d  # a constant scores NaN: that verdict could not fail
    scored = i2d["mf"]["least_squares"]
    assert scored["images"] == 8 and 0 <= scored["nan_images"] <= 8
    failures = nan_failures(report)  # every scored set that lost images, each printed
    assert all(f"- {line}" in text for line in failures) and (failures or "\nnone" in text)
    assert "## Failures (images that scored NaN" in text
    # Claim 2: both samplers chosen on val over the same grid; the baseline also over its noise.
    assert "joint-only (separate t, no clean-image training)" in report["shared_t"]
    for name, modes in (
        ("mf", {"image_to_depth"}),
        (
            "shared-t (replacement)",
            {
                "image_to_depth_replacement",
                "image_to_depth_replacement_fresh",
                "image_to_depth_replacement_repaint",
            },
        ),
    ):
        sweep = report["shared_t_sweep"][name]
        best = min(sweep["val"], key=lambda r: (r["nan_images"], r["abs_rel"]))
        assert sweep["chosen"] == {k: best[k] for k in ("mode", "steps", "shift_mu")}
        assert {r["mode"] for r in sweep["val"]} == modes
    # Every claim's verdict rests on paired per-image comparisons, fixed in advance; claim 2
    # separates "separate noise levels" (joint-only vs shared-t) from "clean-image training".
    assert {name.split(":")[0] for name in report["intervals"]} == set("123456")
    for name in ("2: mf (tuned) / shared-t", "2: joint-only (tuned) / shared-t",
                 "2: mf (tuned) / joint-only (tuned)"):  # fmt: skip
        assert name in report["intervals"]
    assert report["intervals"]["1: mf / d2i-only (depth -> image cycle)"]["target"] == 1.1
    # Claim 5 also in the LiDAR band: fewer pixels per image, so other per-image AbsRel, and
    # its own prior (skill) and verdict line.
    for key in report["sparse"]:
        assert report["sparse_in_band"][key]["images"] == 8
    full = report["intervals"]["5: sparse-lidar_32 / sparse-dense"]
    band = report["intervals"]["5: sparse-lidar_32 / sparse-dense, in the LiDAR band"]
    assert band["per_image"] != full["per_image"]
    # bench sparse's targets: a sparse sensor alone within +15% of dense, the mixture <= dense
    assert full["target"] == band["target"] == pytest.approx(1.15)
    assert report["intervals"]["5: sparse-mixed / sparse-dense, in the LiDAR band"]["target"] == 1
    for key in ("sparse", "sparse_in_band"):  # each table has its prior (skill)
        assert report[key][PRIOR]["abs_rel"] > 0
    assert PRIOR in report["sparse_in_band"] and "In the LiDAR band" in text
    gaps = report["verdicts"]["5_sparse_vs_dense_in_band"]
    assert set(gaps) == {"sparse-lidar_32", "sparse-mixed"}
    # Claims 2 and 3 are worded as their paired intervals support (not by the point estimate);
    # claim 2 also at the paper's margin: the same per-image AbsRel, ratio below 0.5.
    size = report["intervals"][PAPER_SIZE_2]
    assert size["target"] == 0.5 and size["ratio"] == report["intervals"][
        "2: mf (tuned) / shared-t"]["ratio"]  # fmt: skip
    words = {"2_verdict": {"better": "2: mf (tuned) / shared-t", "paper_size": PAPER_SIZE_2},
             "3_verdict": {"": "3: mf / regressor"}}  # fmt: skip
    for key, comparisons in words.items():
        said = report["verdicts"][key]
        for part, name in comparisons.items():
            ci = report["intervals"][name]
            assert (said[part] if part else said) == verdict_word(ci, ci["target"])
    assert f"**{report['verdicts']['3_verdict']}** (paired interval" in text
    # depth -> image and joint keep each image's AbsRel: the means are their finite means
    for section in ("depth_to_image", "joint"):
        for scores in report["permutations"][section].values():
            for key, values in scores["per_image"].items():
                finite = [v for v in values if math.isfinite(v)]
                assert len(values) == 8 == scores["failures"][key]["images"]
                assert scores["failures"][key]["nan_images"] == 8 - len(finite)
                assert scores[key] == pytest.approx(sum(finite) / len(finite), rel=1e-9)
    # Claim 6 is chosen on val: shuffling the test scores among the settings changes nothing.
    # (paper.json's keys are strings: compare as strings)
    chosen = {k: str(report["verdicts"][k]) for k in ("6_best_alpha", "6_best_steps")}
    for table in ("joint", "image_to_depth_steps"):
        rows = report["schedules"][table]
        keys = list(rows)
        report["schedules"][table] = dict(zip(keys, [rows[k] for k in keys[::-1]], strict=True))
    assert {k: str(verdicts(report)[k]) for k in chosen} == chosen
    # ... while the val scores decide: make another tilt the most consistent on val.
    val = report["schedules_val"]["joint"]
    other = next(a for a in val if str(a) != chosen["6_best_alpha"])
    val[other] = {**val[other], CONSISTENCY: -1.0}
    assert verdicts(report)["6_best_alpha"] == other
    for name in report["runs"]:
        assert (out / name / "config.yaml").is_file()  # every run's config saved
    for png in ("scaling.png", "schedules.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "REPORT.md").read_text().startswith("# The paper's claims in miniature")
    # Over the seeds: every comparison of the per-seed reports, per-seed ratios that match each
    # seed's own interval, one interval over seeds and scenes, the word it supports.
    seed1 = json.loads((top / "seed1" / "paper.json").read_text())
    combined = json.loads((top / "paper_seeds.json").read_text())
    assert combined["seeds"] == [0, 1] and set(combined["comparisons"]) == set(seed1["intervals"])
    for name, ci in combined["comparisons"].items():
        own = [json.loads((top / f"seed{s}" / "paper.json").read_text())["intervals"][name]
               for s in (0, 1)]  # fmt: skip
        assert ci["per_seed"] == pytest.approx([o["ratio"] for o in own], rel=1e-6)
        assert ci["num_seeds"] == 2 and ci["verdict"] == verdict_word(ci, ci["target"])
    assert combined["comparisons"]["3: mf / regressor"]["target"] == 1.1
    mf = combined["image_to_depth"]["mf"]  # each model over the seeds, with its skill
    own = [json.loads((top / f"seed{s}" / "paper.json").read_text())["verdicts"]["1_skill"]["mf"]
           for s in (0, 1)]  # fmt: skip
    prior = combined["image_to_depth"][PRIOR]["abs_rel"]
    assert [1 - a / prior for a in mf["per_seed"]] == pytest.approx(own)
    assert mf["skill"] == pytest.approx(sum(own) / 2)
    band = combined["image_to_depth"]["sparse-dense, in the LiDAR band"]  # skill over the prior
    prior_band = combined["image_to_depth"]["mean training depth, in the LiDAR band"]["abs_rel"]
    assert prior_band != prior and band["skill"] == pytest.approx(1 - band["abs_rel"] / prior_band)
    assert "over 2 training seeds" in (top / "REPORT_seeds.md").read_text()
    # claim 4 over the seeds: each run's mean over the seeds, drawn in scaling.png
    mf_m = [json.loads((top / f"seed{s}" / "paper.json").read_text())["scaling"]["size"][-1]
            for s in (0, 1)]  # fmt: skip
    over = combined["scaling"]["size"][-1]
    assert over["per_seed"] == [r["abs_rel"] for r in mf_m] and over["name"] == mf_m[0]["name"]
    assert over["abs_rel"] == pytest.approx(sum(over["per_seed"]) / 2)
    assert over["images"] == sum(r["images"] for r in mf_m) and "prior" in combined["scaling"]
    assert combined["figures"] == ["scaling.png"] and (top / "scaling.png").stat().st_size > 1000
    assert "![scaling](scaling.png)" in (top / "REPORT_seeds.md").read_text()
    # what each seed chose on val, claim 2's samplers with their network evaluations
    chosen_s1 = combined["chosen_on_val"]["1"]
    assert chosen_s1["claim 2 shared-t (replacement)"] == setting_text(
        seed1["shared_t_sweep"]["shared-t (replacement)"]["chosen"])  # fmt: skip
    assert chosen_s1["claim 6 image -> depth steps"] == seed1["verdicts"]["6_best_steps"]
    # another bench's finished runs of the same configs: used from there, none trained again
    monkeypatch.setattr("modality_forcing.training.loop.train", _no_training)
    again = tmp_path / "again"
    main(["bench", "paper", "--budget", "tiny", "--out", str(again), "--reuse-runs", str(out)])
    runs = json.loads((again / "paper.json").read_text())["runs"]
    assert {n: r["reused_from"] for n, r in runs.items()} == {n: str(out / n) for n in runs}
    assert "reused here (`--reuse-runs`)" in (again / "REPORT.md").read_text()
    # The score folder alone (another machine: no run folders): nothing trained or loaded,
    # and the same report.
    monkeypatch.setattr("modality_forcing.bench.runs.RunPool.model", _no_loading)
    fresh = tmp_path / "fresh"
    main(["bench", "paper", "--budget", "tiny", "--out", str(fresh),
          "--scores", str(out / "scores")])  # fmt: skip
    seed0 = json.loads((out / "paper.json").read_text())
    rebuilt = json.loads((fresh / "paper.json").read_text())
    assert rebuilt["scores"]["found"] > 0 and not (fresh / "mf").exists()
    assert "measurements were read back from the score folder" in (fresh / "REPORT.md").read_text()
    for key in ("permutations", "shared_t", "shared_t_sweep", "scaling", "sparse", "sparse_in_band",
                "schedules_val", "schedules", "intervals", "verdicts"):  # fmt: skip
        assert json.dumps(rebuilt[key]) == json.dumps(seed0[key]), key
    assert [r["params"] for r in rebuilt["runs"].values()] == [
        r["params"] for r in seed0["runs"].values()
    ]
    # Some claims only (`--claims`): their sections and comparisons, the runs they use, no more.
    part = tmp_path / "part"
    main(["bench", "paper", "--budget", "tiny", "--out", str(part), "--scores",
          str(out / "scores"), "--claims", "6", "3", "1", "2"])  # fmt: skip
    subset = json.loads((part / "paper.json").read_text())
    assert subset["claims"] == ["1", "2", "3", "6"]
    assert "scaling" not in subset and "sparse" not in subset
    assert list(subset["runs"]) == ["mf", "regressor", "d2i-only", "joint-only", "shared-t"]
    for key in ("permutations", "shared_t", "regressor", "schedules", "schedules_val"):
        assert json.dumps(subset[key]) == json.dumps(seed0[key]), key
    assert list(subset["intervals"]) == [k for k in seed0["intervals"] if k[0] in "1236"]
    assert {k: v for k, v in seed0["verdicts"].items() if k[0] in "1236"} == subset["verdicts"]
    text = (part / "REPORT.md").read_text()
    assert "## 3. " in text and "## 6. " in text and "## 4. " not in text
    assert (part / "schedules.png").is_file() and not (part / "scaling.png").exists()
    # Claim 4 alone scores its own prior (skill), the same as claim 1's.
    alone = tmp_path / "alone"
    main(["bench", "paper", "--budget", "tiny", "--out", str(alone), "--scores",
          str(out / "scores"), "--claims", "4"])  # fmt: skip
    four = json.loads((alone / "paper.json").read_text())
    assert json.dumps(four["scaling"]) == json.dumps(seed0["scaling"])
    i2d = seed0["permutations"]["image_to_depth"]
    assert image_to_depth_rows(four)[PRIOR] == i2d[PRIOR]["least_squares"]
    assert "| skill |" in (alone / "REPORT.md").read_text()
    with pytest.raises(SystemExit):  # argparse: not a claim
        main(["bench", "paper", "--budget", "tiny", "--out", str(part), "--claims", "7"])


def _no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def _no_loading(*args, **kwargs):
    raise AssertionError("a run was loaded though its measurements are stored")


def test_a_stored_measurement_is_found_only_for_the_same_training_and_settings(tmp_path):
    """The key of a stored measurement: what each run trains (wherever its folder is, its
    pre-training included) and the settings; anything else measures again."""
    b = BUDGETS["tiny"]
    configs = run_configs(b, tmp_path / "a", seed=0)
    calls = []

    def measure(configs, run="mf", settings=None):
        def fn():
            calls.append(run)
            return {"call": len(calls) - 1}

        cache = ScoreCache(tmp_path / "scores", RunPool(configs))
        return cache.measure("x", [run], settings or {"steps": 1}, fn)["call"], cache.hits

    assert measure(configs) == (0, 0)
    assert measure(run_configs(b, tmp_path / "elsewhere", seed=0)) == (0, 1)  # other folders
    assert measure(configs, settings={"steps": 2}) == (1, 0)
    assert measure(run_configs(b, tmp_path / "a", seed=1)) == (2, 0)
    assert measure({**configs, "mf": {**configs["mf"], "batch_size": 4}}) == (3, 0)
    # a post-training run's key follows its pre-training run, found under other folders too
    assert measure(configs, "mf-h32") == (4, 0)
    assert measure(run_configs(b, tmp_path / "b", seed=0), "mf-h32") == (4, 1)
    longer = {**configs, "t2i-h32": {**configs["t2i-h32"], "max_steps": 99}}
    assert measure(longer, "mf-h32") == (5, 0)
    assert len(calls) == 6


def test_run_plan_is_equal_compute_and_pretrains_before_post_training(tmp_path):
    configs = run_configs(BUDGETS["small"], tmp_path)
    resolved = {k: resolve_train_config(v) for k, v in configs.items()}
    mf_like = [k for k in resolved if not k.startswith("t2i-")]
    assert {resolved[k].max_steps for k in mf_like} == {300}
    assert {resolved[k].batch_size for k in resolved} == {32}
    assert resolved["shared-t"].forcing.policy == "shared"
    assert resolved["d2i-only"].forcing.p_depth_clean == 1.0
    assert resolved["t2i-data256"].data.num_scenes == 256
    order = list(configs)
    for name in ("xs", "s", "m", "data256"):  # stage 1 trains before the stage 2 that loads it
        assert order.index(f"t2i-{name}") < order.index(f"mf-{name}")
        assert resolved[f"mf-{name}"].init_from == str(tmp_path / f"t2i-{name}" / "final")
    assert resolved["mf-m"].model.hidden_size == 384 and resolved["mf-xs"].model.hidden_size == 128


def test_images_that_score_nan_are_counted_and_printed():
    gt = torch.rand(3, 8, 8, dtype=torch.float64) + 1
    mask = torch.ones(3, 8, 8, dtype=torch.bool)
    pred = gt.clone()
    pred[1] = 2.0  # a constant prediction cannot be aligned: NaN
    scores = score_depth(pred, gt, mask, (1e-3, 10.0))["least_squares"]
    assert scores["images"] == 3 and scores["nan_images"] == 1
    assert scores["abs_rel"] == pytest.approx(0.0, abs=1e-9)  # the two that scored are exact
    report = {"image_to_depth": {"mf": {"least_squares": scores}}}
    assert nan_failures(report) == ["image_to_depth.mf.least_squares: 1 of 3 images"]
    assert failures_section(report)[-1] == "- image_to_depth.mf.least_squares: 1 of 3 images"
    assert failures_section({"x": {**scores, "nan_images": 0}})[-1] == "none"


def test_a_deliberately_worse_model_makes_the_verdict_fail():
    """The verdict machinery of the claims can come out either way: the shipped (learned)
    checkpoint against the same network made blind (it never sees the image, so it can only
    predict an average scene) on the same test scenes."""
    from modality_forcing.bench.common import load_scenes
    from modality_forcing.bench.depth import Setting, load_model
    from modality_forcing.bench.paper_eval import Estimator, abs_rel_per_image
    from modality_forcing.demo import DEMO_CHECKPOINT
    from modality_forcing.metrics.bootstrap import seed_scene_ratio_ci

    scenes = load_scenes("test", 16, 32, 32)
    seeing = Estimator(load_model(DEMO_CHECKPOINT), Setting(1), (32, 32), precision="fp32")
    good = abs_rel_per_image(seeing, scenes)
    blind = abs_rel_per_image(lambda images: seeing(torch.zeros_like(images)), scenes)
    better = seed_scene_ratio_ci(good[None], blind[None])  # "the learned model is better"
    worse = seed_scene_ratio_ci(blind[None], good[None])  # "the blind model is better"
    assert verdict_word(better) == "holds" and verdict_word(worse) == "does not hold"


def test_over_seeds_lists_only_the_choices_of_the_claims_measured():
    """`--claims 5 --seeds ...` has no claim 2 sampler and no claim 6 tilt to list."""
    from modality_forcing.bench.seeds import paper_choices

    assert paper_choices({"verdicts": {"5_sparse_vs_dense": {}}}) == {}
    chosen = {"mode": "image_to_depth", "steps": 1, "shift_mu": 0.0}
    both = paper_choices({"verdicts": {"6_best_alpha": 5.0, "6_best_steps": 1},
                          "shared_t_sweep": {"mf": {"chosen": chosen}}})  # fmt: skip
    assert both == {"claim 2 mf": setting_text(chosen), "claim 6 tilt log2_alpha": 5.0,
                    "claim 6 image -> depth steps": 1}  # fmt: skip


def test_a_sampler_setting_states_its_network_evaluations():
    """Claim 2's chosen samplers state their inference compute: RePaint's resampling takes
    1 + REPAINT_JUMPS network evaluations per step."""
    from modality_forcing.bench.common import REPAINT_JUMPS, REPLACEMENT_REPAINT

    plain = setting_text({"mode": "image_to_depth", "steps": 1, "shift_mu": 0.0})
    assert plain == "1 step (1 network evaluation per image), shift 0"
    repaint = setting_text({"mode": REPLACEMENT_REPAINT, "steps": 10, "shift_mu": 2.0})
    assert f"({10 * (1 + REPAINT_JUMPS)} network evaluations per image)" in repaint
