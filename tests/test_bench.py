"""Benchmarks produce their tables and JSON (figures themselves are measured, not asserted)."""

import json
import math

import pytest

from modality_forcing.bench.throughput import run_throughput


def test_throughput_report_is_complete(tmp_path, capsys):
    report = run_throughput(
        ["tiny"], (16, 16), batch=2, steps=1, out=tmp_path / "t.json", gemm_seconds=0.2
    )
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["results"][0]["preset"] == "tiny" and saved["gemm_peak_tflops"]["bf16"] > 0
    row = report["results"][0]
    assert row["tokens_per_modality"] == 16
    for name in ("t2i", "mf"):
        m = row[name]
        assert m["samples_per_s"] > 0 and 0 < m["mfu"] < 1 and math.isfinite(m["us_per_token"])
        # tokens/s counts generated tokens: MF has twice the tokens per sample of T2I
    assert row["mf"]["tokens_per_s"] / row["mf"]["samples_per_s"] == 2 * 16 * 1.0
    # MFU is taken against the higher of the GEMM peaks measured before and after the models
    both = saved["gemm_peak_before_after"]
    peak = max(both["before"]["bf16"], both["after"]["bf16"])
    assert saved["gemm_peak_tflops"]["bf16"] == peak
    assert row["mf"]["mfu"] == pytest.approx(row["mf"]["tflops"] / peak)
    assert "MF overhead/token" in capsys.readouterr().out


def test_throughput_profile_splits_the_step_time(tmp_path, capsys):
    from modality_forcing.bench.throughput import OP_GROUPS, op_group

    assert op_group("aten::mm") == "gemm" and op_group("aten::addmm") == "gemm"
    assert op_group("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention kernel"
    assert op_group("## Call CompiledFxGraph fabc ##") == "fused elementwise (compiled)"
    assert op_group("aten::_fused_adamw_") == "optimizer" and op_group("aten::add") == "other"
    report = run_throughput(["tiny"], (16, 16), batch=2, steps=1, out=tmp_path / "t.json",
                            gemm_seconds=0.1, profile=True)  # fmt: skip
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
