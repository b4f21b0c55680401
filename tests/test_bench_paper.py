"""`modality-forcing bench paper --budget tiny`: every claim's section is produced with finite
numbers, every run's config is saved, and the trained MF model beats an untrained one."""

import json
import math

import pytest

from modality_forcing.bench.paper import BUDGETS, run_configs
from modality_forcing.cli import main
from modality_forcing.config import resolve_train_config


def _finite_numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _finite_numbers(v)
    elif isinstance(tree, float):
        yield tree


def test_tiny_paper_bench_produces_every_section(tmp_path, capsys):
    out = tmp_path / "paper"
    main(["bench", "paper", "--budget", "tiny", "--out", str(out)])
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
        "schedules",
        "intervals",
    ):
        assert report[key]
    ci = report["intervals"]["3: mf / regressor"]  # the same ratio as claim 3, with its interval
    assert ci["ratio"] == pytest.approx(report["regressor"]["ratio"], rel=1e-9)
    assert ci["low"] <= ci["ratio"] <= ci["high"] and ci["num_images"] == 8
    assert "How sure?" in text
    untrained = report["permutations"]["image_to_depth"].pop("untrained")
    for value in _finite_numbers({k: v for k, v in report.items() if k != "verdicts"}):
        assert math.isfinite(value)
    mf = report["permutations"]["image_to_depth"]["mf"]["least_squares"]["abs_rel"]
    baseline = untrained["least_squares"]["abs_rel"]  # constant output: degenerate (NaN)
    assert report["verdicts"]["1_beats_untrained"] and (math.isnan(baseline) or mf < baseline)
    for name in report["runs"]:
        assert (out / name / "config.yaml").is_file()  # every run's config saved
    for png in ("scaling.png", "schedules.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "REPORT.md").read_text().startswith("# The paper's claims in miniature")


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
