"""The native Modality Forcing MM-DiT (after SD3/FLUX MM-DiT and the official flux_rgbd layout).

Tokens `[text, image, depth]` share one joint attention; each token is modulated (adaLN) by the
timestep embedding of its own modality. After the shared trunk each modality has its own decoder
blocks and head. Inputs and outputs are token sequences; patchify/codecs live in `denoiser.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from ..modalities import IMAGE, get_modality
from .layers import Modulation, TimestepEmbedder, apply_rope, mlp, modulate

TEXT = "text"  # the text stream inside the DiT (not a generated modality)

Rope = tuple[torch.Tensor, torch.Tensor] | None


def _vec_key(stream: str) -> str:
    """Text tokens are modulated by the image timestep, as in FLUX's text stream."""
    return IMAGE if stream == TEXT else stream


class Attention(nn.Module):
    """QK-normalised multi-head projections for one stream (qkv + out proj)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def qkv_heads(self, x: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, ...]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # [B, H, N, Dh]
        # Weights cast to the activation dtype so bf16 takes the fused RMSNorm kernel.
        q = F.rms_norm(q, q.shape[-1:], self.q_norm.weight.to(q.dtype), self.q_norm.eps)
        k = F.rms_norm(k, k.shape[-1:], self.k_norm.weight.to(k.dtype), self.k_norm.eps)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v


CPU_MATMUL_ATTENTION = 160  # longest CPU sequence attended with plain matmuls (see `attention`)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Softmax attention over [B, H, N, Dh]; `attn_mask` is bool, True = attend.

    On CUDA this is SDPA (flash / memory-efficient kernels). On CPU, SDPA's flash kernel costs
    about the same up to N ~ 300 (its tile size), while two batched matmuls with a float32
    softmax cost ~N^2: for forward + backward in bf16 with a padding mask (B = 64, 6 heads,
    Dh = 64, compiled) the matmul path takes 34 / 65 / 117 ms at N = 128 / 160 / 192 and SDPA
    68 / 91 / 76 ms; at N = 576 (B = 32) 441 vs 229 ms. So sequences up to `CPU_MATMUL_ATTENTION`
    tokens take the matmul path.
    """
    if q.device.type != "cpu" or q.shape[-2] > CPU_MATMUL_ATTENTION:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # [B, H, N, N]
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype) @ v


def joint_attention(
    qkv: list[tuple[torch.Tensor, ...]], attn_mask: torch.Tensor | None
) -> list[torch.Tensor]:
    """SDPA over the concatenation of all streams; returns per-stream outputs [B, N_s, D]."""
    q, k, v = (torch.cat([s[i] for s in qkv], dim=2) for i in range(3))  # [B, H, N, Dh]
    out = attention(q, k, v, attn_mask)
    out = out.transpose(1, 2).flatten(2)  # [B, N, D]
    return list(out.split([s[0].shape[2] for s in qkv], dim=1))


