"""`modality-forcing bench throughput`: training speed, achieved FLOP/s and MFU, and the cost of
the depth stream per token, measured in one run so the ratios are comparable on a noisy machine.

MFU is measured against the peak of a dense GEMM timed in the same run on the same device, in the
precision the models run in (`precision.resolve_precision`; both precisions' peaks are reported),
not a datasheet number. The GEMM probe is time-bounded and grows its size only while a matmul
stays short, so a precision the machine computes slowly (bf16 on AVX2-only CPUs) costs a fraction
of a second, not minutes. Each model is timed for a full training step (forward, backward,
AdamW) on synthetic inputs and a typical procedural caption, so data loading is excluded; the
achieved FLOP/s count the DiT's FLOPs (`flops_per_token`, at the caption's token count), not the
text encoder's, whose time is in the step. "T2I" is the same network fed image tokens only (depth
absent), "MF" image + depth tokens; the overhead compares time per generated (image or depth)
token. `vs="diffusers"` adds a side-by-side race against a diffusers transformer
(`bench/peer.py`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import build_model
from ..config import CodecConfig, ModelConfig, model_preset
from ..modalities import DEPTH, IMAGE
from ..model.mmdit import count_parameters, flops_per_token, transformer_blocks
from ..precision import PrecisionChoice, cpu_name, pick_device, resolve_precision
from .progress import bench_bar
from .step_timing import (
    OP_GROUPS,
    profile_step,
    step_peak_memory_mb,
    sync,
    time_train_step,
    train_step_fn,
    training_captions,
)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class GemmBudget:
    """How long the GEMM peak probe may take, per precision and per measurement.

    Attributes:
        seconds: time budget for one precision (sizes tried and repeats together).
        max_call_s: stop growing the matrix once one matmul takes this long.
        min_size: first matrix side; doubled while matmuls stay short.
        max_size: largest side (None: 2048 on CPU, 8192 on GPUs).
    """

    seconds: float = 1.0
    max_call_s: float = 0.05
    min_size: int = 128
    max_size: int | None = None


@dataclass
class ThroughputConfig:
    """One `bench throughput` run (built once by the CLI).

    Attributes:
        presets: model presets to measure.
        resolution: (H, W) of the synthetic images.
        batch: samples per step.
        steps: timed steps per measurement (after two warm-up steps; the median is reported).
        precision: `auto | bf16 | fp32` (`precision.resolve_precision`).
        device: `cuda`, `mps`, `cpu`, ... (None: `precision.pick_device`'s choice).
        compile_blocks: torch.compile every transformer block, as the trainer's `compile: true`.
        profile: also split each step's time into `OP_GROUPS`.
        vs: a peer to race side by side (`peer.PEERS`), or None.
        vs_compile: the compile settings of the race (each one line per matchup).
        vs_layers: the peer's joint blocks (None: as many blocks as an image token of ours
            passes through, trunk + decoder).
        gemm: the GEMM peak probe's budget.
    """

    presets: list[str] = field(default_factory=lambda: ["cpu-s", "cpu-m"])
    resolution: tuple[int, int] = (32, 32)
    batch: int = 32
    steps: int = 5
    precision: str = "auto"
    device: str | None = None
    compile_blocks: bool = False
    profile: bool = False
    vs: str | None = None
    vs_compile: tuple[bool, ...] = (False, True)
    vs_layers: int | None = None
    gemm: GemmBudget = field(default_factory=GemmBudget)


@dataclass
class GemmPeak:
    """Best TFLOP/s of a square matmul and the side it was reached at."""

    tflops: float
    size: int


def gemm_peak(
    dtype: torch.dtype,
    device: torch.device,
    budget: GemmBudget | None = None,
    matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.matmul,
) -> GemmPeak:
    """Peak TFLOP/s of n x n x n matmuls in `dtype` (the MFU denominator), within `budget`.

    Starts at `min_size` and doubles n while one matmul takes under `max_call_s` (a larger n
    costs 8x as long) and the time left allows it; each size is timed call by call, the best call
    counts. So a precision the device computes slowly stops at a small n and costs at most
    `seconds`, while a fast one reaches `max_size`. `matmul` is injectable for tests.
    """
    budget = budget or GemmBudget()
    max_size = budget.max_size or (8192 if device.type == "cuda" else 2048)
    deadline = time.perf_counter() + budget.seconds
    best, n = GemmPeak(0.0, budget.min_size), budget.min_size
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        call = _timed(matmul, a, b, device)  # warm-up: kernel choice, packing buffers
        for _ in range(3):
            if time.perf_counter() + call > deadline:
                break
            call = min(call, _timed(matmul, a, b, device))
        if 2 * n**3 / call / 1e12 > best.tflops:
            best = GemmPeak(2 * n**3 / call / 1e12, n)
        left = deadline - time.perf_counter()
        # the next size: a warm-up and one timed call, each ~8x as long as this one
        if 2 * n > max_size or call > budget.max_call_s or 16 * call > left:
            return best
        n *= 2


def _timed(matmul: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor,
           device: torch.device) -> float:  # fmt: skip
    sync(device)
    start = time.perf_counter()
    matmul(a, b)
    sync(device)
    return max(time.perf_counter() - start, 1e-9)


# ---------------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------------


def compile_blocks(blocks: list[nn.Module]) -> None:
    """torch.compile each transformer block alone, as the trainer's `compile: true` does."""
    for block in blocks:
        block.compile(dynamic=False)  # trunk and decoder lengths differ: specialise each


