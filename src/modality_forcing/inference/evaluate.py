"""Two-stage depth evaluation, Marigold-style: predict (a function or files), then score.

Scoring writes `per_sample.csv` (one row per image per protocol), `summary.json` and
`summary.md` (protocols side by side); metrics are per image, averaged over images. Samples with
an `instance` map (the procedural world) are also scored on their object pixels alone
(`object_abs_rel`: the same alignment, fitted on all valid pixels).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.benchmarks import get_benchmark
from ..data.benchmarks.base import read_png16
from ..data.decode import load_array
from ..data.scene_graph import FIRST_OBJECT_INSTANCE
from ..metrics.alignment import PROTOCOLS, align, protocols_for
from ..metrics.depth import (
    METRIC_LABELS,
    METRICS,
    depth_metrics,
    mean_over_images,
    region_abs_rel,
)

# A predictor maps a sample dict to a depth (or disparity) map [H, W] at the sample's resolution.
PredictFn = Callable[[dict[str, Any]], np.ndarray]

CSV_FIELDS = ("key", "protocol", "n_valid", "degenerate", "scale", "shift", *METRICS)
OBJECT_ABS_REL = "object_abs_rel"  # a column only for samples with an `instance` map
OBJECT_LABEL = "AbsRel on objects ↓"


def resolve_protocols(protocol: str | Sequence[str], prediction_space: str = "depth") -> list[str]:
    """`all` -> every protocol valid for the prediction space; a name or list is checked."""
    names = [protocol] if isinstance(protocol, str) else list(protocol)
    if names == ["all"]:
        return protocols_for(prediction_space)
    allowed = protocols_for(prediction_space)
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown protocol '{name}'; choose from {[*allowed, 'all']}")
    return names


class PredictionFolder:
    """Predictions stored as files, one per sample, usable as a `PredictFn`.

    Naming rule: `<root>/<key>.npy` (float32/float64 [H, W], [1, H, W] or [H, W, 1]: depth,
    relative depth or disparity) or, if absent, `<root>/<key>.png` (16-bit, value / `png_scale`);
    `<key>` is the sample key exactly as the benchmark reader yields it (it may contain `/`,
    meaning subfolders). Predictions must be at the ground-truth resolution.
    """

    def __init__(self, root: str | Path, png_scale: float = 1000.0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"predictions folder {self.root} does not exist")
        self.png_scale = png_scale

    def path_for(self, key: str) -> Path:
        """The file holding `key`'s prediction; raises naming both candidates if neither exists."""
        for ext in (".npy", ".png"):
            path = self.root / f"{key}{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no prediction for '{key}': expected {self.root / key}.npy or .png"
        )

    def __call__(self, sample: dict[str, Any]) -> np.ndarray:
        path = self.path_for(sample["key"])
        if path.suffix == ".npy":
            return load_array(path)
        return read_png16(path) / self.png_scale


