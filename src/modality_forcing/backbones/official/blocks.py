"""Layers of the official FluxRGBD DiT (FLUX.2 [klein] style), written from the release spec.

Names of modules and parameters follow the published state dict exactly (reference
`official_release.md` section 2b); the numerics follow section 3: bias-free Linears, LayerNorms
without affine, QK RMSNorm in fp32, 4-axis RoPE on adjacent pairs, gated-SiLU MLPs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


def layer_norm(hidden_size: int) -> nn.LayerNorm:
    """LayerNorm over the hidden size without affine parameters (nothing in the state dict)."""
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=LN_EPS)


def timestep_embedding(
    t: torch.Tensor, dim: int = 256, max_period: float = 10000.0, time_factor: float = 1000.0
) -> torch.Tensor:
    """[B] t in [0, 1] -> [B, dim] sinusoid, cosine first (reference 3.1).

    `time_factor * t` is evaluated in t's own dtype (bf16 in the release, so it rounds twice);
    the frequencies and the trigonometry run in fp32 and the result is cast back to t's dtype.
    """
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)


def rope_tables(
    ids: torch.Tensor, axes_dim: tuple[int, ...], theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [B, L, A] -> (cos, sin), each [B, 1, L, head_dim / 2] in fp32.

    Axis a owns `axes_dim[a] / 2` rotation pairs with frequencies theta^(-2k / axes_dim[a]);
    the axes are concatenated in order, so pair m of a head belongs to one axis.
    """
    angles = []
    for a, d in enumerate(axes_dim):
        omega = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
        angles.append(ids[..., a, None].double() * omega)  # [B, L, d / 2]
    ang = torch.cat(angles, dim=-1)[:, None]  # [B, 1, L, D / 2]
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2m, 2m+1) of x [B, heads, L, D] in fp32, back in x's dtype."""
    xf = x.float().unflatten(-1, (-1, 2))  # [B, h, L, D / 2, 2]
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1)
    return out.flatten(-2).to(x.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Full bidirectional attention, no mask: q, k, v [B, h, L, D] -> [B, L, h * D]."""
    q, k = apply_rope(q, *pe), apply_rope(k, *pe)
    out = F.scaled_dot_product_attention(q, k, v)  # [B, h, L, D]
    return out.transpose(1, 2).flatten(2)  # channel = head * D + d


def split_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """[B, L, 3H] laid out (kind, head, d) -> q, k, v each [B, heads, L, D]."""
    b, length, _ = qkv.shape
    qkv = qkv.view(b, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)  # [3, B, h, L, D]
    return qkv[0], qkv[1], qkv[2]


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + 1e-6) in fp32, cast back, times a learned `scale` [D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        rrms = torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + 1e-6)
        return (xf * rrms).to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)


class SiLUGate(nn.Module):
    """Gated SiLU: input [a | b] (halves) -> SiLU(a) * b; the first half is the gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return F.silu(a) * b


class MLPEmbedder(nn.Module):
    """out_layer(SiLU(in_layer(x))), both bias-free (time_in, time_in_depth, ...)."""

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_size, bias=False)
        self.out_layer = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """vec [B, H] -> `n` chunks [B, 1, H]: (shift, scale, gate) once (n=3) or twice (n=6)."""

    def __init__(self, hidden_size: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.lin = nn.Linear(hidden_size, n * hidden_size, bias=False)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return list(self.lin(F.silu(vec))[:, None].chunk(self.n, dim=-1))


class SelfAttention(nn.Module):
    """Per-stream projections of a triple-stream block: `qkv`, QK `norm`, output `proj`."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.norm = QKNorm(hidden_size // num_heads)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=False)


STREAMS = ("txt", "img", "depth")  # joint-attention order of the triple-stream blocks


class TripleStreamBlock(nn.Module):
    """`double_blocks.{i}`: per-stream weights for img/txt/depth, one joint attention."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        inner = int(hidden_size * mlp_ratio)
        for s in ("img", "txt", "depth"):
            self.add_module(f"{s}_norm1", layer_norm(hidden_size))
            self.add_module(f"{s}_attn", SelfAttention(hidden_size, num_heads))
            self.add_module(f"{s}_norm2", layer_norm(hidden_size))
            mlp = nn.Sequential(
                nn.Linear(hidden_size, 2 * inner, bias=False),
                SiLUGate(),
                nn.Linear(inner, hidden_size, bias=False),
            )
            self.add_module(f"{s}_mlp", mlp)

    def forward(
        self,
        x: dict[str, torch.Tensor],
        mods: dict[str, list[torch.Tensor]],
        pe: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """x: stream -> [B, L_s, H]; mods: stream -> 6 x [B, 1, H]; pe over [txt, img, depth]."""
        qs, ks, vs = [], [], []
        for s in STREAMS:
            shift, scale, _ = mods[s][:3]
            attn = getattr(self, f"{s}_attn")
            h = (1 + scale) * getattr(self, f"{s}_norm1")(x[s]) + shift
            q, k, v = split_qkv(attn.qkv(h), self.num_heads)
            q, k = attn.norm(q, k, v)
            qs.append(q)
            ks.append(k)
            vs.append(v)
        out = attention(torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2), pe)  # [B, L, H]
        out = out.split([x[s].shape[1] for s in STREAMS], dim=1)
        new = {}
        for s, o in zip(STREAMS, out, strict=True):
            _, _, gate1, shift2, scale2, gate2 = mods[s]
            h = x[s] + gate1 * getattr(self, f"{s}_attn").proj(o)
            mlp_in = (1 + scale2) * getattr(self, f"{s}_norm2")(h) + shift2
            new[s] = h + gate2 * getattr(self, f"{s}_mlp")(mlp_in)
        return new


class SingleStreamBlock(nn.Module):
    """`single_blocks.{j}` / `depth_decoder_blocks.{k}`: parallel attention + MLP in 2 Linears."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + 2 * self.mlp_hidden, bias=False)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size, bias=False)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = layer_norm(hidden_size)
        self.mlp_act = SiLUGate()

    def forward(
        self, x: torch.Tensor, mod: list[torch.Tensor], pe: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """x [B, L, H]; mod = (shift, scale, gate), each [B, 1 or L, H]."""
        shift, scale, gate = mod
        h = (1 + scale) * self.pre_norm(x) + shift
        qkv, mlp_in = self.linear1(h).split([3 * self.hidden_size, 2 * self.mlp_hidden], dim=-1)
        q, k, v = split_qkv(qkv, self.num_heads)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat([attention(q, k, v, pe), self.mlp_act(mlp_in)], dim=-1))
        return x + gate * out


class LastLayer(nn.Module):
    """Output head: adaLN (shift, scale) from vec, LayerNorm, bias-free Linear.

    Runs in the dtype of its own `linear.weight`: the depth head is kept in fp32 in the release.
    """

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = layer_norm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels, bias=False)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        dtype = self.linear.weight.dtype
        x, vec = x.to(dtype), vec.to(dtype)
        shift, scale = self.adaLN_modulation(vec)[:, None].chunk(2, dim=-1)  # 2 x [B, 1, H]
        return self.linear((1 + scale) * self.norm_final(x) + shift)