class JointBlock(nn.Module):
    """MM-DiT block: separate weights per stream, one attention over all tokens."""

    def __init__(self, streams: list[str], hidden_size: int, num_heads: int, ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mod = nn.ModuleDict({s: Modulation(hidden_size, 6) for s in streams})
        self.attn = nn.ModuleDict({s: Attention(hidden_size, num_heads) for s in streams})
        self.mlp = nn.ModuleDict({s: mlp(hidden_size, ratio) for s in streams})

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        ropes: dict[str, Rope],
        attn_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        mods = {s: self.mod[s](vecs[_vec_key(s)]) for s in xs}
        qkv = [
            self.attn[s].qkv_heads(modulate(self.norm(x), *mods[s][:2]), ropes.get(s))
            for s, x in xs.items()
        ]
        attn = joint_attention(qkv, attn_mask)
        out = {}
        for (s, x), a in zip(xs.items(), attn, strict=True):
            _, _, gate1, shift2, scale2, gate2 = mods[s]  # shift1/scale1 were used above
            x = torch.addcmul(x, gate1, self.attn[s].proj(a))
            out[s] = torch.addcmul(x, gate2, self.mlp[s](modulate(self.norm(x), shift2, scale2)))
        return out


class SingleBlock(nn.Module):
    """Shared-weight block (FLUX single-stream style, parallel attention + MLP) with per-token
    modulation: each stream's tokens are shifted/scaled/gated by their own modality's timestep."""

    def __init__(self, streams: list[str], hidden_size: int, num_heads: int, ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        keys = sorted({_vec_key(s) for s in streams})
        self.mod = nn.ModuleDict({k: Modulation(hidden_size, 3) for k in keys})
        self.attn = Attention(hidden_size, num_heads)
        self.mlp_in = nn.Sequential(
            nn.Linear(hidden_size, int(hidden_size * ratio)), nn.GELU(approximate="tanh")
        )
        self.out = nn.Linear(hidden_size + int(hidden_size * ratio), hidden_size)

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        ropes: dict[str, Rope],
        attn_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        mods = {s: self.mod[_vec_key(s)](vecs[_vec_key(s)]) for s in xs}
        hs = {s: modulate(self.norm(x), *mods[s][:2]) for s, x in xs.items()}
        attn = joint_attention(
            [self.attn.qkv_heads(h, ropes.get(s)) for s, h in hs.items()], attn_mask
        )
        out = {}
        for (s, x), a in zip(xs.items(), attn, strict=True):
            y = self.out(torch.cat([a, self.mlp_in(hs[s])], dim=-1))
            out[s] = torch.addcmul(x, mods[s][2], y)
        return out


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + linear to patch values; zero-initialised so the model starts at 0."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mod = Modulation(hidden_size, 2)
        self.linear = nn.Linear(hidden_size, out_dim)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mod(vec)
        return self.linear(modulate(self.norm(x), shift, scale))


class MMDiT(nn.Module):
    """Multi-modal diffusion transformer over per-modality token sequences.

    Args:
        cfg: model config (sizes, modalities).
        token_dims: modality -> values per patch token (channels * patch^2 in its own space).
        text_dim: width of the text-encoder tokens.
    """

    def __init__(self, cfg: ModelConfig, token_dims: dict[str, int], text_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = False  # set by the trainer (TrainConfig)
        self.modalities = list(cfg.modalities)
        d, heads, ratio = cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio
        if d % heads:
            raise ValueError(f"hidden_size {d} must be divisible by num_heads {heads}")
        streams = [TEXT, *self.modalities]
        self.txt_in = nn.Linear(text_dim, d)
        self.embed = nn.ModuleDict({m: nn.Linear(token_dims[m], d) for m in self.modalities})
        # Modality id: image and depth share RoPE positions, this tells them apart.
        self.modality_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d)) for m in self.modalities}
        )
        self.time_in = nn.ModuleDict({m: TimestepEmbedder(d) for m in self.modalities})
        if cfg.cross_modality_time:
            # Gated cross-modality timestep mixing (release v2): zero gates = off at init.
            self.cross_time_in = nn.ModuleDict({m: TimestepEmbedder(d) for m in self.modalities})
            self.cross_alpha = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(1)) for m in self.modalities}
            )
        self.joint_blocks = nn.ModuleList(
            JointBlock(streams, d, heads, ratio) for _ in range(cfg.num_layers)
        )
        self.single_blocks = nn.ModuleList(
            SingleBlock(streams, d, heads, ratio) for _ in range(cfg.num_single_layers)
        )
        self.decoders = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    SingleBlock([m], d, heads, ratio) for _ in range(cfg.decoder_layers)
                )
                for m in self.modalities
            }
        )
        self.final = nn.ModuleDict({m: FinalLayer(d, token_dims[m]) for m in self.modalities})
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Transformer linears: Xavier-uniform, zero bias (DiT).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Modality ids: small random, so image and depth tokens differ from the first step.
        for p in self.modality_embed.values():
            nn.init.normal_(p, std=0.02)
        # Timestep MLPs: N(0, 0.02) as in DiT.
        for emb in self.time_in.values():
            for layer in (emb.mlp[0], emb.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: every modulation starts at 0 -> each block is the identity at init.
        # Output heads zero too -> the model predicts 0 at init (a stable start for v and x0).
        for module in self.modules():
            if isinstance(module, Modulation):
                nn.init.zeros_(module.lin.weight)
                nn.init.zeros_(module.lin.bias)
        for head in self.final.values():
            nn.init.zeros_(head.linear.weight)
            nn.init.zeros_(head.linear.bias)

    def time_vectors(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality conditioning vectors [B, D] from each modality's own noise level."""
        vecs = {m: self.time_in[m](t[m]) for m in t}
        if self.cfg.cross_modality_time and len(t) > 1:
            for m in t:
                others = [o for o in t if o != m]
                mix = sum(self.cross_time_in[o](t[o]) for o in others)
                vecs[m] = vecs[m] + self.cross_alpha[m] * mix
        return vecs

    def forward(
        self,
        tokens: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Predict per-modality patch values.

        Args:
            tokens: modality -> [B, N, token_dim] noisy patches; any subset of the modalities
                (image only = plain T2I). All share the same N-token grid.
            t: modality -> [B] noise levels for the modalities in `tokens`.
            text: [B, L, text_dim] text-encoder tokens.
            text_mask: [B, L] bool, True on real tokens (None = attend to all).
            rope: (cos, sin) [N, head_dim] for the shared image/depth grid.

        Returns:
            modality -> [B, N, token_dim] predictions (velocity or x0 per the registry).
        """
        xs = {TEXT: self.txt_in(text)}
        for m, x in tokens.items():
            xs[m] = self.embed[m](x) + self.modality_embed[m]
        vecs = self.time_vectors({m: t[m] for m in tokens})
        ropes: dict[str, Rope] = {m: rope for m in tokens}
        attn_mask = None
        if text_mask is not None:
            rest = sum(x.shape[1] for x in xs.values()) - text.shape[1]
            keep = F.pad(text_mask.bool(), (0, rest), value=True)  # [B, N_total]
            attn_mask = keep[:, None, None, :]  # [B, 1, 1, N_total]
        for block in [*self.joint_blocks, *self.single_blocks]:
            xs = self._run(block, xs, vecs, ropes, attn_mask)
        out = {}
        for m in tokens:
            x = {m: xs[m]}
            for block in self.decoders[m]:
                x = self._run(block, x, vecs, ropes, None)
            out[m] = self._head(m, x[m], vecs[m])
        return out

    def _run(self, block: nn.Module, *args: object) -> dict[str, torch.Tensor]:
        """Call a block, recomputing its activations in backward when checkpointing is on."""
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _head(self, m: str, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        if not get_modality(m).fp32_head:
            return self.final[m](x, vec)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.final[m](x.float(), vec.float())


def transformer_blocks(dit: nn.Module) -> list[nn.Module]:
    """Every transformer block of a DiT: the trunk (joint, then single), then each modality's
    decoder blocks. The units the trainer compiles, shards (FSDP2) and checkpoints."""
    blocks = [*dit.joint_blocks, *dit.single_blocks] if hasattr(dit, "joint_blocks") else []
    return blocks + [b for dec in getattr(dit, "decoders", {}).values() for b in dec]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def flops_per_token(cfg: ModelConfig, num_tokens: int, num_text: int) -> float:
    """Approximate training FLOPs per generated (image/depth) token: 6 * matmul params + attention.

    Counts forward multiply-adds x 2 (FLOPs) x 3 (forward + backward), over all tokens in the joint
    sequence, divided by the image+depth tokens. Embeddings and heads are ignored (< 1%).
    """
    d, r = cfg.hidden_size, cfg.mlp_ratio
    block_params = 4 * d * d + 2 * d * d * r  # qkv + proj + MLP, per token
    n_mod = len(cfg.modalities)
    seq = num_tokens * n_mod + num_text
    trunk = (cfg.num_layers + cfg.num_single_layers) * (block_params * seq + 2 * seq * seq * d)
    dec = cfg.decoder_layers * n_mod * (block_params * num_tokens + 2 * num_tokens**2 * d)
    return 6.0 * (trunk + dec) / (num_tokens * n_mod)
