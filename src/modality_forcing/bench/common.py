"""What the training benches share: one `Budget` (the compute of one training run) and the
training config it implies, procedural scenes as tensors, and one image -> depth scorer
(least-squares aligned AbsRel / delta1 of a checkpoint's samples, cached on disk). Each suite
extends `Budget` with what it scores (scene counts, checkpoints per curve, sampling steps)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.scene_graph import FIRST_OBJECT_INSTANCE
from ..flow.path import interpolate
from ..metrics.alignment import aligned_scores
from ..modalities import IMAGE
from ..precision import resolve_precision
from ..sampling.config import SamplingConfig
from ..sampling.sampler import StateHook
from .runs import write_json


@dataclass(frozen=True)
class Budget:
    """Compute per training run: exactly `steps` x `batch` samples of `preset` at `size`."""

    preset: str
    size: tuple[int, int]
    steps: int
    batch: int
    precision: str = "auto"  # training and inference (`precision.resolve_precision`)
    device: str | None = None  # training runs (None: cuda > mps > cpu); scoring runs on the CPU
    lr: float = 4e-4
    warmup: int = 50

    def train_config(
        self, run_dir: str | Path, seed: int = 0, log_points: int = 20, **fields: Any
    ) -> dict[str, Any]:
        """A training config (a dict for `resolve_train_config`) of one run under this budget:
        stage `mf`, no sample grids, `log_points` log lines, a checkpoint at least every 10
        minutes (a stopped benchmark resumes from it: `runs.train_cached`); `fields` add or
        replace keys."""
        height, width = self.size
        return {
            "preset": self.preset, "stage": "mf", "out_dir": str(run_dir),
            "batch_size": self.batch, "max_steps": self.steps, "precision": self.precision,
            "device": self.device, "seed": seed, "sample_every": 0, "ckpt_every_minutes": 10.0,
            "log_every": max(1, self.steps // log_points),
            "data": {"height": height, "width": width},
            "optim": {"lr": self.lr, "warmup_steps": min(self.warmup, self.steps)},
            **fields,
        }  # fmt: skip

    def compute(self) -> Budget:
        """Just the compute of this (suite-specific) budget, to build another suite's from."""
        return Budget(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Budget)})


# ---------------------------------------------------------------------------------- scenes


@dataclass
class Scenes:
    """A batch of procedural scenes as tensors."""

    images: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    depth: torch.Tensor  # [N, H, W] metres, float64
    mask: torch.Tensor  # [N, H, W] bool
    depth_range: tuple[float, float]
    captions: list[str]
    objects: torch.Tensor | None = None  # [N, H, W] bool: valid pixels of objects, if known


def load_scenes(split: str, num: int, height: int, width: int, lidar_band: bool = False
                ) -> Scenes:  # fmt: skip
    """The first `num` scenes of a procedural split, rendered at (height, width); with
    `lidar_band`, scored only in the LiDAR's elevation band (`sparsify.within_lidar_band`)."""
    from ..data.benchmarks import get_benchmark
    from ..data.sparsify import within_lidar_band

    bench = get_benchmark("procedural", None, split=split, num=num, height=height, width=width)
    samples = [bench[i] for i in range(len(bench))]
    if lidar_band:
        samples = [within_lidar_band(s) for s in samples]
    return scenes_from_samples(samples, tuple(bench.depth_range))


def scenes_from_samples(samples: list[dict[str, Any]], depth_range: tuple[float, float]
                        ) -> Scenes:  # fmt: skip
    """Procedural samples (`image`, `depth`, `valid_mask`, `instance`, `caption`) as `Scenes`."""
    images = np.stack([np.asarray(s["image"]) for s in samples])
    mask = torch.from_numpy(np.stack([np.asarray(s["valid_mask"]) for s in samples])).bool()
    return Scenes(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1,
        depth=torch.from_numpy(np.stack([np.asarray(s["depth"]) for s in samples])).double(),
        mask=mask,
        depth_range=tuple(depth_range),
        captions=[str(s.get("caption", "")) for s in samples],
        objects=torch.from_numpy(
            np.stack([np.asarray(s["instance"]) >= FIRST_OBJECT_INSTANCE for s in samples])
        )
        & mask,
    )


def prior_scores(size: tuple[int, int], **splits: Scenes) -> dict[str, dict[str, float]]:
    """The mean training depth map at `size` (`metrics.scenes.mean_depth_map`, made once)
    predicted for every scene of each split and scored like a model (least squares, object
    AbsRel): the baseline of every skill a bench reports. {split name: scores}."""
    from ..data.procedural import SceneConfig
    from ..metrics.scenes import mean_depth_map

    prior = mean_depth_map(SceneConfig(height=size[0], width=size[1]))
    return {name: score_prior(prior, s) for name, s in splits.items()}


