"""Run a mode end to end on a denoiser: encode the givens, sample, decode to images and depth.

The model is duck-typed (callable on `(xt, t, text)`, with `encode_text`, `grid_shape`, `codec`
and `cfg`), so this module stays independent of `model/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..flow.hints import hint_tensor, known_points, paste_known, paste_velocity
from ..modalities import DEPTH, IMAGE, denormalize_depth, normalize_depth
from .sampler import SamplerConfig, StateHook, StepHook, sample
from .schedules import MODES as SCHEDULES
from .schedules import resampled, scheduling_matrix

GIVEN_BY_MODE = {
    "joint": (),
    "marginal": (),
    "image_to_depth": (IMAGE,),
    "depth_completion": (IMAGE,),  # and the known depth points
    "depth_to_image": (DEPTH,),
}


@dataclass
class Generation:
    image: torch.Tensor | None  # [B, 3, H, W] in [-1, 1]
    # [B, 1, H, W] relative depth (unit mean, uncontracted); `depth_completion`: in the unit of
    # the known points (metres)
    depth: torch.Tensor | None


@torch.no_grad()
def generate(
    model: Any,
    mode: str,
    captions: list[str],
    height: int,
    width: int,
    image: torch.Tensor | None = None,
    depth: torch.Tensor | None = None,
    valid_mask: torch.Tensor | None = None,
    num_steps: int = 25,
    guidance_scale: float = 1.0,
    log2_alpha: float = 0.0,
    shift_mu: float = 0.0,
    solver: str = "euler",
    t_min: float | None = None,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_call: StateHook | None = None,
    latents: dict[str, torch.Tensor] | None = None,
    after_step: StepHook | None = None,
    paste: bool = True,
    resample: int = 0,
    use_hint: bool = True,
) -> Generation:
    """Sample one mode for a batch of captions (B = len(captions)).

    Args:
        model: the denoiser.
        mode: `joint`, `image_to_depth`, `depth_to_image` or `marginal`, or another
            scheduling matrix of `sampling/schedules.py` (with no given modality).
        captions: B prompts ("" for unconditional).
        height, width: output size in pixels.
        image: [B, 3, H, W] in [-1, 1], required for `image_to_depth` and `depth_completion`.
        depth: [B, 1, H, W] depth (any scale), required for `depth_to_image`; for
            `depth_completion` the known points (metres, 0 where unknown).
        valid_mask: [B, 1, H, W] bool for `depth` (default: depth > 0).
        paste: `depth_completion` only: overwrite every step's depth prediction at the known
            pixels (default on); a model with `depth_hint` also gets the points as its hint.
        use_hint: `depth_completion` only: False leaves a `depth_hint` model's hint input empty
            (a design ablation: the points enter by pasting alone).
        resample: RePaint jumps back per step (`schedules.resampled`; 0: none); each jump adds
            one network call per step.
        num_steps, guidance_scale, log2_alpha, shift_mu, solver: sampler settings.
        t_min: clamp of x0 -> velocity conversions (None: the model's `depth_t_min`).
        generator: seeds the initial noise.
        autocast_dtype: autocast dtype for the network, e.g. bf16 (None = fp32); callers pass
            the precision policy's choice (`precision.resolve_precision`).
        progress: optional callback(step, num_steps) after every sampler step.
        before_call, latents, after_step: passed to `sample` (hooks on the state before and
            after each step; the initial noise per modality, on the model's grids).
    """
    if mode not in SCHEDULES:
        raise ValueError(f"unknown mode '{mode}'; choose from {sorted(SCHEDULES)}")
    needs = {mode: (), **GIVEN_BY_MODE}
    device = next(model.parameters()).device
    b = len(captions)
    given: dict[str, torch.Tensor] = {}
    if IMAGE in needs[mode]:
        if image is None:
            raise ValueError(f"mode '{mode}' needs an image")
        given[IMAGE] = model.codec.encode(image.to(device).float())
    if DEPTH in needs[mode]:
        if depth is None:
            raise ValueError(f"mode '{mode}' needs a depth map")
        depth = depth.to(device).float()
        mask = depth > 0 if valid_mask is None else valid_mask.to(device).bool()
        given[DEPTH], _ = normalize_depth(depth, mask)
    completion = None
    if mode == "depth_completion":
        if depth is None:
            raise ValueError("mode 'depth_completion' needs known depth points (`depth`)")
        completion = Completion.of(
            model,
            depth.to(device).float(),
            None if valid_mask is None else valid_mask.to(device),
            paste,
            use_hint,
        )
    modalities = tuple(model.cfg.modalities)
    shapes = {m: (b, *model.grid_shape(m, height, width)) for m in modalities}
    schedule = resampled(scheduling_matrix(mode, num_steps, shift_mu, log2_alpha, modalities),
                         resample)  # fmt: skip
    cond = model.encode_text(captions)
    uncond = model.encode_text([""] * b) if guidance_scale != 1.0 else None

    t_min = model.cfg.depth_t_min if t_min is None else t_min
    kinds = {m: getattr(model.cfg, f"{m}_prediction", None) for m in (DEPTH, IMAGE)}

    def fn(xt: dict[str, torch.Tensor], t: dict[str, torch.Tensor], text: Any) -> dict:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):  # fmt: skip
            if completion is None:
                return model(xt, t, text)
            out = model(xt, t, text, **completion.model_kwargs)
        return completion.apply(out, xt, t, kinds[DEPTH] or "x0", t_min)

    cfg = SamplerConfig(solver=solver, guidance_scale=guidance_scale, t_min=t_min,
                        prediction={m: k for m, k in kinds.items() if k} or None)  # fmt: skip
    out = sample(fn, schedule, modalities, shapes, cond, uncond, given, cfg, generator, device,
                 progress, before_call, latents, after_step)  # fmt: skip
    img = model.codec.decode(out[IMAGE]).clamp(-1, 1) if IMAGE in out else None
    scale = None if completion is None else completion.scale
    dep = denormalize_depth(out[DEPTH], scale) if DEPTH in out else None
    return Generation(image=img, depth=dep)


@dataclass
class Completion:
    """Known depth points of a `depth_completion` run (`flow/hints.py`): their normalised
    values, mask and metric scale; how they enter the model (`hint`) and the sampler (`paste`)."""

    normalised: torch.Tensor  # [B, 1, H, W]
    known: torch.Tensor  # [B, 1, H, W] bool
    scale: torch.Tensor  # [B] the known points' mean (metres)
    hint: torch.Tensor | None  # [B, 2, H, W], for a model with `depth_hint`
    paste: bool

    @classmethod
    def of(cls, model: Any, depth: torch.Tensor, known: torch.Tensor | None, paste: bool,
           use_hint: bool = True) -> Completion:  # fmt: skip
        known = depth > 0 if known is None else known.bool() & (depth > 0)
        if not known.flatten(1).any(1).all():
            raise ValueError("depth completion needs at least one known (positive) depth point "
                             "per image")  # fmt: skip
        normalised, scale = known_points(depth, known)
        hinted = use_hint and getattr(model.cfg, "depth_hint", False)
        hint = hint_tensor(normalised, known) if hinted else None
        return cls(normalised, known, scale, hint, paste)

    @property
    def model_kwargs(self) -> dict[str, torch.Tensor]:
        return {} if self.hint is None else {"hint": self.hint}

    def apply(self, out: dict[str, torch.Tensor], xt: dict[str, torch.Tensor],
              t: dict[str, torch.Tensor], prediction: str, t_min: float) -> dict:  # fmt: skip
        """The model's predictions with the known pixels pasted in (when `paste`)."""
        if not self.paste:
            return out
        d = out[DEPTH]
        if prediction == "x0":
            d = paste_known(d, self.normalised, self.known)
        else:
            d = paste_velocity(d, xt[DEPTH], self.normalised, self.known, t[DEPTH], t_min)
        return {**out, DEPTH: d}
