"""Argument types and flags shared by the subcommands."""

from __future__ import annotations

import argparse


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
