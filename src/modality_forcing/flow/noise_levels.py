"""Training noise-level policies: which t each modality gets per sample (the "forcing").

A policy maps a batch size to `NoiseLevels`: a `t` dict keyed by modality name ([B] each) and a
`corner` id per sample saying which training case it is. The paper's recipe is `corners`: per
sample, image clean (learn image -> depth), depth clean (learn depth -> image), both noised with
independent shifted logit-normal t's, or depth absent (t_depth = 1, an ordinary T2I sample).
`p_depth_readout` sends a share of the image-clean samples to t_depth = 1 exactly, where the x0
prediction is a regression from the image alone (the one-step readout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import ForcingConfig
from ..modalities import DEPTH, IMAGE

IMAGE_CLEAN, DEPTH_CLEAN, BOTH_NOISED, DEPTH_ABSENT = 0, 1, 2, 3
CORNER_NAMES = ("image_clean", "depth_clean", "both_noised", "depth_absent")


@dataclass
class NoiseLevels:
    t: dict[str, torch.Tensor]  # modality -> [B] in [0, 1]
    corner: torch.Tensor  # [B] long, one of the constants above

    @property
    def depth_present(self) -> torch.Tensor:
        """[B] bool: False where the depth stream is absent (no depth loss)."""
        return self.corner != DEPTH_ABSENT


def logit_normal(
    n: int, mu: float, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """t = sigmoid(mu + sigma * eps), eps ~ N(0, 1): the shifted logit-normal of SD3/FLUX.

    mu > 0 puts more mass on noisy t, which is where high-resolution generation needs capacity.
    """
    return torch.sigmoid(mu + sigma * torch.randn(n, generator=generator))


def _corners(cfg: ForcingConfig, n: int, generator: torch.Generator | None) -> NoiseLevels:
    probs = torch.tensor(
        [cfg.p_image_clean, cfg.p_depth_clean, cfg.p_both_noised, cfg.p_depth_absent],
        dtype=torch.float64,
    )
    if (probs < 0).any() or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError(
            "forcing probabilities p_image_clean, p_depth_clean, p_both_noised, p_depth_absent "
            f"must be >= 0 and sum to 1, got {probs.tolist()}"
        )
    if not 0 <= cfg.p_depth_readout <= 1:
        raise ValueError(f"forcing.p_depth_readout must be in [0, 1], got {cfg.p_depth_readout}")
    corner = torch.multinomial(probs, n, replacement=True, generator=generator)
    t_image = logit_normal(n, cfg.shift_mu, cfg.shift_sigma, generator)
    depth_mu = cfg.shift_mu if cfg.depth_shift_mu is None else cfg.depth_shift_mu
    t_depth = logit_normal(n, depth_mu, cfg.shift_sigma, generator)
    t_image = torch.where(corner == IMAGE_CLEAN, 0.0, t_image)
    if cfg.p_depth_readout > 0:  # drawn only when used, so old configs keep their random stream
        readout = torch.rand(n, generator=generator) < cfg.p_depth_readout
        t_depth = torch.where((corner == IMAGE_CLEAN) & readout, 1.0, t_depth)
    t_depth = torch.where(corner == DEPTH_CLEAN, 0.0, t_depth)
    t_depth = torch.where(corner == DEPTH_ABSENT, 1.0, t_depth)
    return NoiseLevels({IMAGE: t_image, DEPTH: t_depth}, corner)


def _shared(cfg: ForcingConfig, n: int, generator: torch.Generator | None) -> NoiseLevels:
    """Baseline of earlier joint generators: one t for image and depth, never clean."""
    t = logit_normal(n, cfg.shift_mu, cfg.shift_sigma, generator)
    return NoiseLevels({IMAGE: t, DEPTH: t.clone()}, torch.full((n,), BOTH_NOISED))


def _t2i(cfg: ForcingConfig, n: int, generator: torch.Generator | None) -> NoiseLevels:
    """Text-to-image pre-training: image noised, depth absent."""
    t = logit_normal(n, cfg.shift_mu, cfg.shift_sigma, generator)
    return NoiseLevels({IMAGE: t, DEPTH: torch.ones(n)}, torch.full((n,), DEPTH_ABSENT))


def _regression(cfg: ForcingConfig, n: int, generator: torch.Generator | None) -> NoiseLevels:
    """Deterministic image -> depth regressor baseline: image clean, depth input pure noise."""
    return NoiseLevels(
        {IMAGE: torch.zeros(n), DEPTH: torch.ones(n)}, torch.zeros(n, dtype=torch.long)
    )


POLICIES: dict[str, Callable[[ForcingConfig, int, torch.Generator | None], NoiseLevels]] = {
    "corners": _corners,
    "shared": _shared,
    "t2i": _t2i,
    "regression": _regression,
}


def sample_noise_levels(
    cfg: ForcingConfig, batch_size: int, generator: torch.Generator | None = None
) -> NoiseLevels:
    """Draw per-sample, per-modality noise levels with the configured policy (CPU tensors)."""
    if cfg.policy not in POLICIES:
        raise ValueError(f"unknown forcing policy '{cfg.policy}'; choose from {sorted(POLICIES)}")
    return POLICIES[cfg.policy](cfg, batch_size, generator)
