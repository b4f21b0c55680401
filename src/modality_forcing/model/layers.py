"""Building blocks of the MM-DiT: timestep embedding, 2-D RoPE, adaLN modulation, patchify, MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of 1000 * t (t in [0, 1]) as in DiT/FLUX. [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedder(nn.Module):
    """t [B] -> sinusoid -> MLP -> [B, hidden]. One per modality (time_in_image, time_in_depth)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class Modulation(nn.Module):
    """adaLN: vec [B, D] -> `n` chunks of [B, 1, D] (shift, scale, gate, ...). Zero-initialised."""

    def __init__(self, hidden_size: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.lin = nn.Linear(hidden_size, n * hidden_size)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return list(self.lin(F.silu(vec))[:, None].chunk(self.n, dim=-1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift in one fused kernel (elementwise passes dominate on CPU)."""
    return torch.addcmul(shift, x, 1 + scale)


def mlp(hidden_size: int, ratio: float) -> nn.Sequential:
    inner = int(hidden_size * ratio)
    return nn.Sequential(
        nn.Linear(hidden_size, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden_size)
    )


# ---------------------------------------------------------------------------------------------
# 2-D rotary position embedding. Half of each head's channels rotate with the row, half with the
# column. Image and depth tokens share the grid, so a depth patch attends to "its" image patch at
# relative offset 0; text tokens sit at (0, 0) with no rotation at all.
# ---------------------------------------------------------------------------------------------


def rope_2d(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, ...]:
    """positions [N, 2] (row, col) -> (cos, sin), each [N, head_dim], float32."""
    if head_dim % 4:
        raise ValueError(f"head_dim {head_dim} must be divisible by 4 for 2-D RoPE")
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # [D/4]
    angles = [positions[:, i, None].float() * freqs[None] for i in range(2)]  # 2 x [N, D/4]
    ang = torch.cat(angles, dim=-1)  # [N, D/2]
    ang = torch.cat([ang, ang], dim=-1)  # [N, D] (rotate-half layout)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, N, D] by (cos, sin) [N, D] in x's dtype (tables are built in float32)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.addcmul(x * cos.to(x.dtype), rotated, sin.to(x.dtype))


def grid_positions(h: int, w: int) -> torch.Tensor:
    """Row/col ids of an h x w token grid in raster order: [h * w, 2]."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C p p] tokens in raster order."""
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"spatial size {h}x{w} is not divisible by the patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p)  # [B, C, h, p, w, p]
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, c: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of `patchify`: [B, N, C p p] -> [B, C, H, W] with H = h*p... given the pixel size."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // p, w // p, c, p, p)  # [B, h, w, C, p, p]
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
