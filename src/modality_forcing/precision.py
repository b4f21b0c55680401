"""One precision policy for every entry point: `auto` picks bf16 only where the device computes it
natively, fp32 otherwise; plus the device choice (cuda > mps > cpu).

bf16 autocast is ~4x faster than fp32 on CPUs with AMX and 10-60x *slower* on CPUs without bf16
units (AVX2 only), so on a CPU `auto` times a small GEMM in both precisions once (cached per CPU
model, thread count and torch version, in memory and on disk) and keeps bf16 only when it is
clearly faster. CUDA devices use bf16 where `torch.cuda.is_bf16_supported()`; MPS stays fp32.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
PROBE_SIZE = 256  # GEMM side: ~34 MFLOP, under 0.1 s even where bf16 is emulated
BF16_MARGIN = 1.2  # bf16 must beat fp32 by this factor: small GEMMs flatter neither precision
CACHE_ENV = "MODALITY_FORCING_CACHE"


@dataclass(frozen=True)
class Probe:
    """GEMM throughput of both precisions on the CPU (TFLOP/s)."""

    fp32_tflops: float
    bf16_tflops: float

    @property
    def speedup(self) -> float:
        return self.bf16_tflops / max(self.fp32_tflops, 1e-12)


@dataclass(frozen=True)
class PrecisionChoice:
    """What runs where, and why (printed once and stored in run metadata)."""

    precision: str  # `bf16` | `fp32`
    device: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for `torch.autocast` (None: run in fp32)."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self) -> AbstractContextManager:
        """`torch.autocast` for this device, enabled for bf16."""
        device_type = torch.device(self.device).type
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def precision_of(dtype: torch.dtype | str | None) -> str:
    """A diffusers-style `torch_dtype` (or a precision name) -> `auto | bf16 | fp32`."""
    if dtype is None:
        return "auto"
    if isinstance(dtype, str) and dtype in PRECISIONS:
        return dtype
    names = {torch.bfloat16: "bf16", torch.float32: "fp32"}
    if dtype not in names:
        raise ValueError(
            f"unsupported torch_dtype {dtype}; choose torch.bfloat16 (autocast), torch.float32 "
            "or None (auto)"
        )
    return names[dtype]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` when given (validated), else cuda > mps > cpu."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"unknown device '{device}': {err}") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device '{device}' requested but CUDA is not available here")
        if chosen.type == "mps" and not _mps_available():
            raise ValueError(f"device '{device}' requested but MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _gemm_tflops(dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up: kernel selection, packing buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def probe_cpu_gemm(size: int = PROBE_SIZE, repeats: int = 3) -> Probe:
    """Time a size^3 GEMM in fp32 and in bf16 on the CPU (best of `repeats` each)."""
    return Probe(_gemm_tflops(torch.float32, size, repeats),
                 _gemm_tflops(torch.bfloat16, size, repeats))  # fmt: skip


def _cpuinfo() -> tuple[str, str]:
    """(CPU model name, its bf16-relevant flags) from /proc/cpuinfo ("" where unknown)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                present = set(line.split(":", 1)[1].split())
                flags = ",".join(f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in present)
    except OSError:
        pass  # not Linux
    return model, flags


def cpu_name() -> str:
    """The CPU model and its bf16-relevant flags, e.g. `AMD EPYC (avx512_bf16,avx2)`."""
    model, flags = _cpuinfo()
    model = model or platform.processor() or platform.machine()
    return f"{model} ({flags})" if flags else model


def _cpu_key() -> str:
    """What the probe result depends on: CPU model and flags, threads, torch version, and the
    instruction set torch's and oneDNN's kernels actually use (`ATEN_CPU_CAPABILITY` and
    `ONEDNN_MAX_CPU_ISA` can limit it below what the CPU has)."""
    isa = f"{torch.backends.cpu.get_cpu_capability()}/{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"
    return (f"{cpu_name()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
            f"|isa={isa}")  # fmt: skip


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(root).expanduser() / "modality-forcing" / "precision_probe.json"


_MEMORY: dict[str, Probe] = {}


def cached_probe(probe: Callable[[], Probe] = probe_cpu_gemm) -> tuple[Probe, bool]:
    """The CPU probe result for this machine: (probe, whether it came from a cache)."""
    key = _cpu_key()
    if key in _MEMORY:
        return _MEMORY[key], True
    file = _cache_file()
    try:
        stored = json.loads(file.read_text()).get(key)
        if stored is not None:
            _MEMORY[key] = Probe(**stored)
            return _MEMORY[key], True
    except (OSError, ValueError, TypeError):
        pass  # no cache yet, or an unreadable one: measure again
    result = probe()
    _MEMORY[key] = result
    try:  # best effort: a read-only home only costs a re-probe next time
        data = json.loads(file.read_text()) if file.is_file() else {}
        data[key] = asdict(result)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(file)
    except (OSError, ValueError):
        pass
    return result, False


def resolve_precision(
    precision: str = "auto",
    device: str | torch.device | None = None,
    probe: Callable[[], Probe] | None = None,
) -> PrecisionChoice:
    """Turn `auto | bf16 | fp32` into the precision to run, on `device` (default: `pick_device`).

    Args:
        precision: `auto` decides per device (module docstring); `bf16` / `fp32` force it.
        device: where the model runs.
        probe: the CPU measurement (injectable for tests); default: the cached GEMM probe.

    Raises:
        ValueError: an unknown precision or an unavailable device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose from {list(PRECISIONS)}")
    dev = pick_device(device)
    name = str(dev)
    if precision != "auto":
        return PrecisionChoice(precision, name, f"{precision} requested")
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", name, "auto: this CUDA device computes bf16 natively")
        return PrecisionChoice("fp32", name, "auto: this CUDA device has no native bf16")
    if dev.type != "cpu":
        return PrecisionChoice("fp32", name, f"auto: fp32 on {dev.type} (bf16 autocast not used)")
    result, cached = cached_probe() if probe is None else (probe(), False)
    measured = (f"GEMM {result.bf16_tflops:.3f} TFLOP/s bf16 vs {result.fp32_tflops:.3f} fp32"
                f"{', cached probe' if cached else ''}")  # fmt: skip
    if result.speedup >= BF16_MARGIN:
        return PrecisionChoice(
            "bf16", name, f"auto: bf16 is {result.speedup:.1f}x faster ({measured})"
        )
    return PrecisionChoice(
        "fp32",
        name,
        f"auto: bf16 is not clearly faster on this CPU, {result.speedup:.2f}x ({measured})",
    )
