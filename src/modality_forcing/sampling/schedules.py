"""Modes as data: scheduling matrices of per-modality noise levels.

A schedule is a `[num_steps + 1, num_modalities]` tensor; row k holds every modality's t at step k,
from row 0 (start) to the last row (all 0, clean). A column held at 0 is a given (conditioning)
modality; a column held at 1 is an absent one (the marginal mode's depth). One sampler loop runs
any matrix, after diffusion forcing's scheduling matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..modalities import DEPTH, IMAGE


def time_shift(t: torch.Tensor, mu: float) -> torch.Tensor:
    """Resolution/time shift of SD3/FLUX: t' = e^mu t / (e^mu t + 1 - t); mu = 0 is identity."""
    if mu == 0:
        return t
    s = math.exp(mu)
    return s * t / (s * t + 1 - t)


def tilt(t: torch.Tensor, log2_alpha: float) -> torch.Tensor:
    """Möbius warp t -> a t / (1 + (a - 1) t), a = 2^log2_alpha (fixed points 0 and 1).

    a > 1 keeps depth noisier for longer (the image leads); a < 1 lets depth lead.
    """
    a = 2.0**log2_alpha
    return a * t / (1 + (a - 1) * t)


def base_timesteps(num_steps: int, shift_mu: float = 0.0) -> torch.Tensor:
    """[num_steps + 1] decreasing from 1 to 0 (float64), time-shifted by mu."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return time_shift(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift_mu)


def _joint(t: torch.Tensor, log2_alpha: float) -> dict[str, torch.Tensor]:
    return {IMAGE: t, DEPTH: tilt(t, log2_alpha) if log2_alpha else t.clone()}


def _image_to_depth(t: torch.Tensor, log2_alpha: float) -> dict[str, torch.Tensor]:
    return {IMAGE: torch.zeros_like(t), DEPTH: t}


def _depth_to_image(t: torch.Tensor, log2_alpha: float) -> dict[str, torch.Tensor]:
    return {IMAGE: t, DEPTH: torch.zeros_like(t)}


def _marginal(t: torch.Tensor, log2_alpha: float) -> dict[str, torch.Tensor]:
    return {IMAGE: t, DEPTH: torch.ones_like(t)}


def _shared(t: torch.Tensor, log2_alpha: float) -> dict[str, torch.Tensor]:
    """One t for both: how joint models trained with one shared noise level are sampled (the
    shared-t baseline of `bench paper`, which imposes a given image by replacement)."""
    return {IMAGE: t, DEPTH: t.clone()}


MODES: dict[str, Callable[[torch.Tensor, float], dict[str, torch.Tensor]]] = {
    "joint": _joint,
    "shared": _shared,
    "image_to_depth": _image_to_depth,
    # image + known depth points -> depth: the image -> depth matrix; the known pixels are held
    # at t = 0 inside the depth column by the sampler (`flow/hints.py`)
    "depth_completion": _image_to_depth,
    "depth_to_image": _depth_to_image,
    "marginal": _marginal,
}


def scheduling_matrix(
    mode: str,
    num_steps: int,
    shift_mu: float = 0.0,
    log2_alpha: float = 0.0,
    modalities: tuple[str, ...] = (IMAGE, DEPTH),
) -> torch.Tensor:
    """The `[num_steps + 1, len(modalities)]` matrix of a named mode (float64).

    Args:
        mode: one of `MODES`.
        num_steps: solver steps (rows - 1).
        shift_mu: time shift applied to the base 1 -> 0 grid.
        log2_alpha: joint-mode tilt of the depth column (0 = shared t).
        modalities: column order.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}'; choose from {sorted(MODES)}")
    columns = MODES[mode](base_timesteps(num_steps, shift_mu), log2_alpha)
    # Further modalities (e.g. normals) follow the depth column: generated with depth, or given.
    return torch.stack([columns.get(m, columns[DEPTH]) for m in modalities], dim=1)


def resampled(schedule: torch.Tensor, jumps: int) -> torch.Tensor:
    """RePaint's resampling (Lugmayr et al., CVPR 2022) as rows of a scheduling matrix: every step
    k -> k + 1 is taken, undone by a jump back to row k (re-noising, `sampler.renoise`) and
    taken again, `jumps` times over, before moving on. 0 jumps: the schedule unchanged."""
    if jumps < 0:
        raise ValueError(f"resampling jumps must be >= 0, got {jumps}")
    if jumps == 0:
        return schedule
    rows = [schedule[0]]
    for k in range(schedule.shape[0] - 1):
        rows += [schedule[k + 1], schedule[k]] * jumps + [schedule[k + 1]]
    return torch.stack(rows)