def score_prior(prior: torch.Tensor, scenes: Scenes) -> dict[str, float]:
    """A depth map `prior` [H, W] predicted for every scene, scored like a model
    (`aligned_scores`: least squares, with object AbsRel when the scenes know their objects)."""
    return aligned_scores(prior.expand_as(scenes.depth), scenes.depth, scenes.mask,
                          scenes.depth_range, objects=scenes.objects)[1]  # fmt: skip


def nan_failures(report: Any, path: str = "") -> list[str]:
    """Every scored set in a report (nested dicts and lists) that left images out of its means
    because they scored NaN (`aligned_scores`' `nan_images`): one line `PATH: K of N images`."""
    found: list[str] = []
    if isinstance(report, dict):
        if report.get("nan_images"):
            found.append(f"{path or 'report'}: {report['nan_images']} of {report['images']} images")
        for key, value in report.items():
            found += nan_failures(value, f"{path}.{key}" if path else str(key))
    elif isinstance(report, list):
        for i, value in enumerate(report):
            found += nan_failures(value, f"{path}[{i}]")
    return found


def failures_section(report: Any) -> list[str]:
    """Markdown lines that say how many images scored NaN and where (never silently dropped)."""
    found = nan_failures(report)
    head = ["", "## Failures (images that scored NaN, left out of the means)", ""]
    return head + ([f"- {line}" for line in found] if found else ["none"])


# ------------------------------------------------------------------------------- inference


# Image -> depth of a model trained with one shared t: the baseline of `bench paper`, with one
# noise draw for the replaced image over the whole trajectory, or a fresh draw at every step.
REPLACEMENT = "image_to_depth_replacement"
REPLACEMENT_FRESH = "image_to_depth_replacement_fresh"
# ... and with RePaint's resampling: each step taken, re-noised and retaken REPAINT_JUMPS times
# (fresh noise for the replaced image at every call; 1 + REPAINT_JUMPS calls per step)
REPLACEMENT_REPAINT = "image_to_depth_replacement_repaint"
REPAINT_JUMPS = 2
PER_IMAGE = "abs_rel_per_image"  # `score`'s per-image AbsRel (cached, not in reports)
REPLACEMENTS = (REPLACEMENT, REPLACEMENT_FRESH, REPLACEMENT_REPAINT)


