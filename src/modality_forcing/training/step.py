"""The forcing training step as functions: per-sample draws, the batch on the flow path, the loss.

`forcing_batch` encodes a data batch, draws each sample's noise levels with the forcing policy and
builds one `PathSample` per modality (depth's includes the missing-pixel fill); `batch_loss` runs
the model on it and takes the masked per-modality flow loss; `forcing_loss` is both in one call.
The `Trainer` (`loop.py`) keeps the loop, logging and I/O; `bench throughput` times this step.

Randomness: every random choice of a training sample (its noise levels, its noise, whether its
caption is dropped) comes from a generator seeded by (run seed, global sample index), drawn sample
by sample. A step therefore draws the same numbers on 1 or 64 ranks, and a resumed run needs no
RNG state. Losses are normalised by the number of active samples in the whole global batch, so the
gradient of a step does not depend on how its samples are split over ranks and micro-batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import ForcingConfig, TrainConfig
from ..flow.fill import fill_missing
from ..flow.hints import batch_known_masks, hint_rng, hint_tensor
from ..flow.loss import LossOutput, flow_loss, object_weights
from ..flow.noise_levels import IMAGE_CLEAN, NoiseLevels, logit_normal, sample_noise_levels
from ..flow.path import PathSample, interpolate
from ..modalities import DEPTH, IMAGE, normalize_depth, valid_mean

Predict = Callable[..., dict[str, torch.Tensor]]  # (xt, t, captions) -> predictions


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A generator for one global sample index (SeedSequence mixes seed and index well)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


@dataclass
class SampleDraws:
    levels: NoiseLevels  # t per modality [B], corner [B]
    drop_caption: torch.Tensor  # [B] bool
    noise: dict[str, torch.Tensor]  # modality -> [B, C, H, W]


def draw_for_samples(
    seed: int,
    start: int,
    shapes: dict[str, tuple[int, ...]],
    forcing: ForcingConfig,
    caption_dropout: float,
) -> SampleDraws:
    """Draws for samples start .. start + B - 1; `shapes` are full [B, C, H, W] per modality.

    Order per sample: noise levels, caption dropout, then noise per modality (sorted names).
    """
    levels, drops = [], []
    noise: dict[str, list[torch.Tensor]] = {m: [] for m in sorted(shapes)}
    n = _batch_size(shapes)
    for i in range(n):
        g = sample_generator(seed, start + i)
        lv = sample_noise_levels(forcing, 1, g)
        for m in shapes:  # modalities the policy does not know (e.g. normals): noised freely
            if m not in lv.t:
                lv.t[m] = logit_normal(1, forcing.shift_mu, forcing.shift_sigma, g)
        levels.append(lv)
        drops.append(torch.rand(1, generator=g) < caption_dropout)
        for m in sorted(shapes):
            noise[m].append(torch.randn(shapes[m][1:], generator=g))
    t = {m: torch.cat([lv.t[m] for lv in levels]) for m in levels[0].t}
    return SampleDraws(
        levels=NoiseLevels(t, torch.cat([lv.corner for lv in levels])),
        drop_caption=torch.cat(drops),
        noise={m: torch.stack(v) for m, v in noise.items()},
    )


def _batch_size(shapes: dict[str, tuple[int, ...]]) -> int:
    sizes = {s[0] for s in shapes.values()}
    if len(sizes) != 1:
        raise ValueError(f"modalities disagree on the batch size: {shapes}")
    return sizes.pop()


@dataclass(frozen=True)
class StagePlan:
    """What a training stage trains: its modalities and the forcing policy it draws with."""

    modalities: tuple[str, ...]
    forcing: ForcingConfig


def stage_plan(cfg: TrainConfig) -> StagePlan:
    """`t2i` trains the image alone (policy `t2i`); `mf` every modality of the model with the
    configured forcing."""
    if cfg.stage == "t2i":
        return StagePlan((IMAGE,), dataclasses.replace(cfg.forcing, policy="t2i"))
    if cfg.stage == "mf":
        return StagePlan(tuple(cfg.model.modalities), cfg.forcing)
    raise ValueError(f"unknown stage '{cfg.stage}'; choose from ['mf', 't2i']")


@dataclass
class ForcingBatch:
    """One micro-batch on the flow path: what the forward pass and the loss need."""

    path: dict[str, PathSample]  # modality -> x0, noise, t [B], x_t
    active: dict[str, torch.Tensor]  # modality -> [B] bool: the sample has a loss for it
    valid: torch.Tensor  # [B, 1, H, W] bool: depth pixels the sensor measured
    captions: list[str]  # after caption dropout
    draws: SampleDraws
    weight: dict[str, torch.Tensor]  # modality -> per-pixel loss weights [B, 1, h, w]
    hint: torch.Tensor | None = None  # [B, 2, H, W] known depth points (depth completion)

    @property
    def x0(self) -> dict[str, torch.Tensor]:
        return {m: p.x0 for m, p in self.path.items()}

    @property
    def noise(self) -> dict[str, torch.Tensor]:
        return {m: p.noise for m, p in self.path.items()}

    @property
    def xt(self) -> dict[str, torch.Tensor]:
        return {m: p.xt for m, p in self.path.items()}

    @property
    def t(self) -> dict[str, torch.Tensor]:
        return {m: p.t for m, p in self.path.items()}


def forcing_batch(
    model: torch.nn.Module,
    batch: dict[str, Any],
    start_index: int,
    cfg: TrainConfig,
    plan: StagePlan | None = None,
    device: torch.device | None = None,
) -> ForcingBatch:
    """Encode a data batch and put it on the flow path with per-sample draws (seeded by the
    global index of its first sample, `start_index`), on `device` (default: the model's)."""
    plan = plan or stage_plan(cfg)
    device = device or next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    x0_all, valid = model.encode_batch(batch)
    x0 = {m: x0_all[m] for m in plan.modalities}
    shapes = {m: tuple(x.shape) for m, x in x0.items()}
    draws = draw_for_samples(cfg.seed, start_index, shapes, plan.forcing, cfg.caption_dropout)
    hint = None
    if DEPTH in x0 and plan.forcing.p_completion > 0:
        x0[DEPTH], hint = _completion(batch, x0[DEPTH], valid, draws, start_index, cfg, plan)
    path = {}
    for m, x in x0.items():
        t, noise = draws.levels.t[m].to(device), draws.noise[m].to(device)
        if m == DEPTH:  # what the noisy input holds where the sensor has no depth
            x, xt = fill_missing(x, noise, t, valid, cfg.data.depth_fill)
        else:
            xt = interpolate(x, noise, t)
        path[m] = PathSample(x0=x, noise=noise, t=t, xt=xt)
    active = {m: p.t > 0 for m, p in path.items()}
    if DEPTH in active:
        present = draws.levels.depth_present.to(device)
        active[DEPTH] &= present & valid.flatten(1).any(1)
    captions = ["" if d else c for c, d in zip(batch["caption"], draws.drop_caption.tolist(),
                                                 strict=True)]  # fmt: skip
    weight = {}
    if cfg.loss.object_weight != 1.0 and "object_mask" in batch and IMAGE in x0:
        weight[IMAGE] = object_weights(batch["object_mask"], cfg.loss.object_weight,
                                       x0[IMAGE].shape[-2:])  # fmt: skip
    return ForcingBatch(path, active, valid, captions, draws, weight, hint)


def _completion(
    batch: dict[str, Any], depth: torch.Tensor, valid: torch.Tensor, draws: SampleDraws,
    start: int, cfg: TrainConfig, plan: StagePlan,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Depth completion samples: a `p_completion` share of the image-clean ones get known
    points (`flow/hints.py`); their depth is renormalised by the known points' mean (the
    scale known at inference) and the points go into the hint input. Returns (x0 depth, hint
    [B, 2, H, W], zeros for the other samples)."""
    f = plan.forcing
    if not cfg.model.depth_hint:
        raise ValueError("forcing.p_completion > 0 needs model.depth_hint: true (the input "
                         "that known depth points enter through)")  # fmt: skip
    b = depth.shape[0]
    rngs = [hint_rng(cfg.seed, start + i) for i in range(b)]
    pick = torch.tensor([rng.random() < f.p_completion for rng in rngs])
    chosen = pick & (draws.levels.corner == IMAGE_CLEAN) & valid.flatten(1).any(1).cpu()
    known = batch_known_masks(batch, valid, chosen, rngs, f.completion_points,
                              f.p_completion_lidar).to(depth.device)  # fmt: skip
    chosen = chosen.to(depth.device) & known.flatten(1).any(1)
    metric = batch["depth"].to(depth.device).float()
    scale = valid_mean(metric, known)
    renormalised, _ = normalize_depth(metric, valid, scale=scale)
    depth = torch.where(chosen.view(-1, 1, 1, 1), renormalised, depth)
    # The known pixels are valid ones, so their hint values are the renormalised depth there.
    return depth, hint_tensor(renormalised, known)


def batch_loss(
    predict: Predict,
    fb: ForcingBatch,
    cfg: TrainConfig,
    teacher: Predict | None = None,
    normalizer: dict[str, torch.Tensor] | None = None,
) -> LossOutput:
    """Forward pass (`predict`: the model, or its DDP/FSDP wrapper) and the flow loss; with a
    `teacher`, the image velocity is also pulled toward the teacher's."""
    extra = {} if fb.hint is None else {"hint": fb.hint}
    pred = predict(fb.xt, fb.t, fb.captions, **extra)
    teacher_v = None
    if teacher is not None:
        with torch.no_grad():
            image = fb.path[IMAGE]
            teacher_v = teacher({IMAGE: image.xt}, {IMAGE: image.t}, fb.captions)[IMAGE]
    return flow_loss(
        pred, fb.x0, fb.noise, fb.t, fb.active, cfg.loss, valid_mask={DEPTH: fb.valid},
        teacher_v=teacher_v, distill_weight_t=fb.t.get(DEPTH), normalizer=normalizer,
        prediction={DEPTH: cfg.model.depth_prediction, IMAGE: cfg.model.image_prediction},
        pixel_weight=fb.weight,
    )  # fmt: skip


def forcing_loss(
    model: torch.nn.Module, batch: dict[str, Any], cfg: TrainConfig, start_index: int = 0
) -> LossOutput:
    """The whole forcing step's loss for one data batch (its gradient is one training step's)."""
    return batch_loss(model, forcing_batch(model, batch, start_index, cfg), cfg)