def bench_model_config(preset: str, resolution: tuple[int, int]) -> ModelConfig:
    """A preset's model config for timing: a VAE preset without a pretrained autoencoder gets
    the weightless latent stand-in of the same shape (`codecs.LatentStandIn`), since timed steps
    train on random latents and never encode."""
    model_cfg = dataclasses.replace(model_preset(preset), resolution=resolution)
    if model_cfg.codec.kind == "vae" and not model_cfg.codec.pretrained:
        model_cfg = dataclasses.replace(model_cfg, codec=CodecConfig(kind="latent"))
    return model_cfg


def measure_preset(
    preset: str, cfg: ThroughputConfig, choice: PrecisionChoice, device: torch.device
) -> dict[str, Any]:
    """Time (and with `cfg.profile`, profile) T2I and MF training steps of one preset."""
    model_cfg = bench_model_config(preset, cfg.resolution)
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device)
    if cfg.compile_blocks:
        compile_blocks(transformer_blocks(model.dit))
    h, w = cfg.resolution
    _, gh, gw = model.grid_shape(IMAGE, h, w)
    p = model.patch_size(IMAGE)
    tokens = (gh // p) * (gw // p)
    with torch.no_grad():  # the DiT sees the batch's longest caption, the others padded to it
        text = model.text_encoder(training_captions(cfg.batch), trim=True).tokens.shape[1]
    result: dict[str, Any] = {
        "preset": preset, "params": count_parameters(model), "compiled": cfg.compile_blocks,
        "resolution": list(cfg.resolution), "batch": cfg.batch, "tokens_per_modality": tokens,
        "text_tokens": text,
    }  # fmt: skip
    memory = []
    for name, mods in [("t2i", (IMAGE,)), ("mf", (IMAGE, DEPTH))]:
        # one step function (inputs, optimiser state) for the timing, memory and profile
        step = train_step_fn(model, mods, cfg.batch, cfg.resolution, choice)
        sec = time_train_step(step, cfg.steps, device)
        gen_tokens = cfg.batch * tokens * len(mods)
        flops = flops_per_token(dataclasses.replace(model_cfg, modalities=mods), tokens, text)
        result[name] = {
            "seconds_per_step": sec,
            "samples_per_s": cfg.batch / sec,
            "tokens_per_s": gen_tokens / sec,
            "us_per_token": 1e6 * sec / gen_tokens,
            "tflops": flops * gen_tokens / sec / 1e12,
        }
        memory.append(step_peak_memory_mb(step, device))
        if cfg.profile:
            result[name]["profile"] = profile_step(step, device)
        del step
    result["mf_overhead_per_token"] = (
        result["mf"]["us_per_token"] / result["t2i"]["us_per_token"] - 1
    )
    result["peak_memory_mb"] = max((m for m in memory if m is not None), default=None)
    return result


def measure_gemm_peaks(device: torch.device, budget: GemmBudget) -> dict[str, GemmPeak]:
    """Both precisions' GEMM peaks (each within `budget`)."""
    return {name: gemm_peak(dtype, device, budget) for name, dtype in DTYPES.items()}


def run_throughput(cfg: ThroughputConfig, out: str | Path) -> dict[str, Any]:
    """Measure every preset (and race `cfg.vs`), print Markdown tables, write JSON to `out`.

    MFU is taken against the GEMM peak of the precision the models run in; with `cfg.profile`
    the report also says where each step's time goes (`OP_GROUPS`) and the MFU the same GEMMs
    would give if every other operator were free (`mfu_if_only_gemm`: the ceiling that kernel
    fusion can reach).
    """
    from .peer import PEERS, race, race_table

    if cfg.vs is not None and cfg.vs not in PEERS:
        raise ValueError(f"unknown peer '{cfg.vs}'; choose from {list(PEERS)}")
    device = pick_device(cfg.device)
    choice = resolve_precision(cfg.precision, device)
    before = measure_gemm_peaks(device, cfg.gemm)
    rows = [measure_preset(p, cfg, choice, device)
            for p in bench_bar(cfg.presets, "throughput: presets")]  # fmt: skip
    peer = None
    if cfg.vs is not None:
        peer = [
            race(p, cfg, choice, device) for p in bench_bar(cfg.presets, f"throughput: vs {cfg.vs}")
        ]
    after = measure_gemm_peaks(device, cfg.gemm)
    # The GEMM peak of a shared CPU drifts by tens of percent within minutes: MFU is taken
    # against the higher of the two measurements (the conservative choice).
    peak = {k: max(before[k].tflops, after[k].tflops) for k in DTYPES}
    for r in rows:
        for stream in ("t2i", "mf"):
            m = r[stream]
            m["mfu"] = m["tflops"] / peak[choice.precision]
            if "profile" in m:
                gemm = m["profile"]["fraction"]["gemm"]
                m["mfu_if_only_gemm"] = m["mfu"] / gemm if gemm else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    report = {
        "device": name, "threads": torch.get_num_threads(),
        "precision": choice.precision, "precision_reason": choice.reason,
        "mfu_against": choice.precision, "gemm_peak_tflops": peak,
        "gemm_peak_size": {k: max(before[k].size, after[k].size) for k in DTYPES},
        "gemm_peak_before_after": {"before": {k: v.tflops for k, v in before.items()},
                                   "after": {k: v.tflops for k, v in after.items()}},
        "results": rows,
    }  # fmt: skip
    if peer is not None:
        report["vs"] = {"peer": cfg.vs, "results": peer}
    print(throughput_table(report))
    if peer is not None:
        print("\n" + race_table(report))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


def throughput_table(report: dict[str, Any]) -> str:
    peak, prec = report["gemm_peak_tflops"], report["precision"]
    both = report["gemm_peak_before_after"]
    lines = [
        f"device {report['device']} ({report['threads']} threads); precision {prec} "
        f"({report['precision_reason']})",
        f"measured GEMM peak: bf16 {peak['bf16']:.3f} TFLOP/s, fp32 {peak['fp32']:.3f} TFLOP/s "
        f"({prec} before / after the models: {both['before'][prec]:.3f} / "
        f"{both['after'][prec]:.3f}); MFU against the {prec} peak (the higher)",
        "",
        "| preset | params | res | batch | stream | samples/s | tokens/s | TFLOP/s | MFU "
        "| us/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        label = r["preset"] + (" (compiled)" if r["compiled"] else "")
        for name in ("t2i", "mf"):
            m = r[name]
            lines.append(
                f"| {label} | {r['params'] / 1e6:.1f}M | {r['resolution'][0]}x"
                f"{r['resolution'][1]} | {r['batch']} | {name} | {m['samples_per_s']:.1f} "
                f"| {m['tokens_per_s']:.0f} | {m['tflops']:.3f} | {m['mfu']:.1%} "
                f"| {m['us_per_token']:.2f} |"
            )
        mem = r["peak_memory_mb"]
        lines.append(
            f"| {r['preset']} | | | | MF overhead/token | {r['mf_overhead_per_token']:+.1%} "
            f"| peak mem {'n/a' if mem is None else f'{mem:.0f} MB'} | | | |"
        )
    profiled = [(r["preset"], n, r[n]) for r in report["results"] for n in ("t2i", "mf")
                if "profile" in r[n]]  # fmt: skip
    if profiled:
        lines += ["", "Where a step's time goes (profiler self time, share of the step):", ""]
        lines += profile_table(profiled)
    return "\n".join(lines)


def profile_table(rows: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Markdown rows of (model, stream, measurement with a `profile`)."""
    lines = [
        "| model | stream | " + " | ".join(OP_GROUPS) + " | MFU if only the GEMMs took time |",
        "|---|---|" + "---|" * (len(OP_GROUPS) + 1),
    ]
    for label, stream, m in rows:
        shares = " | ".join(f"{m['profile']['fraction'][g]:.0%}" for g in OP_GROUPS)
        ceiling = m.get("mfu_if_only_gemm")
        lines.append(f"| {label} | {stream} | {shares} | "
                     f"{'n/a' if ceiling is None else f'{ceiling:.0%}'} |")  # fmt: skip
    return lines
