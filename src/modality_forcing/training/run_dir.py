"""A run folder's bookkeeping outside the loop: the `checkpoints/latest` pointer, the metrics log
trimmed back to a resumed step, and forking a run into a new folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .checkpoint import fsync_path

LATEST, METRICS = "latest", "metrics.jsonl"
VAL_LOG = "val.jsonl"  # validation scores during training (`val_every`)


def trim_metrics(file: Path, step: int) -> None:
    """Drop the records past `step` (and a line torn by a crash) from a JSONL metrics log,
    atomically, so a resumed run does not log those steps twice."""
    if not file.is_file():
        return
    lines = file.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done = record.get("step") if isinstance(record, dict) else None
        if not isinstance(done, int) or done <= step:
            keep.append(line)
    if len(keep) == len(lines):
        return
    tmp = file.with_name(file.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def write_latest(ckpt_dir: Path, name: str, manifest_sha256: str) -> None:
    """Atomically write `ckpt_dir/latest` = "<checkpoint name> <manifest SHA-256>", fsynced."""
    tmp = ckpt_dir / (LATEST + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"{name} {manifest_sha256}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_dir / LATEST)
    fsync_path(ckpt_dir)


def read_latest(ckpt_dir: Path) -> tuple[str, str]:
    """(checkpoint name, manifest SHA-256) from `ckpt_dir/latest`, as `write_latest` wrote them
    (unchecked: the callers say what a malformed pointer means to them)."""
    name, _, digest = (ckpt_dir / LATEST).read_text().strip().partition(" ")
    return name, digest


def fork_run(source: str | Path, out_dir: str | Path) -> Path:
    """Start run `out_dir` from the latest checkpoint of run `source` (weights, optimiser, EMA,
    step, training time, data position), to continue it under changed settings while `source`
    stays as it is; `train(cfg, resume=True)` with `cfg.out_dir = out_dir` then continues it.
    The checkpoint is copied under a temporary name and renamed, then `latest` (with the
    manifest hash, which the resume verifies) is written last; a run that already has a
    checkpoint is never overwritten. Returns the copied checkpoint."""
    src, dst = Path(source) / "checkpoints", Path(out_dir) / "checkpoints"
    pointer = src / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"--fork-from: '{source}' has no checkpoint ({pointer} missing)")
    if (dst / LATEST).exists():
        raise FileExistsError(f"--fork-from: '{out_dir}' already has a checkpoint; resume it")
    name, digest = read_latest(src)
    if not re.fullmatch(r"step_\d+", name) or not (src / name).is_dir():
        raise ValueError(f"--fork-from: '{pointer}' names no checkpoint of '{source}'")
    dst.mkdir(parents=True, exist_ok=True)
    tmp = dst / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / name, tmp)
    os.replace(tmp, dst / name)
    if (Path(source) / METRICS).is_file():  # the log so far (a resume trims it to the step)
        shutil.copyfile(Path(source) / METRICS, Path(out_dir) / METRICS)
    write_latest(dst, name, digest)
    return dst / name
