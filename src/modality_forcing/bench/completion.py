"""`modality-forcing bench completion`: depth completion from known points, in metres, against
the baselines of issue 23, settings chosen on val and reported on test.

Procedural scenes are rendered at the sensor resolution (`sensor_scale` x the model's working
size, so "500 random points" is 500 of 16,384 pixels at 128 x 128, not half of a 32 x 32 frame),
and the points are drawn there: `random:N` (N uniformly random valid pixels) or `lidar:B`
(`data/sparsify.lidar`, B beams, HDL-like). Every method sees what a user's call sees: the image
and the points framed to the working size (`inference/completion.frame_points`); its prediction
at the working size is resized back to the sensor resolution, the known points are written back
in (as the pipeline does), and it is scored there against the dense ground truth with no
alignment: AbsRel and RMSE (metres) over every valid pixel.

Methods (inference compute in network-evaluation units, a forward pass 1, forward + backward 3):
  ours       the `depth_completion` mode of the checkpoint (the hint input), steps and post-step
             (`SamplingConfig.completion_post`: paste / fit / residual) chosen on val;
  (a)        image -> depth of the same checkpoint, then least-squares scale + shift to the points
             (steps chosen on val);
  (a')       (a), then its errors at the points interpolated between them and added (the post-
             step ours may choose, `residual`, given to the baseline too);
  (b)        image -> depth guided toward the points through the network at every step (steps
             and step size chosen on val), then the same fit;
  (c)        the points alone, interpolated (linear, nearest outside their hull) at the sensor
             resolution;
  trivial    the points' mean depth everywhere (the completion analogue of the mean-map prior).
Designs (test only, every step count listed, none chosen): the hint alone (no post-step), and
pasting alone with its hint input unused, in `--reference`: a checkpoint never trained for
completion (the committed report used `mf8`, the shipped checkpoint before completion; git
9b025a3), by default the shipped one (then the row measures the hint input's share).
Each stochastic method runs with several sampling seeds; ratios to (a) and (b) come with an
interval over seeds and scenes (`metrics/bootstrap.seed_scene_ratio_ci`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.letterbox import frame as fit_frame
from ..data.letterbox import unletterbox
from ..data.sparse_points import point_mask
from ..data.sparsify import camera_pitch
from ..inference.completion import (
    POSTS,
    complete,
    fit_to_points,
    frame_points,
    guided_depth,
    interpolate_points,
    residual_interpolation,
)
from ..metrics.bootstrap import describe, seed_scene_ratio_ci, verdict_word
from ..metrics.depth import depth_metrics
from ..precision import resolve_precision
from ..sampling.generate import generate
from .progress import bench_bar
from .runs import write_json

PATTERNS = ("random:100", "random:500", "lidar:32", "lidar:64")
TARGET = 0.8  # ours / (a) AbsRel at most this (20% lower), and ours / (b) below 1


@dataclass(frozen=True)
class CompletionBudget:
    """What `bench completion` renders and sweeps (one per name in `BUDGETS`)."""

    name: str
    num_val: int
    num_test: int
    size: tuple[int, int] = (32, 32)  # the model's working size
    sensor_scale: int = 4  # scenes rendered and sparsified at this multiple of `size`
    steps: tuple[int, ...] = (1, 2, 4)  # ours and (a)
    guidance_steps: tuple[int, ...] = (1, 2, 4)  # (b)
    guidance_sizes: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)  # (b): step size on x_t
    seeds: tuple[int, ...] = (0, 1, 2)  # sampling seeds on test


BUDGETS = {
    "tiny": CompletionBudget("tiny", 3, 5, size=(16, 16), sensor_scale=2, steps=(1, 2),
                             guidance_steps=(1,), guidance_sizes=(0.1,), seeds=(0, 1)),
    "default": CompletionBudget("default", 64, 128),
}  # fmt: skip


@dataclass
class SensorScenes:
    """Procedural scenes at the sensor resolution, and what the sparsifiers need."""

    images: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    depth: torch.Tensor  # [N, 1, H, W] metres
    valid: torch.Tensor  # [N, 1, H, W] bool
    intrinsics: list[np.ndarray]
    pitch: list[float]


def load_sensor_scenes(split: str, num: int, size: tuple[int, int]) -> SensorScenes:
    from ..data.benchmarks import get_benchmark

    bench = get_benchmark("procedural", None, split=split, num=num, height=size[0], width=size[1])
    samples = [bench[i] for i in range(len(bench))]
    images = np.stack([np.asarray(s["image"]) for s in samples])
    depth = np.stack([np.asarray(s["depth"], np.float32) for s in samples])
    valid = np.stack([np.asarray(s["valid_mask"], bool) for s in samples])
    return SensorScenes(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1,
        depth=torch.from_numpy(depth)[:, None],
        valid=torch.from_numpy(valid)[:, None],
        intrinsics=[np.asarray(s["intrinsics"], np.float64) for s in samples],
        pitch=[camera_pitch(s) for s in samples],
    )  # fmt: skip


def known_masks(scenes: SensorScenes, pattern: str, split: str) -> torch.Tensor:
    """[N, 1, H, W] known pixels of `pattern` (`random:N` | `lidar:B`), one fixed draw per scene
    (seeded by the split, the pattern and the scene index)."""
    out = torch.zeros_like(scenes.valid)
    salt = sum(pattern.encode()) * 1000 + (0 if split == "val" else 1)
    for i in range(out.shape[0]):
        rng = np.random.default_rng([salt, i])
        depth, valid = scenes.depth[i, 0].numpy(), scenes.valid[i, 0].numpy()
        mask = point_mask(pattern, depth, valid, rng, scenes.intrinsics[i], scenes.pitch[i])
        out[i, 0] = torch.from_numpy(mask)
    return out


@dataclass
class Case:
    """One (split, pattern): the scenes at the sensor resolution and at the working size."""

    scenes: SensorScenes
    known: torch.Tensor  # [N, 1, H, W] at the sensor resolution
    image: torch.Tensor  # [N, 3, h, w] working size
    points: torch.Tensor  # [N, 1, h, w] framed known depth
    hit: torch.Tensor  # [N, 1, h, w] framed known mask
    box: Any

    @classmethod
    def build(cls, scenes: SensorScenes, known: torch.Tensor, size: tuple[int, int]) -> Case:
        image, box = fit_frame(scenes.images, size, "letterbox", pad_value=-1.0)
        points, hit, _ = frame_points(scenes.depth, known, size)
        return cls(scenes, known, image, points, hit, box)

    def finish(self, pred: torch.Tensor) -> torch.Tensor:
        """A working-size prediction [N, 1, h, w] metres -> the sensor resolution, points in
        (a prediction already at the sensor resolution is taken as it is)."""
        pred = pred.float().cpu()
        up = pred if pred.shape[-2:] == self.known.shape[-2:] else unletterbox(pred, self.box)
        return torch.where(self.known, self.scenes.depth, up)

    def scores(self, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image AbsRel and RMSE (metres) of a working-size prediction, no alignment."""
        m = depth_metrics(self.finish(pred), self.scenes.depth, self.scenes.valid)
        return {"abs_rel": m["abs_rel"], "rmse": m["rmse"]}


