"""Building blocks of the MM-DiT: timestep embedding, 2-D RoPE, adaLN modulation, QK-normalised
attention, patchify, MLP."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

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


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """`rope_2d`'s sin with the rotate-half sign folded in, so that a rotation needs no `cat`:
    `cat([-x2, x1]) * sin == x.roll(D/2, -1) * signed_sin(sin)`."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


class RopeTable(NamedTuple):
    """RoPE tables of a packed sequence for `rms_rope`: cos and signed sin (`signed_sin`), each
    [N, Dh]; rows before `start` (text) are not rotated (cos 1, sin 0), so they are skipped."""

    cos: torch.Tensor
    sin: torch.Tensor
    start: int = 0


def rms_rope(x: torch.Tensor, table: RopeTable, eps: float) -> torch.Tensor:
    """RMSNorm of x [B, H, N, Dh] over Dh (no weight), then RoPE with `table`.

    The tables carry the norm weight (and any scale), and `sin` the rotate-half sign
    (`signed_sin`), so this is `rms_norm(x, weight) * cos + rotate_half(...) * sin` without a
    `cat`. On CPU the elementwise passes, not the FLOPs, set its cost, and a hand-written
    backward (`_RmsRope`) makes fewer of them than autograd would: forward + backward of
    [32, 4, 128, 64] take 12.7 vs 16.1 ms (fp32) and 12.4 vs 17.8 ms (bf16) on an AMD EPYC
    (Zen 4), 1 thread.
    """
    cos, sin = table.cos.to(x.dtype), table.sin.to(x.dtype)
    return _RmsRope.apply(x, cos, sin, eps, table.start)


