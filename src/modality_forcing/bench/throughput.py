"""`modality-forcing bench throughput`: training speed, achieved FLOP/s and MFU, and the cost of
the depth stream per token, measured in one run so the ratios are comparable on a noisy machine.

MFU is measured against the peak of a dense GEMM timed in the same run on the same device (bf16
and fp32), not a datasheet number. Each model is timed for a full training step (forward,
backward, AdamW) on synthetic inputs, so data loading is excluded. "T2I" is the same network fed
image tokens only (depth absent), "MF" image + depth tokens; the overhead compares time per
generated (image or depth) token.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import OptimConfig, model_preset
from ..modalities import DEPTH, IMAGE
from ..model.factory import build_model
from ..model.mmdit import count_parameters, flops_per_token, transformer_blocks
from ..optim import build_optimizer


def gemm_peak_tflops(
    dtype: torch.dtype, device: torch.device, n: int = 2048, seconds: float = 2.0
) -> float:
    """Sustained TFLOP/s of an n x n x n matmul in `dtype` (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark


def train_step_fn(
    model: torch.nn.Module, modalities: tuple[str, ...], batch: int, resolution: tuple[int, int],
    bf16: bool, device: torch.device,
) -> Callable[[], None]:  # fmt: skip
    """One full training step (forward, backward, the trainer's AdamW) on synthetic inputs."""
    h, w = resolution
    shapes = {m: (batch, *model.grid_shape(m, h, w)) for m in modalities}
    xt = {m: torch.randn(s, device=device) for m, s in shapes.items()}
    t = {m: torch.rand(batch, device=device) for m in modalities}
    captions = ["a red sphere left of a blue striped box on a gray checkered floor"] * batch
    opt = build_optimizer(model, OptimConfig(lr=1e-5))  # the trainer's optimiser

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(xt, t, captions)
        loss = sum(o.float().square().mean() for o in out.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_train_step(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of `step` (median of `steps` after two warm-up calls)."""
    times = []
    for i in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# Where a step's time goes, by the operators' names in the PyTorch profiler (self time).
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")
OP_GROUPS = ("gemm", "attention kernel", "fused elementwise (compiled)", "optimizer", "other")


def op_group(name: str) -> str:
    """The `OP_GROUPS` entry of a profiler event name."""
    if name in GEMM_OPS:
        return "gemm"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention kernel"
    if name.startswith(("## Call CompiledFxGraph", "graph_")) or "cpp_fused" in name:
        return "fused elementwise (compiled)"  # inductor's generated kernels
    if "adam" in name.lower() or name.startswith("Optimizer."):
        return "optimizer"
    return "other"


def profile_step(step: Callable[[], None], device: torch.device, steps: int = 2) -> dict[str, Any]:
    """Self time per `OP_GROUPS` entry over `steps` profiled steps (after one warm-up step):
    seconds per step and fraction of the profiled total."""
    from torch.profiler import ProfilerActivity, profile

    step()
    _sync(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    seconds = dict.fromkeys(OP_GROUPS, 0.0)
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        seconds[op_group(event.key)] += us / 1e6 / steps
    total = sum(seconds.values())
    return {"seconds_per_step": seconds, "fraction": {k: v / total for k, v in seconds.items()}}


def measure_preset(
    preset: str, resolution: tuple[int, int], batch: int, steps: int, peak: dict[str, float],
    bf16: bool, device: torch.device, compile_blocks: bool = False, profile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    cfg = dataclasses.replace(model_preset(preset), resolution=resolution)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if compile_blocks:  # as the trainer's `compile: true` does
        for block in transformer_blocks(model.dit):
            block.compile(dynamic=False)  # trunk and decoder lengths differ: specialise each
    h, w = resolution
    p = model.patch_size(IMAGE)
    tokens = (model.grid_shape(IMAGE, h, w)[1] // p) * (model.grid_shape(IMAGE, h, w)[2] // p)
    text = cfg.text.max_length
    result: dict[str, Any] = {"preset": preset, "params": count_parameters(model),
                              "compiled": compile_blocks,
                              "resolution": list(resolution), "batch": batch,
                              "tokens_per_modality": tokens}  # fmt: skip
    for name, mods in [("t2i", (IMAGE,)), ("mf", (IMAGE, DEPTH))]:
        # one step function (inputs, optimiser state) for the timing and the profile
        step = train_step_fn(model, mods, batch, resolution, bf16, device)
        sec = time_train_step(step, steps, device)
        gen_tokens = batch * tokens * len(mods)
        flops = flops_per_token(dataclasses.replace(cfg, modalities=mods), tokens, text)
        achieved = flops * gen_tokens / sec / 1e12
        result[name] = {
            "seconds_per_step": sec,
            "samples_per_s": batch / sec,
            "tokens_per_s": gen_tokens / sec,
            "us_per_token": 1e6 * sec / gen_tokens,
            "tflops": achieved,
            "mfu": achieved / peak["bf16" if bf16 else "fp32"],
        }
        if profile:
            result[name]["profile"] = profile_step(step, device)
    result["mf_overhead_per_token"] = (
        result["mf"]["us_per_token"] / result["t2i"]["us_per_token"] - 1
    )
    result["peak_memory_mb"] = _peak_memory_mb(device)
    return result


def run_throughput(
    presets: list[str], resolution: tuple[int, int], batch: int, steps: int, out: str | Path,
    bf16: bool = True, gemm_seconds: float = 2.0, compile_blocks: bool = False,
    profile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Measure every preset, print a Markdown table, write JSON to `out`. With `profile`, also
    where each step's time goes (`OP_GROUPS`) and the MFU the same GEMMs would give if every
    other operator were free (`mfu_if_only_gemm`: the ceiling that kernel fusion can reach)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def peaks() -> dict[str, float]:
        return {"bf16": gemm_peak_tflops(torch.bfloat16, device, seconds=gemm_seconds),
                "fp32": gemm_peak_tflops(torch.float32, device, seconds=gemm_seconds)}  # fmt: skip

    before = peaks()
    rows = [measure_preset(p, resolution, batch, steps, before, bf16, device, compile_blocks,
                           profile) for p in presets]  # fmt: skip
    after = peaks()
    # The GEMM peak of a shared CPU drifts by tens of percent within minutes: MFU is taken
    # against the higher of the two measurements (the conservative choice).
    peak = {k: max(before[k], after[k]) for k in before}
    for r in rows:
        for stream in ("t2i", "mf"):
            r[stream]["mfu"] = r[stream]["tflops"] / peak["bf16" if bf16 else "fp32"]
            if "profile" in r[stream]:
                gemm = r[stream]["profile"]["fraction"]["gemm"]
                r[stream]["mfu_if_only_gemm"] = r[stream]["mfu"] / gemm if gemm else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "threads": torch.get_num_threads(), "gemm_peak_tflops": peak,
              "gemm_peak_before_after": {"before": before, "after": after},
              "precision": "bf16" if bf16 else "fp32", "results": rows}  # fmt: skip
    print(throughput_table(report))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


def throughput_table(report: dict[str, Any]) -> str:
    peak = report["gemm_peak_tflops"]
    both = report.get("gemm_peak_before_after")
    drift = (f" (bf16 before / after the models: {both['before']['bf16']:.2f} / "
             f"{both['after']['bf16']:.2f}; MFU uses the higher)" if both else "")  # fmt: skip
    lines = [
        f"device {report['device']} ({report['threads']} threads), {report['precision']}; "
        f"measured GEMM peak: bf16 {peak['bf16']:.2f} TFLOP/s, fp32 {peak['fp32']:.2f} TFLOP/s"
        + drift,
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
        lines.append(
            f"| {r['preset']} | | | | MF overhead/token | {r['mf_overhead_per_token']:+.1%} "
            f"| peak mem {r['peak_memory_mb']:.0f} MB | | | |"
        )
    profiled = [(r, n) for r in report["results"] for n in ("t2i", "mf") if "profile" in r[n]]
    if profiled:
        lines += [
            "",
            "Where a step's time goes (profiler self time, share of the step):",
            "",
            "| preset | stream | " + " | ".join(OP_GROUPS) + " | MFU if only the GEMMs took time |",
            "|---|---|" + "---|" * (len(OP_GROUPS) + 1),
        ]
        for r, n in profiled:
            shares = " | ".join(f"{r[n]['profile']['fraction'][g]:.0%}" for g in OP_GROUPS)
            ceiling = r[n].get("mfu_if_only_gemm")
            lines.append(f"| {r['preset']} | {n} | {shares} | "
                         f"{'n/a' if ceiling is None else f'{ceiling:.0%}'} |")  # fmt: skip
    return "\n".join(lines)