Method = Callable[[Case, int], torch.Tensor]  # (case, seed) -> working-size metric depth


def methods(model: Any, reference: Any, dtype: torch.dtype | None, budget: CompletionBudget
            ) -> dict[str, dict[str, tuple[Method, int]]]:  # fmt: skip
    """method -> setting name -> (function, inference cost in units)."""

    def gen(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def ours(steps: int, post: str = "paste", net: Any = model, hint: bool = True) -> Method:
        return lambda c, s: complete(net, c.image, c.points, c.hit, steps=steps, post=post,
                                     generator=gen(s), autocast_dtype=dtype,
                                     use_hint=hint)  # fmt: skip

    def fitted(steps: int) -> Method:
        def run(c: Case, s: int) -> torch.Tensor:
            h, w = c.image.shape[-2:]
            rel = generate(
                model,
                "image_to_depth",
                [""] * c.image.shape[0],
                h,
                w,
                image=c.image,
                num_steps=steps,
                generator=gen(s),
                autocast_dtype=dtype,
            ).depth
            return fit_to_points(rel.float(), c.points, c.hit)

        return run

    def guided(steps: int, size: float) -> Method:
        return lambda c, s: guided_depth(model, c.image, c.points, c.hit, steps, size,
                                         generator=gen(s), autocast_dtype=dtype)  # fmt: skip

    def corrected(method: Method) -> Method:
        return lambda c, s: residual_interpolation(method(c, s), c.points, c.hit)

    def trivial(c: Case, s: int) -> torch.Tensor:
        mean = (c.points * c.hit).flatten(1).sum(1) / c.hit.flatten(1).sum(1).clamp_min(1)
        return mean.view(-1, 1, 1, 1).expand_as(c.points).clone()

    return {
        "ours": {f"{n} steps, {post}": (ours(n, post), n)
                 for n in budget.steps for post in POSTS},
        "(a) image -> depth + LS fit": {f"{n} steps": (fitted(n), n) for n in budget.steps},
        "(a') (a) + residual interpolation": {
            f"{n} steps": (corrected(fitted(n)), n) for n in budget.steps},
        "(b) guidance + LS fit": {
            f"{n} steps, size {z:g}": (guided(n, z), 3 * n)
            for n in budget.guidance_steps for z in budget.guidance_sizes
        },
        # at the sensor resolution: interpolation needs no working grid
        "(c) interpolation": {"linear": (lambda c, s: interpolate_points(
            torch.where(c.known, c.scenes.depth, 0.0), c.known), 0)},
        "trivial: the points' mean": {"constant": (trivial, 0)},
        "design: the hint alone (no post-step)": {
            f"{n} steps": (ours(n, "none"), n) for n in budget.steps},
        "design: paste only (no completion training)": {
            f"{n} steps": (ours(n, net=reference, hint=False), n) for n in budget.steps},
    }  # fmt: skip


CHOSEN_ON_VAL = ("ours", "(a) image -> depth + LS fit", "(a') (a) + residual interpolation",
                 "(b) guidance + LS fit")  # fmt: skip
DESIGNS = ("design: the hint alone (no post-step)", "design: paste only (no completion training)")


def _mean(x: torch.Tensor) -> float:
    finite = x[torch.isfinite(x)]
    return float(finite.mean()) if finite.numel() else math.nan


def run_completion_benchmark(
    out: str | Path, ckpt: str | Path, reference: str | Path,
    budget: str = "default", patterns: tuple[str, ...] = PATTERNS, precision: str = "auto",
    device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Choose every method's setting on val per pattern, score the chosen ones on test over the
    budget's seeds; write OUT/completion.json and OUT/REPORT.md and print the table."""
    from ..inference.pipeline import ModalityForcingPipeline

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget '{budget}'; choose from {sorted(BUDGETS)}")
    b = BUDGETS[budget]
    ckpt, reference = Path(ckpt), Path(reference)
    model = ModalityForcingPipeline.from_pretrained(ckpt, device=device).model
    ref = ModalityForcingPipeline.from_pretrained(reference, device=device).model
    choice = resolve_precision(precision, next(model.parameters()).device)
    dtype = choice.autocast_dtype
    runs = methods(model, ref, dtype, b)
    sensor = (b.size[0] * b.sensor_scale, b.size[1] * b.sensor_scale)
    report: dict[str, Any] = {
        "ckpt": str(ckpt), "reference": str(reference), "budget": dataclasses.asdict(b),
        "sensor_size": list(sensor), "precision": choice.precision, "device": choice.device,
        "patterns": {},
    }  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    split_scenes = {s: load_sensor_scenes(s, n, sensor)
                    for s, n in (("val", b.num_val), ("test", b.num_test))}  # fmt: skip
    for pattern in bench_bar(list(patterns), "completion: patterns"):
        cases = {s: Case.build(sc, known_masks(sc, pattern, s), b.size)
                 for s, sc in split_scenes.items()}  # fmt: skip
        report["patterns"][pattern], shown = _pattern(cases, runs, b)
        name = f"examples_{pattern.replace(':', '')}.png"
        write_examples(Path(out) / name, cases["test"], shown)
        report["patterns"][pattern]["examples"] = name
    write_json(Path(out) / "completion.json", report)
    text = completion_table(report)
    (Path(out) / "REPORT.md").write_text(text)
    print(text)
    return report


EXAMPLES = 4  # test scenes drawn per pattern in examples_<pattern>.png
EXAMPLE_METHODS = ("ours", "(a) image -> depth + LS fit", "(c) interpolation")


def _pattern(cases: dict[str, Case], runs: dict[str, dict[str, tuple[Method, int]]],
             b: CompletionBudget) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # fmt: skip
    """One pattern's report, and the first test scenes' predictions of `EXAMPLE_METHODS`."""
    val, test = cases["val"], cases["test"]
    shown: dict[str, torch.Tensor] = {}
    known = test.known.flatten(1).sum(1).double()
    out: dict[str, Any] = {
        "known_pixels_test": {"mean": float(known.mean()), "fraction": float(
            (known / test.scenes.valid.flatten(1).sum(1)).mean())},
        "methods": {},
    }  # fmt: skip
    per_image: dict[str, torch.Tensor] = {}
    for name, settings in runs.items():
        row: dict[str, Any] = {}
        if name in CHOSEN_ON_VAL and len(settings) > 1:
            row["val"] = {k: _mean(val.scores(fn(val, 0))["abs_rel"])
                          for k, (fn, _) in settings.items()}  # fmt: skip
            row["chosen_on_val"] = min(row["val"], key=lambda k: (math.isnan(row["val"][k]),
                                                                  row["val"][k]))  # fmt: skip
            chosen = [row["chosen_on_val"]]
        elif name in DESIGNS:
            chosen = list(settings)  # reported, not chosen
        else:
            chosen = [next(iter(settings))]
        row["test"] = {}
        for key in chosen:
            fn, cost = settings[key]
            seeds = b.seeds if cost > 0 else b.seeds[:1]
            preds = [fn(test, s) for s in seeds]
            if name in EXAMPLE_METHODS:
                shown[name] = test.finish(preds[0])[:EXAMPLES]
            scores = [test.scores(p) for p in preds]
            abs_rel = torch.stack([s["abs_rel"] for s in scores])  # [S, N]
            rmse = torch.stack([s["rmse"] for s in scores])
            nan = int((~torch.isfinite(abs_rel)).sum())
            row["test"][key] = {"cost": cost, "abs_rel": _mean(abs_rel), "rmse": _mean(rmse),
                                "seeds": len(seeds), "nan_images": nan,
                                "images": int(abs_rel.numel())}  # fmt: skip
            if name not in DESIGNS:
                per_image[name] = abs_rel.expand(len(b.seeds), -1) if len(seeds) == 1 else abs_rel
        out["methods"][name] = row
    ours = per_image["ours"]
    out["verdicts"] = {}
    for base, target in (("(a) image -> depth + LS fit", TARGET),
                         ("(a') (a) + residual interpolation", 1.0),
                         ("(b) guidance + LS fit", 1.0), ("(c) interpolation", 1.0)):  # fmt: skip
        ci = seed_scene_ratio_ci(ours, per_image[base])
        out["verdicts"][base] = {**ci, "target": target, "verdict": verdict_word(ci, target),
                                 "text": describe(ci, target)}  # fmt: skip
    return out, shown


def write_examples(path: Path, case: Case, shown: dict[str, torch.Tensor]) -> None:
    """A PNG grid, one row per test scene: image, known points, ground truth, each shown
    method's metric depth (one colour range per row: the ground truth's), ours' AbsRel map.
    Known points are drawn 3x3 so they show."""
    from PIL import Image

    from ..data.colormap import colorize_depth, colorize_uncertainty

    rows = []
    for i in range(next(iter(shown.values())).shape[0]):
        gt = case.scenes.depth[i, 0].numpy()
        valid = case.scenes.valid[i, 0].numpy()
        lo, hi = np.percentile(gt[valid], [2, 98])
        known = case.known[i, 0].numpy()
        grown = torch.nn.functional.max_pool2d(case.known[i : i + 1].float(), 3, 1, 1)[0, 0]
        points = np.where(grown.numpy() > 0, 1.0, 0.0)
        spread = torch.nn.functional.max_pool2d(torch.from_numpy(np.where(known, gt, 0))[None],
                                                3, 1, 1)[0].numpy()  # fmt: skip
        image = ((case.scenes.images[i].permute(1, 2, 0).numpy() + 1) * 127.5).round()
        tiles = [image.astype(np.uint8),
                 colorize_depth(spread, points > 0, value_range=(lo, hi)),
                 colorize_depth(gt, valid, value_range=(lo, hi))]  # fmt: skip
        tiles += [colorize_depth(shown[m][i, 0].numpy(), valid, value_range=(lo, hi))
                  for m in EXAMPLE_METHODS if m in shown]  # fmt: skip
        ours = shown["ours"][i, 0].numpy()
        error = np.where(valid, np.abs(ours - gt) / np.maximum(gt, 1e-6), 0)
        tiles.append(colorize_uncertainty(error, valid))
        rows.append(np.concatenate(tiles, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def completion_table(report: dict[str, Any]) -> str:
    """The markdown report: one table per pattern, then the verdicts."""
    b = report["budget"]
    lines = [
        "# Depth completion (`bench completion`)", "",
        f"Checkpoint `{report['ckpt']}`; scenes rendered and sparsified at "
        f"{report['sensor_size'][1]}x{report['sensor_size'][0]}, the model at "
        f"{b['size'][1]}x{b['size'][0]}; {b['num_val']} val scenes choose each method's setting, "
        f"{b['num_test']} test scenes report it over sampling seeds {list(b['seeds'])}; "
        f"precision {report['precision']}. Metric depth, no alignment to the ground truth; "
        "AbsRel and RMSE (m) over every valid pixel, the known points written back in for "
        "every method. Cost: network evaluations per image (forward 1, forward + backward 3).",
    ]  # fmt: skip
    for pattern, r in report["patterns"].items():
        k = r["known_pixels_test"]
        lines += ["", f"## {pattern} ({k['mean']:.0f} known pixels per test image, "
                      f"{100 * k['fraction']:.2f}% of the valid ones)", "",
                  "| method | setting (chosen on val) | cost | AbsRel | RMSE (m) | NaN images |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in r["methods"].items():
            for key, t in row["test"].items():
                lines.append(f"| {name} | {key} | {t['cost']} | {t['abs_rel']:.4f} | "
                             f"{t['rmse']:.3f} | {t['nan_images']} of {t['images']} |")  # fmt: skip
        lines += ["", f"Test scenes, one per row: image, known points, ground truth, "
                  f"{', '.join(EXAMPLE_METHODS)}, ours' AbsRel (viridis, 0 to its 98th pct.): "
                  f"![{pattern}]({r['examples']})", ""]  # fmt: skip
        for base, v in r["verdicts"].items():
            want = "at most" if v["target"] < 1 else "below"
            lines.append(f"- ours / {base} AbsRel: {v['text']} (target: {want} {v['target']:g}): "
                         f"**{v['verdict']}**")  # fmt: skip
    return "\n".join(lines) + "\n"
