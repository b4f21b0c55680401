"""Throughput of the procedural world (`data/procedural.py`): samples/s per size, with and without
shadows, against the speed the issue asks for on a 2-core CPU."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.procedural import SceneConfig, render_split
from .progress import bench_bar
from .runs import write_json

# samples/s the procedural world must reach with shadows on a 2-core CPU (height, width) -> rate
TARGETS: dict[tuple[int, int], float] = {(64, 64): 200.0, (256, 256): 20.0}


def measure(cfg: SceneConfig, seconds: float) -> dict[str, Any]:
    """Render consecutive train samples in loader-sized calls for about `seconds`; samples/s."""
    per_call = max(1, cfg.chunk_pixels // (cfg.height * cfg.width))
    render_split("train", 0, per_call, cfg)  # warm-up: imports, allocator, caches
    count, start = 0, time.perf_counter()
    while True:
        count += len(render_split("train", count, per_call, cfg))
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return {"num_samples": count, "seconds": elapsed, "samples_per_s": count / elapsed}


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| size (HxW) | shadows | samples/s | target | meets |", "|---|---|---|---|---|"]
    for r in rows:
        target = f">= {r['target']:g}" if r["target"] else "-"
        meets = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        lines.append(
            f"| {r['height']}x{r['width']} | {'on' if r['shadows'] else 'off'} "
            f"| {r['samples_per_s']:.1f} | {target} | {meets} |"
        )
    return "\n".join(lines)


def run_data_benchmark(sizes: list[tuple[int, int]], seconds: float, out: str) -> dict[str, Any]:
    """Measure samples/s at each (height, width), with and without shadows.

    Prints a Markdown table and writes the results as JSON to `out` (parents created).

    Returns:
        dict with `machine` (CPU count, platform, numpy version) and `results`: one entry per
        size and shadow setting with `samples_per_s`, `target` (or None) and `meets_target`.
    """
    rows = []
    grid = [(h, w, shadows) for h, w in sizes for shadows in (True, False)]
    for height, width, shadows in bench_bar(grid, "data: sizes"):
        cfg = SceneConfig(height=height, width=width, shadows=shadows)
        row = {"height": height, "width": width, "shadows": shadows, **measure(cfg, seconds)}
        # targets are set for the full renderer, with shadows
        target = TARGETS.get((height, width)) if shadows else None
        row["target"] = target
        row["meets_target"] = None if target is None else row["samples_per_s"] >= target
        rows.append(row)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "seconds_per_measurement": seconds,
        "results": rows,
    }
    print(_markdown(rows))
    write_json(Path(out), result)  # atomic: a reader never sees half a file
    return result
