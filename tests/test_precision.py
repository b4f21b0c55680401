"""The precision policy (`precision.py`): auto follows the measured probe, forced values win,
the probe result is cached, and the pipeline and CLI honour the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modality_forcing import precision as P
from modality_forcing.cli import main
from modality_forcing.config import model_preset
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.model.denoiser import ModalityForcingModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _probe(bf16: float, fp32: float = 1.0):
    return lambda: P.Probe(fp32_tflops=fp32, bf16_tflops=bf16)


@pytest.mark.parametrize(
    "bf16, expected", [(0.02, "fp32"), (1.0, "fp32"), (1.1, "fp32"), (2.0, "bf16"), (4.0, "bf16")]
)
def test_auto_follows_the_probe_on_a_cpu(bf16, expected):
    choice = P.resolve_precision("auto", "cpu", probe=_probe(bf16))
    assert choice.precision == expected and choice.device == "cpu"
    assert "auto" in choice.reason and f"{bf16:.3f}" in choice.reason  # says what it measured
    assert (choice.autocast_dtype is torch.bfloat16) == (expected == "bf16")


def test_forced_precision_ignores_the_probe():
    def never() -> P.Probe:
        raise AssertionError("a forced precision must not probe")

    assert P.resolve_precision("fp32", "cpu", probe=never).autocast_dtype is None
    assert P.resolve_precision("bf16", "cpu", probe=never).precision == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        P.pick_device("gpu7")


def test_real_probe_runs_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(P, "_MEMORY", {})
    calls = []

    def small() -> P.Probe:
        calls.append(1)
        return P.probe_cpu_gemm(size=32, repeats=1)  # the real measurement, tiny

    first, cached = P.cached_probe(small)
    assert not cached and first.fp32_tflops > 0 and first.bf16_tflops > 0
    stored = json.loads((tmp_path / "modality-forcing" / "precision_probe.json").read_text())
    assert P._cpu_key() in stored
    monkeypatch.setattr(P, "_MEMORY", {})  # a new process: only the file remains
    again, cached = P.cached_probe(small)
    assert cached and again == first and len(calls) == 1


def test_dtype_names():
    assert P.precision_of(None) == "auto" and P.precision_of(torch.bfloat16) == "bf16"
    assert P.precision_of(torch.float32) == "fp32" and P.precision_of("fp32") == "fp32"
    with pytest.raises(ValueError, match="unsupported torch_dtype"):
        P.precision_of(torch.float16)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.resolution = (16, 16)
    model = ModalityForcingModel(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return ModalityForcingPipeline(model, precision="fp32").save_pretrained(
        tmp_path_factory.mktemp("ckpt") / "tiny"
    )


def test_pipeline_honours_the_precision(ckpt):
    pipe = ModalityForcingPipeline.from_pretrained(ckpt, torch_dtype=torch.float32, device="cpu")
    assert pipe.precision.precision == "fp32" and pipe.precision.autocast_dtype is None
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    fp32 = pipe(prompt="a", num_inference_steps=2, generator=g()).depth
    assert pipe.to(dtype=torch.bfloat16) is pipe and pipe.precision.precision == "bf16"
    bf16 = pipe(prompt="a", num_inference_steps=2, generator=g()).depth
    assert not np.array_equal(fp32, bf16)  # bf16 autocast really ran
    np.testing.assert_allclose(fp32, bf16, atol=0.1)
    assert pipe.to(device="cpu").precision.precision == "bf16"  # a move keeps a forced choice


def test_cli_sample_honours_precision_fp32(ckpt, tmp_path, capsys):
    main(["sample", "--ckpt", str(ckpt), "--prompt", "a", "--steps", "2", "--precision", "fp32",
          "--out", str(tmp_path / "s")])  # fmt: skip
    assert "precision fp32 on cpu: fp32 requested" in capsys.readouterr().out
    written = np.load(next((tmp_path / "s").glob("*/depth.npy")))
    pipe = ModalityForcingPipeline.from_pretrained(ckpt, torch_dtype=torch.float32, device="cpu")
    out = pipe(prompt="a", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(written, out.depth[0])


def test_probe_cache_is_kept_per_kernel_instruction_set(monkeypatch):
    """A cached 'bf16 is faster' must not carry over to a process whose kernels are limited to
    AVX2 (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA), where bf16 is emulated and far slower."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    full = P._cpu_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert P._cpu_key() != full and "isa=" in full
