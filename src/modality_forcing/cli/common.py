"""Argument types and flags shared by the subcommands."""

from __future__ import annotations

import argparse
from typing import Any

from ..sampling.config import COMPLETION_POSTS, FRAMES, REDUCTIONS, SOLVERS, SamplingConfig


def size(text: str) -> tuple[int, int]:
    """Parse `64` or `48x64` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size '{text}' must be N or HxW, e.g. 64 or 48x64"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"size '{text}' must be N or HxW with sides >= 8")
    return parts[0], parts[1]


def add_hardware(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """`--precision` and `--device`, the same on every command that runs a model."""
    keeps = (
        " (default: the config's `precision`, itself auto by default)" if default is None else ""
    )
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default=default,
        help="compute precision; auto: bf16 only where the device computes it natively (CUDA "
        "with bf16, a CPU where a cached GEMM probe shows bf16 clearly faster), else fp32" + keeps,
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda > mps > cpu)"
    )


# Flags of `SamplingConfig` fields, shared by the commands that sample; every default is None:
# the checkpoint's own per-mode default, else its format's (`sampling/config.py`).
SAMPLING_FLAGS: dict[str, dict] = {
    "steps": {"type": int, "help": "sampler steps"},
    "guidance": {"type": float, "help": "classifier-free guidance scale (1: off)"},
    "solver": {"choices": list(SOLVERS), "help": "ODE solver (default euler)"},
    "shift_mu": {"type": float, "help": "time shift of the schedule"},
    "log2_alpha": {"type": float, "help": "joint: depth lags the image if > 0 (the tilt)"},
    "ensemble": {"type": int, "help": "image -> depth samples per input (default 1)"},
    "reduction": {"choices": list(REDUCTIONS), "help": "of an ensemble (default median)"},
    "completion_post": {
        "choices": list(COMPLETION_POSTS),
        "help": "depth_completion: paste the known points into every step, fit the prediction "
        "to them (least-squares scale + shift), or interpolate its errors at them (residual, "
        "the default: best on val in bench completion)",
    },
    "frame": {
        "choices": list(FRAMES),
        "help": "how inputs of another size reach the model's working size (default "
        "letterbox; stretch did better for square-trained models: docs/depth_quality.md)",
    },
}


def add_sampling(p: argparse.ArgumentParser, *names: str, prefix: str = "") -> None:
    """Flags for the named `SamplingConfig` fields (`--steps`, `--log2-alpha`, ...); defaults
    None, i.e. the checkpoint's own per-mode default, else its format's."""
    group = p.add_argument_group(
        "sampling", "default: the checkpoint's own per-mode setting, else its format's"
    )
    for name in names:
        flag = "--" + prefix + name.replace("_", "-")
        group.add_argument(flag, dest=prefix.replace("-", "_") + name, default=None,
                           **SAMPLING_FLAGS[name])  # fmt: skip


def sampling_from(
    args: argparse.Namespace, prefix: str = "", base: SamplingConfig | None = None, **fixed: Any
) -> SamplingConfig:
    """`base` (default: all defaults) with the flags given (`add_sampling`) and `fixed` fields."""
    given = {n: getattr(args, prefix + n) for n in SAMPLING_FLAGS if hasattr(args, prefix + n)}
    return (base or SamplingConfig()).with_overrides(**given, **fixed)