@dataclass
class EvalSummary:
    """Means per protocol and metric, with the counts behind them."""

    dataset: str
    depth_range: tuple[float, float]
    prediction_space: str
    protocols: list[str]
    num_samples: int = 0
    skipped: list[str] = field(default_factory=list)  # keys with no valid ground truth
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    num_scored: dict[str, int] = field(default_factory=dict)
    num_degenerate: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:  # strict JSON has no NaN/inf
            return x if math.isfinite(x) else None

        return {
            "dataset": self.dataset,
            "depth_range": [num(v) for v in self.depth_range],
            "prediction_space": self.prediction_space,
            "averaging": "per-image metrics, mean over images with a valid fit",
            "num_samples": self.num_samples,
            "num_skipped": len(self.skipped),
            "skipped_keys": self.skipped,
            "protocols": {
                p: {
                    "num_scored": self.num_scored[p],
                    "num_degenerate": self.num_degenerate[p],
                    "metrics": {m: num(v) for m, v in self.metrics[p].items()},
                }
                for p in self.protocols
            },
        }

    def to_markdown(self) -> str:
        lo, hi = self.depth_range
        lines = [
            f"# Depth evaluation: {self.dataset}",
            "",
            f"{self.num_samples} images, {len(self.skipped)} skipped (no valid ground truth); "
            f"depth range ({lo:g}, {hi:g}) m; predictions in {self.prediction_space} space; "
            "per-image metrics averaged over images.",
            "",
            "| metric | " + " | ".join(self.protocols) + " |",
            "|---" * (len(self.protocols) + 1) + "|",
        ]
        labels = {**METRIC_LABELS, OBJECT_ABS_REL: OBJECT_LABEL}
        for m in [m for m in labels if m in self.metrics[self.protocols[0]]]:
            cells = [f"{self.metrics[p][m]:.4f}" for p in self.protocols]
            lines.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
        for label, counts in (("scored", self.num_scored), ("degenerate", self.num_degenerate)):
            cells = [str(counts[p]) for p in self.protocols]
            lines.append(f"| images {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _as_prediction(pred: Any, shape: tuple[int, int], where: str, resize: bool) -> torch.Tensor:
    """Squeeze a prediction to [H, W] float64; resize bilinearly only when asked to."""
    pred = torch.as_tensor(np.asarray(pred)).double()
    if pred.dim() == 3 and 1 in (pred.shape[0], pred.shape[-1]):
        pred = pred.squeeze(0) if pred.shape[0] == 1 else pred.squeeze(-1)
    if pred.dim() != 2:
        raise ValueError(f"prediction {where} has shape {tuple(pred.shape)}; want [H, W]")
    if tuple(pred.shape) != tuple(shape):
        if not resize:
            raise ValueError(
                f"prediction {where} is {tuple(pred.shape)} but the ground truth is "
                f"{tuple(shape)}; pass --resize-predictions to resize it bilinearly"
            )
        pred = torch.nn.functional.interpolate(
            pred[None, None], size=tuple(shape), mode="bilinear", align_corners=False
        )[0, 0]
    return pred


def _score_sample(
    key: str,
    pred: torch.Tensor,
    depth: np.ndarray,
    mask: np.ndarray,
    protocols: list[str],
    depth_range: tuple[float, float],
    prediction_space: str,
    device: str | torch.device,
    objects: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One CSV row per protocol for one image: fit, clip, score; with an `objects` mask [H, W],
    also AbsRel over the valid object pixels (NaN when none is visible)."""
    pred = pred.to(device)
    gt = torch.as_tensor(np.asarray(depth)).to(device)
    mask_t = torch.as_tensor(mask).to(device)
    region = (
        None if objects is None else (torch.as_tensor(objects).to(device) & mask_t.bool())[None]
    )
    rows = []
    for name in protocols:
        result = align(pred, gt, mask_t, name, depth_range, prediction_space)
        values = depth_metrics(result.aligned, gt, mask_t)
        row = {
            "key": key,
            "protocol": name,
            "n_valid": int(mask.sum()),
            "degenerate": bool(result.degenerate[0]),
            "scale": float(result.scale[0]),
            "shift": float(result.shift[0]),
            **{m: float(values[m][0]) for m in METRICS},
        }
        if region is not None:
            row[OBJECT_ABS_REL] = float(region_abs_rel(result.aligned, gt, region,
                                                       depth_range[0])[0])  # fmt: skip
        rows.append(row)
    return rows


def _object_pixels(sample: dict[str, Any]) -> np.ndarray | None:
    """The object pixels [H, W] of a sample with an `instance` map (procedural scenes), else
    None."""
    instance = sample.get("instance")
    return None if instance is None else np.asarray(instance) >= FIRST_OBJECT_INSTANCE


def score_predictions(
    samples: Iterable[dict[str, Any]],
    predictions: PredictFn | str | Path,
    protocols: str | Sequence[str] = "all",
    depth_range: tuple[float, float] | None = None,
    out_dir: str | Path | None = None,
    *,
    prediction_space: str = "depth",
    resize_predictions: bool = False,
    limit: int | None = None,
    dataset: str = "",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> EvalSummary:
    """Score predictions of every sample under each alignment protocol.

    Args:
        samples: iterable of samples (`image`, `depth` [H, W] metres, `valid_mask` [H, W], `key`),
            e.g. a benchmark reader.
        predictions: a `PredictFn`, or a folder following `PredictionFolder`'s naming rule.
        protocols: `all`, a protocol name, or a list of names (see `metrics.alignment`).
        depth_range: clip range for aligned predictions; default `samples.depth_range`.
        out_dir: where to write per_sample.csv, summary.json, summary.md (None: write nothing).
        prediction_space: `depth` or `disparity` (affine-invariant inverse depth).
        resize_predictions: resize mismatched predictions bilinearly instead of raising.
        limit: score only the first `limit` samples.
        dataset: name for the reports (default: `samples.name` if present).
        device: where alignment and metrics run.
        progress: show a tqdm bar.

    Returns:
        EvalSummary with the mean of each metric per protocol and the counts.
    """
    names = resolve_protocols(protocols, prediction_space)
    if depth_range is None:
        depth_range = getattr(samples, "depth_range", None)
        if depth_range is None:
            raise ValueError("depth_range is required when the samples do not define one")
    predict = PredictionFolder(predictions) if isinstance(predictions, str | Path) else predictions
    name = dataset or getattr(samples, "name", "")
    summary = EvalSummary(name, tuple(depth_range), prediction_space, names)
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    if limit is not None:
        samples, total = itertools.islice(samples, limit), min(total or limit, limit)
    rows: list[dict[str, Any]] = []
    for sample in tqdm(samples, total=total, desc=f"eval {summary.dataset}", disable=not progress):
        summary.num_samples += 1
        key, mask = str(sample["key"]), np.asarray(sample["valid_mask"], dtype=bool)
        if not mask.any():
            summary.skipped.append(key)
            continue
        where = str(predict.path_for(key)) if hasattr(predict, "path_for") else f"for '{key}'"
        pred = _as_prediction(predict(sample), mask.shape, where, resize_predictions)
        gt, objects = sample["depth"], _object_pixels(sample)
        rows += _score_sample(key, pred, gt, mask, names, depth_range, prediction_space, device,
                              objects)  # fmt: skip
    for name in names:
        mine = [r for r in rows if r["protocol"] == name]
        counted = [mean_over_images(torch.tensor([r[m] for r in mine])) for m in METRICS]
        summary.metrics[name] = {m: mean for m, (mean, _) in zip(METRICS, counted, strict=True)}
        with_objects = [r[OBJECT_ABS_REL] for r in mine if OBJECT_ABS_REL in r]
        if with_objects:  # a mean over the images that show any object
            summary.metrics[name][OBJECT_ABS_REL] = mean_over_images(
                torch.tensor(with_objects))[0]  # fmt: skip
        summary.num_scored[name] = counted[0][1]
        summary.num_degenerate[name] = sum(r["degenerate"] for r in mine)
    if out_dir is not None:
        write_reports(summary, rows, out_dir)
    return summary


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_reports(summary: EvalSummary, rows: list[dict[str, Any]], out_dir: str | Path) -> None:
    """Write per_sample.csv, summary.json and summary.md into `out_dir` (atomically each)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "per_sample.csv.tmp"
    with tmp.open("w", newline="") as f:
        objects = (OBJECT_ABS_REL,) if any(OBJECT_ABS_REL in r for r in rows) else ()
        writer = csv.DictWriter(f, fieldnames=(*CSV_FIELDS, *objects))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "per_sample.csv")
    _atomic_write(out / "summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
    _atomic_write(out / "summary.md", summary.to_markdown())


def evaluate_benchmark(
    dataset: str,
    data_root: str | Path | None,
    predictions: PredictFn | str | Path,
    out_dir: str | Path | None,
    *,
    split: str | None = None,
    split_file: str | Path | None = None,
    protocol: str | Sequence[str] = "all",
    limit: int | None = None,
    depth_range: tuple[float, float] | None = None,
    size: tuple[int, int] = (64, 64),
    **score_options: Any,
) -> EvalSummary:
    """Read a benchmark by name and score `predictions` on it (what `modality-forcing eval` runs).

    Args:
        dataset: a name in `data.benchmarks.BENCHMARKS`.
        data_root: the dataset's root folder (unused for `procedural`).
        predictions: a `PredictFn` or a predictions folder.
        out_dir: report folder (None: no files).
        split, split_file: see the benchmark's module docstring.
        protocol: `all`, a name or a list of names.
        limit: first N samples only (`procedural`: N scenes, default 100).
        depth_range: override the benchmark's depth range.
        size: (height, width) of `procedural` scenes.
        **score_options: passed to `score_predictions` (prediction_space, resize_predictions, ...).
    """
    options: dict[str, Any] = {"depth_range": depth_range}
    if dataset == "procedural":
        options.update(num=limit or 100, height=size[0], width=size[1])
    bench = get_benchmark(dataset, data_root, split=split, split_file=split_file, **options)
    return score_predictions(
        bench, predictions, protocol, None, out_dir, limit=limit, dataset=dataset, **score_options
    )


def export_inputs(
    dataset: str,
    data_root: str | Path | None,
    out_dir: str | Path,
    *,
    split: str | None = None,
    split_file: str | Path | None = None,
    limit: int | None = None,
    size: tuple[int, int] = (64, 64),
) -> list[str]:
    """Write every input image of a benchmark as `<out_dir>/<key>.png` (8-bit RGB, at the
    ground truth's resolution), plus `inputs.json` (keys and sizes), so any method can predict
    `<key>.npy` / `<key>.png` files that `evaluate_benchmark` then scores. Returns the keys.

    Raises:
        ValueError: a key that would leave `out_dir` (absolute, or with `..`).
    """
    from .export import atomic_write_bytes

    options: dict[str, Any] = {}
    if dataset == "procedural":
        options.update(num=limit or 100, height=size[0], width=size[1])
    bench = get_benchmark(dataset, data_root, split=split, split_file=split_file, **options)
    out = Path(out_dir)
    keys, sizes = [], {}
    for i, sample in enumerate(bench):
        if limit is not None and i >= limit:
            break
        key = str(sample["key"])
        rel = Path(key + ".png")
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"sample key '{key}' would be written outside '{out}'")
        image = np.asarray(sample["image"])
        buf = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buf, format="PNG")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / rel, buf.getvalue())
        keys.append(key)
        sizes[key] = list(image.shape[:2])
    manifest = {"dataset": dataset, "split": split, "num": len(keys), "sizes": sizes,
                "predict": "<key>.npy (float [H, W]) or <key>.png (16-bit, /1000) per key, at "
                           "the size given here"}  # fmt: skip
    _atomic_write(out / "inputs.json", json.dumps(manifest, indent=2) + "\n")
    return keys


__all__ = [
    "PROTOCOLS",
    "EvalSummary",
    "PredictFn",
    "PredictionFolder",
    "evaluate_benchmark",
    "export_inputs",
    "resolve_protocols",
    "score_predictions",
]
