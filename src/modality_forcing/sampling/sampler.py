"""One sampler loop over any scheduling matrix (Euler or Heun), with classifier-free guidance.

The network is any callable `fn(xt: dict, t: dict, text) -> dict` of per-modality predictions;
this module never imports the model. Columns of the schedule held at 0 are given modalities (never
modified); columns held at 1 are absent (not passed to the network at all, i.e. the marginal). A
row whose moving columns rise (t goes up) re-noises them without a network call (`renoise`:
RePaint's jump back, `schedules.resampled`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..flow.path import x0_to_velocity
from ..modalities import get_modality

DenoiseFn = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor], Any], dict[str, torch.Tensor]
]
StateHook = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], None]  # (state, t)
StepHook = Callable[[int, dict[str, torch.Tensor], dict[str, torch.Tensor]], None]  # (k, state, t)


def renoise(x: torch.Tensor, t_now: torch.Tensor, t_next: torch.Tensor,
            noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """A state at noise level t_now [B] taken up to t_next >= t_now on the flow path
    x_t = (1 - t) x0 + t eps: scaled by a = (1 - t_next) / (1 - t_now) and given fresh noise of
    std sqrt(t_next^2 - a^2 t_now^2), so its marginal is the path's at t_next."""
    shape = (-1, *([1] * (x.dim() - 1)))
    a = ((1 - t_next) / (1 - t_now).clamp_min(1e-12)).view(shape)
    std = (t_next.view(shape) ** 2 - a**2 * t_now.view(shape) ** 2).clamp_min(0).sqrt()
    return a * x + std * noise.to(x)


@dataclass
class SamplerConfig:
    solver: str = "euler"  # `euler` | `heun`
    guidance_scale: float = 1.0  # CFG on text; 1 = no unconditional pass
    t_min: float = 0.05  # clamp in the x0 -> velocity conversion
    prediction: dict[str, str] | None = None  # modality -> `x0` | `velocity` (registry default)


def _velocity(
    fn: DenoiseFn,
    x: dict[str, torch.Tensor],
    t: dict[str, torch.Tensor],
    cond: Any,
    uncond: Any,
    cfg: SamplerConfig,
) -> dict[str, torch.Tensor]:
    pred = fn(x, t, cond)
    if cfg.guidance_scale != 1.0 and uncond is not None:
        base = fn(x, t, uncond)
        # Guidance on the raw outputs (velocity for image, x0 for depth), then convert.
        pred = {m: base[m] + cfg.guidance_scale * (pred[m] - base[m]) for m in pred}
    out = {}
    for m, p in pred.items():
        if (cfg.prediction or {}).get(m, get_modality(m).prediction) == "x0":
            out[m] = x0_to_velocity(x[m], p.to(x[m].dtype), t[m], cfg.t_min)
        else:
            out[m] = p.to(x[m].dtype)
    return out


def sample(
    fn: DenoiseFn,
    schedule: torch.Tensor,
    modalities: tuple[str, ...],
    shapes: dict[str, tuple[int, ...]],
    cond: Any,
    uncond: Any = None,
    given: dict[str, torch.Tensor] | None = None,
    cfg: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    before_call: StateHook | None = None,
    latents: dict[str, torch.Tensor] | None = None,
    after_step: StepHook | None = None,
) -> dict[str, torch.Tensor]:
    """Integrate the flow from schedule row 0 to the last row.

    Args:
        fn: denoiser callable.
        schedule: [S + 1, M] noise levels; column j belongs to modalities[j].
        modalities: column names.
        shapes: modality -> full tensor shape [B, C, H, W] of its state.
        cond / uncond: text conditioning passed through to `fn` (uncond used when CFG > 1).
        given: modality -> clean tensor for columns held at 0 (required for those).
        cfg: solver and guidance settings.
        generator: seeds the initial noise (drawn in `modalities` order, float32).
        progress: optional callback(step, num_steps).
        before_call: optional `hook(state, t)` run before every step's first network call; it
            may overwrite entries of `state` (e.g. a baseline that imposes a given modality by
            replacement, `bench/common.py`).
        latents: modality -> initial noise [B, C, H, W] instead of drawing it (per modality;
            the others are drawn from `generator`).
        after_step: optional `hook(step, state, t)` after every step (t: the level reached); it
            may overwrite entries of `state` (diffusers' `callback_on_step_end`).

    Returns:
        modality -> final state (given modalities returned unchanged, absent ones omitted).
    """
    cfg = cfg or SamplerConfig()
    if cfg.solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver '{cfg.solver}'; choose from ['euler', 'heun']")
    given = given or {}
    cols = {m: schedule[:, j] for j, m in enumerate(modalities)}
    absent = {m for m, c in cols.items() if bool((c == 1).all())}
    state: dict[str, torch.Tensor] = {}
    for m in modalities:
        if m in absent:
            continue
        if bool((cols[m] == 0).all()):
            if m not in given:
                raise ValueError(f"modality '{m}' is held clean by this schedule but not given")
            state[m] = given[m].to(device=device, dtype=torch.float32)
        elif latents is not None and m in latents:
            if tuple(latents[m].shape) != tuple(shapes[m]):
                raise ValueError(
                    f"latents['{m}'] must be {list(shapes[m])}, got {list(latents[m].shape)}"
                )
            state[m] = latents[m].to(device=device, dtype=torch.float32)
        else:
            noise = torch.randn(shapes[m], generator=generator, dtype=torch.float32)
            state[m] = noise.to(device)
    batch = next(iter(state.values())).shape[0]
    num_steps = schedule.shape[0] - 1
    for k in range(num_steps):
        t_now = {m: cols[m][k].float().expand(batch).to(device) for m in state}
        t_next = {m: cols[m][k + 1].float().expand(batch).to(device) for m in state}
        moving = [m for m in state if bool(cols[m][k + 1] != cols[m][k])]
        rising = [m for m in moving if bool(cols[m][k + 1] > cols[m][k])]
        if rising:  # a jump back: re-noise, no network call
            if len(rising) != len(moving):
                raise ValueError(f"schedule row {k + 1} raises {rising} but lowers the others")
            for m in rising:
                noise = torch.randn(state[m].shape, generator=generator, dtype=torch.float32)
                state[m] = renoise(state[m], t_now[m], t_next[m], noise)
            if progress is not None:
                progress(k + 1, num_steps)
            continue
        if before_call is not None:
            before_call(state, t_now)
        v = _velocity(fn, state, t_now, cond, uncond, cfg)
        proposal = {
            m: state[m] + (t_next[m] - t_now[m])[:, None, None, None] * v[m] for m in moving
        }
        if cfg.solver == "heun" and k < num_steps - 1:
            x2 = {**state, **proposal}
            v2 = _velocity(fn, x2, t_next, cond, uncond, cfg)
            proposal = {
                m: state[m] + (t_next[m] - t_now[m])[:, None, None, None] * 0.5 * (v[m] + v2[m])
                for m in moving
            }
        state.update(proposal)
        if after_step is not None:
            after_step(k, state, t_next)
        if progress is not None:
            progress(k + 1, num_steps)
    return state