def imposed_by_replacement(clean: dict[str, torch.Tensor],
                           fresh: torch.Generator | None = None) -> StateHook:  # fmt: skip
    """A sampler hook (`sample(before_call=...)`) that conditions a shared-t model the way joint
    models with one noise level are: before every step the given modalities' states are set to
    the clean tensors noised to the current t, with one noise draw (the sampler's initial one)
    for the whole trajectory, or, given a generator `fresh`, a new draw from it at every step;
    the other modalities move as usual."""
    noise: dict[str, torch.Tensor] = {}

    def hook(state: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> None:
        for m, x in clean.items():
            if m not in noise:  # the first call sees the sampler's initial draw
                noise[m] = state[m]
            elif fresh is not None:
                drawn = torch.randn(state[m].shape, generator=fresh, dtype=torch.float32)
                noise[m] = drawn.to(state[m])
            state[m] = interpolate(x.to(state[m]), noise[m], t[m])

    return hook


@torch.no_grad()
def sample_depths(
    model: Any, images: torch.Tensor, setting: SamplingConfig, size: tuple[int, int],
    seed: int = 0, chunk: int = 100, mode: str = "image_to_depth", precision: str = "auto",
) -> torch.Tensor:  # fmt: skip
    """`setting.ensemble` image -> depth samples per image: [N, E, H, W] at the input size.

    Inputs of another shape than the model's `size` are letterboxed (or stretched) to it and
    the predictions mapped back. `mode=REPLACEMENT` conditions a shared-t model by replacement
    instead (`imposed_by_replacement`).
    """
    from ..data.letterbox import frame, unletterbox
    from ..sampling.generate import generate

    n, e = images.shape[0], setting.ensemble
    h, w = images.shape[-2:]
    box = None
    if (h, w) != tuple(size):
        images, box = frame(images, size, setting.frame, pad_value=-1.0)
    generator = torch.Generator().manual_seed(seed)
    dtype = resolve_precision(precision, next(model.parameters()).device).autocast_dtype
    repeated = images.repeat_interleave(e, dim=0)
    depths = []
    for part in repeated.split(chunk):
        given: dict[str, Any] = {"image": part}
        if mode in REPLACEMENTS:
            latent = model.codec.encode(part.to(next(model.parameters()).device).float())
            fresh = generator if mode in (REPLACEMENT_FRESH, REPLACEMENT_REPAINT) else None
            given = {"before_call": imposed_by_replacement({IMAGE: latent}, fresh)}
            if mode == REPLACEMENT_REPAINT:
                given["resample"] = REPAINT_JUMPS
        out = generate(
            model, "shared" if mode in REPLACEMENTS else mode, [""] * part.shape[0], *size,
            num_steps=setting.steps, solver=setting.solver, shift_mu=setting.shift_mu,
            t_min=setting.t_min, generator=generator, autocast_dtype=dtype, **given,
        )  # fmt: skip
        depths.append(out.depth.float())
    depth = torch.cat(depths)
    if box is not None:
        depth = unletterbox(depth, box)
    return depth.view(n, e, h, w)


def score(samples: torch.Tensor, scenes: Scenes, reduction: str = "median") -> dict[str, float]:
    """Ensemble (if E > 1), align per image (least squares) and score: AbsRel, delta1, object
    AbsRel, each image's AbsRel (`PER_IMAGE`, NaN where it could not be scored) and the
    Spearman correlation of the ensemble's spread with the absolute relative error."""
    from ..metrics.depth import depth_metrics, mean_over_images
    from ..metrics.uncertainty import spearman_per_image
    from ..sampling.ensemble import ensemble_depth

    if samples.shape[1] > 1:
        pairs = [ensemble_depth(s[:, None], reduction) for s in samples]
        pred = torch.cat([p for p, _ in pairs])[:, 0]
        spread = torch.cat([u for _, u in pairs])[:, 0]
    else:
        pred, spread = samples[:, 0], None
    aligned, out = aligned_scores(pred, scenes.depth, scenes.mask, scenes.depth_range,
                                  objects=scenes.objects)  # fmt: skip
    out[PER_IMAGE] = depth_metrics(aligned, scenes.depth.double(), scenes.mask)["abs_rel"].tolist()
    if spread is not None:
        error = (aligned - scenes.depth).abs() / scenes.depth.clamp_min(1e-6)
        out["spearman"] = mean_over_images(spearman_per_image(spread, error, scenes.mask))[0]
    return out


class Scorer:
    """Scores settings of one checkpoint on one split, reusing samples shared by settings
    (an ensemble's mean and median come from the same draws), with results cached on disk."""

    def __init__(self, ckpt: str | Path, scenes: Scenes, size: tuple[int, int],
                 cache: Path, precision: str = "auto") -> None:  # fmt: skip
        self.ckpt, self.scenes, self.size, self.cache_path = Path(ckpt), scenes, size, cache
        self.precision = precision
        weights = (self.ckpt / "model.safetensors").stat()
        self.weights = f"{weights.st_size}:{weights.st_mtime_ns}"  # retrained: scores are stale
        old = json.loads(cache.read_text()) if cache.is_file() else {}
        self.cache = old if old.get("weights") == self.weights else {"weights": self.weights}
        self._model: Any = None
        self._samples: dict[SamplingConfig, torch.Tensor] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from ..inference.pipeline import ModalityForcingPipeline

            self._model = ModalityForcingPipeline.from_pretrained(self.ckpt, device="cpu").model
        return self._model

    def __call__(self, setting: SamplingConfig) -> dict[str, float]:
        """The scores of `setting` (means over the images)."""
        return {k: v for k, v in self._scored(setting).items() if k != PER_IMAGE}

    def per_image(self, setting: SamplingConfig) -> list[float]:
        """Each image's AbsRel under `setting` (for paired comparisons between models)."""
        return self._scored(setting)[PER_IMAGE]

    def _scored(self, setting: SamplingConfig) -> dict[str, Any]:
        precision = resolve_precision(self.precision, "cpu").precision
        key = f"{setting.name} {setting.frame} {precision} n={self.scenes.images.shape[0]}"
        if PER_IMAGE not in self.cache.get(key, {}):  # scores cached before PER_IMAGE: redo
            draws = replace(setting, reduction="median")
            if draws not in self._samples:
                self._samples[draws] = sample_depths(
                    self.model, self.scenes.images, setting, self.size, precision=self.precision
                )
            self.cache[key] = score(self._samples[draws], self.scenes, setting.reduction)
            write_json(self.cache_path, self.cache)
        return self.cache[key]