class _RmsRope(torch.autograd.Function):
    """`rms_rope` with a hand-written backward. With n = x * r, r = rsqrt(mean(x^2) + eps) and
    y = n * cos + roll(n) * sin (roll by Dh/2 is its own inverse; only rows from `start` on):
    dn = g * cos + roll(g) * roll(sin); dcos = sum_BH(g * n); dsin = roll(sum_BH(roll(g) * n));
    dx = r * (dn - n * mean(dn * n))."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
                start: int) -> torch.Tensor:  # fmt: skip
        half = x.shape[-1] // 2
        acc = torch.promote_types(x.dtype, torch.float32)  # the statistic in float32 at least
        sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc).square()
        r = torch.rsqrt(sq / x.shape[-1] + eps).to(x.dtype)  # [B, H, N, 1]
        n = x * r
        y = n * cos
        y[..., start:, :].addcmul_(n[..., start:, :].roll(half, -1), sin[start:])
        ctx.save_for_backward(n, r, cos, sin)
        ctx.start = start
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        n, r, cos, sin = ctx.saved_tensors
        start, half = ctx.start, n.shape[-1] // 2
        g_rolled = g[..., start:, :].roll(half, -1)
        dn = g * cos
        dn[..., start:, :].addcmul_(g_rolled, sin[start:].roll(half, -1))
        lead = tuple(range(g.dim() - cos.dim()))  # the dims the tables broadcast over
        dcos = (g * n).sum(lead) if ctx.needs_input_grad[1] else None
        dsin = None
        if ctx.needs_input_grad[2]:
            dsin = torch.zeros_like(sin)
            dsin[start:] = (g_rolled * n[..., start:, :]).sum(lead).roll(half, -1)
        dx = (dn - n * ((dn * n).sum(-1, keepdim=True) / n.shape[-1])) * r
        return dx, dcos, dsin, None, None


# ---------------------------------------------------------------------------------------------
# Attention: QK RMSNorm + RoPE in one pass over precomputed tables, then softmax attention.
# ---------------------------------------------------------------------------------------------


def norm_tables(weights: torch.Tensor, rope: RopeTable, scale: float = 1.0) -> RopeTable:
    """`rms_rope` tables that also apply an RMSNorm weight ([Dh], or [N, Dh]: one per token) and
    `scale`: rotating (n * w) equals n * (w cos) + roll(n) * (roll(w) sin)."""
    w = weights * scale if scale != 1.0 else weights
    return RopeTable(rope.cos * w, rope.sin * w.roll(w.shape[-1] // 2, -1), rope.start)


def attend(
    qkv: torch.Tensor, num_heads: int, q_rope: RopeTable, k_rope: RopeTable,
    attn_mask: torch.Tensor | None, skip: int = 0, eps: float = 1e-6,
) -> torch.Tensor:  # fmt: skip
    """Joint attention of a packed sequence, qkv [B, N, 3D] -> [B, N - skip, D]: QK RMSNorm and
    RoPE (both in the tables, `norm_tables`), softmax attention; the first `skip` tokens only
    give keys and values (their outputs would be unused)."""
    b, n, _ = qkv.shape
    # unbind(2), not a permute to the front: backward then stacks the three gradients straight
    # into qkv's [B, N, 3, H, Dh] layout, one copy instead of two.
    q, k, v = (y.transpose(1, 2) for y in qkv.view(b, n, 3, num_heads, -1).unbind(2))
    if skip:
        q = q[:, :, skip:]
        q_rope = RopeTable(q_rope.cos[skip:], q_rope.sin[skip:], max(q_rope.start - skip, 0))
    q, k = rms_rope(q, q_rope, eps), rms_rope(k, k_rope, eps)
    out = attention(q, k, v, attn_mask, scale=1.0)  # q carries the scale
    return out.transpose(1, 2).reshape(b, n - skip, -1)  # [B, N - skip, D]


CPU_MATMUL_ATTENTION = 160  # longest CPU sequence attended with plain matmuls (see `attention`)
CPU_MATMUL_ATTENTION_BF16_NO_AMX = 512  # the same for bf16 on CPUs without AMX tiles
_CPU_AMX = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def matmul_attention_limit(dtype: torch.dtype) -> int:
    """Longest sequence that `attention` computes with plain matmuls on this CPU."""
    if dtype == torch.bfloat16 and not _CPU_AMX:
        return CPU_MATMUL_ATTENTION_BF16_NO_AMX
    return CPU_MATMUL_ATTENTION


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
    scale: float | None = None,
) -> torch.Tensor:  # fmt: skip
    """Softmax attention, q [B, H, Nq, Dh] over k, v [B, H, N, Dh]; `attn_mask` is bool, True =
    attend; `scale` defaults to 1/sqrt(Dh) (as SDPA).

    On CUDA this is SDPA (flash / memory-efficient kernels). On CPU, SDPA's flash kernel costs
    about the same up to N ~ 300 (its tile size), while two batched matmuls with a softmax cost
    ~N^2: for forward + backward in bf16 with a padding mask (B = 64, 6 heads, Dh = 64,
    compiled, a CPU with AMX) the matmul path takes 34 / 65 / 117 ms at N = 128 / 160 / 192 and
    SDPA 68 / 91 / 76 ms; at N = 576 (B = 32) 441 vs 229 ms. So sequences up to
    `CPU_MATMUL_ATTENTION` tokens take the matmul path. Without AMX, SDPA's bf16 kernel is no
    faster than its fp32 one and the matmuls win far longer (AMD EPYC Zen 4, AVX512-BF16, 1
    thread, B = 32, 4 heads, Dh = 64, eager, forward + backward: 17 / 36 / 56 / 133 ms at
    N = 128 / 192 / 256 / 384 against SDPA's 52 / 71 / 115 / 231 ms; at N = 512 (B = 16) 203
    vs 248, at N = 768 432 vs 447): `CPU_MATMUL_ATTENTION_BF16_NO_AMX`. In fp32 there both
    take 33 ms at N = 128 and SDPA wins from N = 192 (71 vs 85 ms). The matmul path's softmax
    runs in the scores' dtype (CPU kernels accumulate bf16 in float32): a float32 softmax plus a
    cast back costs two more passes over [N, N].
    """
    if q.device.type != "cpu" or k.shape[-2] > matmul_attention_limit(q.dtype):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    scores = q @ k.transpose(-1, -2)  # [B, H, Nq, N]
    if scale is None or scale != 1.0:
        scores = scores * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


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
