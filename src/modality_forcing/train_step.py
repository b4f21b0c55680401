"""One optimisation step's randomness and loss bookkeeping, independent of how it is parallelised.

Every random choice of a training sample (its noise levels, its noise, whether its caption is
dropped) comes from a generator seeded by (run seed, global sample index). A step therefore draws
the same numbers on 1 or 64 ranks, and a resumed run needs no RNG state. Losses are normalised by
the number of active samples in the whole global batch, so the gradient of a step does not depend
on how its samples are split over ranks and micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ForcingConfig
from .flow.noise_levels import NoiseLevels, logit_normal, sample_noise_levels


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
