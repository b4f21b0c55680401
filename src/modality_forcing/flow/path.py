"""The rectified-flow path, stated once for the whole project.

Convention: t = 0 is clean data, t = 1 is pure noise, `x_t = (1 - t) x0 + t * noise`, and the
velocity `v = dx_t/dt = noise - x0`. Sampling integrates from t = 1 down to t = 0. Every function
here is pure and works on any tensor shape with a leading batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def expand_t(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] noise levels -> [B, 1, ..., 1] broadcastable against `like` ([B, ...])."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with t [B]. Exactly x0 where t == 0."""
    tt = expand_t(t, x0)
    # torch.where keeps a held-clean modality bit-identical (no (1 - 0) * x0 rounding games).
    return torch.where(tt == 0, x0, (1 - tt) * x0 + tt * noise)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching velocity target v = noise - x0."""
    return noise - x0


def x0_to_velocity(
    xt: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, t_min: float = 0.05
) -> torch.Tensor:
    """Velocity implied by an x0 prediction: v = (x_t - x0_hat) / max(t, t_min).

    The clamp keeps the last steps stable: near t = 0 the division would amplify any error.
    """
    return (xt - x0_hat) / expand_t(t, xt).clamp_min(t_min)


def velocity_to_x0(xt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0 implied by a velocity prediction: x0 = x_t - t v."""
    return xt - expand_t(t, xt) * v


def velocity_to_noise(xt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise implied by a velocity prediction: noise = x_t + (1 - t) v."""
    return xt + (1 - expand_t(t, xt)) * v


@dataclass
class PathSample:
    """A point on the path for one modality: everything a loss needs."""

    x0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor  # [B]
    xt: torch.Tensor

    @property
    def v_target(self) -> torch.Tensor:
        return velocity_target(self.x0, self.noise)


def sample_path(
    x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
) -> PathSample:
    """Draw Gaussian noise and return the path sample at noise level t [B]."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return PathSample(x0=x0, noise=noise, t=t, xt=interpolate(x0, noise, t))
