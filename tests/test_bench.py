"""Benchmarks produce their tables and JSON (figures themselves are measured, not asserted)."""

import json
import math
import time

import pytest
import torch

from modality_forcing.bench.data_speed import run_data_benchmark
from modality_forcing.bench.step_timing import training_captions
from modality_forcing.bench.throughput import (
    GemmBudget,
    ThroughputConfig,
    gemm_peak,
    run_throughput,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_GEMM = GemmBudget(seconds=0.05, min_size=16, max_size=64)  # never a large matmul


def _tiny(**kw) -> ThroughputConfig:
    base = dict(presets=["tiny"], resolution=(16, 16), batch=2, steps=1, precision="fp32",
                gemm=TINY_GEMM)  # fmt: skip
    return ThroughputConfig(**{**base, **kw})


def test_throughput_report_is_complete(tmp_path, capsys):
    report = run_throughput(_tiny(), tmp_path / "t.json")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["results"][0]["preset"] == "tiny"
    # both precisions' peaks are measured, whichever runs
    assert saved["gemm_peak_tflops"]["bf16"] > 0 and saved["gemm_peak_tflops"]["fp32"] > 0
    assert max(saved["gemm_peak_size"].values()) <= 64
    row = report["results"][0]
    assert row["tokens_per_modality"] == 16
    # a training batch's text: BOS + the longest caption's words (capped at the encoder's 16)
    longest = max(len(c.split()) for c in training_captions(row["batch"]))
    assert row["text_tokens"] == min(16, 1 + longest)
    for name in ("t2i", "mf"):
        m = row[name]
        assert m["samples_per_s"] > 0 and m["mfu"] > 0 and math.isfinite(m["us_per_token"])
    # tokens/s counts generated tokens: MF has twice the tokens per sample of T2I
    assert row["mf"]["tokens_per_s"] / row["mf"]["samples_per_s"] == 2 * 16 * 1.0
    assert row["peak_memory_mb"] > 0
    captured = capsys.readouterr()
    assert "MF overhead/token" in captured.out and "bench throughput: presets" in captured.err


def test_data_bench_measures_every_size_with_and_without_shadows(tmp_path, capsys):
    report = run_data_benchmark([(64, 64), (32, 64)], 0.05, str(tmp_path / "data.json"))
    rows = json.loads((tmp_path / "data.json").read_text())["results"]
    assert [(r["height"], r["width"], r["shadows"]) for r in rows] == [
        (64, 64, True),
        (64, 64, False),
        (32, 64, True),
        (32, 64, False),
    ]
    assert all(r["samples_per_s"] > 0 for r in rows) and rows == report["results"]
    captured = capsys.readouterr()
    assert "| 32x64 | off |" in captured.out and "bench data: sizes" in captured.err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_report_names_the_precision_and_takes_mfu_against_its_peak(tmp_path, capsys, precision):
    """The report says which precision ran and why; MFU divides by that precision's peak, the
    higher of the measurements before and after the models."""
    report = run_throughput(_tiny(precision=precision), tmp_path / "t.json")
    assert report["precision"] == precision and report["mfu_against"] == precision
    assert report["precision_reason"] == f"{precision} requested"
    both = report["gemm_peak_before_after"]
    peak = max(both["before"][precision], both["after"][precision])
    assert report["gemm_peak_tflops"][precision] == peak
    row = report["results"][0]["mf"]
    assert row["mfu"] == pytest.approx(row["tflops"] / peak)
    out = capsys.readouterr().out
    assert f"precision {precision} ({precision} requested)" in out
    assert f"MFU against the {precision} peak" in out


def test_auto_precision_is_resolved_and_explained(tmp_path):
    report = run_throughput(_tiny(precision="auto", presets=[]), tmp_path / "t.json")
    assert report["precision"] in ("bf16", "fp32") and report["precision_reason"].startswith("auto")


def test_gemm_peak_honours_its_time_budget():
    """A precision the machine computes slowly (here: a matmul that takes 20 ms whatever its
    size) stops growing at once and stays within the budget; a fast one grows to max_size."""
    calls = []

    def slow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(a.shape[0])
        time.sleep(0.02)
        return a @ b

    start = time.perf_counter()
    budget = GemmBudget(seconds=0.1, max_call_s=0.01, min_size=16)
    peak = gemm_peak(torch.float32, torch.device("cpu"), budget, matmul=slow)
    assert time.perf_counter() - start < 0.1 + 0.1  # the budget, plus one call's overrun
    assert set(calls) == {16} and peak.size == 16 and peak.tflops > 0
    fast = gemm_peak(torch.float32, torch.device("cpu"),
                     GemmBudget(seconds=1.0, max_call_s=1.0, min_size=8, max_size=32))  # fmt: skip
    assert fast.size in (8, 16, 32) and fast.tflops > 0


def test_throughput_profile_splits_the_step_time(tmp_path, capsys):
    from modality_forcing.bench.step_timing import OP_GROUPS, op_group

    assert op_group("aten::mm") == "gemm" and op_group("aten::addmm") == "gemm"
    assert op_group("aten::addmm_") == "gemm"  # in place: a gradient summed into a buffer
    assert op_group("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention kernel"
    assert op_group("## Call CompiledFxGraph fabc ##") == "fused elementwise (compiled)"
    assert op_group("aten::_fused_adamw_") == "optimizer" and op_group("aten::add") == "other"
    report = run_throughput(_tiny(profile=True), tmp_path / "t.json")
    assert "MFU if only the GEMMs took time" in capsys.readouterr().out
    row = report["results"][0]
    for name in ("t2i", "mf"):
        prof = row[name]["profile"]
        assert set(prof["fraction"]) == set(OP_GROUPS)
        assert sum(prof["fraction"].values()) == pytest.approx(1.0)
        assert prof["fraction"]["gemm"] > 0 and prof["fraction"]["optimizer"] > 0
        # the ceiling: the measured MFU scaled up by the GEMMs' share of the step
        assert row[name]["mfu_if_only_gemm"] == pytest.approx(
            row[name]["mfu"] / prof["fraction"]["gemm"]
        )


def test_vs_diffusers_prints_one_ratio_line_per_matchup(tmp_path, capsys):
    pytest.importorskip("diffusers")
    from modality_forcing.bench.peer import MATCHUPS

    cfg = _tiny(vs="diffusers", vs_compile=(False,))
    report = run_throughput(cfg, tmp_path / "t.json")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "ours/diffusers samples/s:" in line]
    assert len(lines) == len(MATCHUPS)
    assert all(line.startswith("fp32 eager") and "peak memory ours/diffusers:" in line
               for line in lines)  # fmt: skip
    race = json.loads((tmp_path / "t.json").read_text())["vs"]["results"][0]
    assert race["peer_num_layers"] == 3  # tiny: 2 joint blocks + 1 decoder block per token
    assert race["params"]["peer"] > 0 and all(v > 0 for v in race["flops_per_sample"].values())
    setting = race["settings"][0]
    for ratio in setting["ratios"]:
        sps = setting["samples_per_s"]
        assert ratio["samples_per_s"] > 0 and ratio["peak_memory"] > 0
        lo, hi = ratio["round_ratio_range"]
        assert lo <= ratio["samples_per_s"] <= hi  # the median of per-round ratios
        assert sps[ratio["ours"]] > 0 and sps[ratio["peer"]] > 0
    assert report["vs"]["peer"] == "diffusers"


def test_vs_diffusers_profile_covers_both_models():
    pytest.importorskip("diffusers")
    from modality_forcing.bench.peer import race, race_table
    from modality_forcing.bench.step_timing import OP_GROUPS
    from modality_forcing.precision import resolve_precision

    cfg = _tiny(vs="diffusers", vs_compile=(False,), profile=True)
    result = race("tiny", cfg, resolve_precision("fp32", "cpu"), torch.device("cpu"))
    prof = result["settings"][0]["profile"]
    assert {"ours t2i", "peer t2i", "ours mf", "peer mf"} <= set(prof)
    for p in prof.values():
        assert set(p["profile"]["fraction"]) == set(OP_GROUPS) and p["profile"]["fraction"]["gemm"]
    table = race_table({"vs": {"peer": "diffusers", "results": [result]}})
    assert "| diffusers t2i | fp32 eager |" in table and "| ours t2i | fp32 eager |" in table


def test_unknown_peer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown peer 'x'; choose from"):
        run_throughput(_tiny(vs="x", presets=["tiny"]), tmp_path / "t.json")


def test_vae_presets_are_timed_on_a_weightless_latent_stand_in():
    """mf-370m needs a pretrained VAE to sample, not to time: the bench builds it on random
    latents of the VAE's shape (16 channels, 8x smaller), and the stand-in refuses real images."""
    from modality_forcing.bench.throughput import bench_model_config
    from modality_forcing.config import CodecConfig
    from modality_forcing.model.codecs import build_codec

    cfg = bench_model_config("mf-370m", (256, 256))
    assert cfg.codec.kind == "latent" and cfg.resolution == (256, 256)
    codec = build_codec(CodecConfig(kind="latent"))
    assert (codec.channels, codec.downsample) == (16, 8) and codec.latent_size(256, 128) == (32, 16)
    with pytest.raises(RuntimeError, match="benchmark stand-in"):
        codec.encode(torch.zeros(1, 3, 16, 16))
    assert bench_model_config("cpu-s", (32, 32)).codec.kind == "pixel"
