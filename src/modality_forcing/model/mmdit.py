"""The native Modality Forcing MM-DiT (after SD3/FLUX MM-DiT and the official flux_rgbd layout).

Tokens `[text, image, depth]` share one joint attention; each token is modulated (adaLN) by the
timestep embedding of its own modality. After the shared trunk each modality has its own decoder
blocks and head. Inputs and outputs are token sequences; patchify/codecs live in `denoiser.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from ..modalities import DEPTH, IMAGE, get_modality
from .layers import (
    Modulation,
    RopeTable,
    TimestepEmbedder,
    attend,
    mlp,
    modulate,
    norm_tables,
    signed_sin,
)

TEXT = "text"  # the text stream inside the DiT (not a generated modality)

Rope = tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) [N, Dh] of one stream (`rope_2d`)
Runs = tuple[tuple[str, int], ...]  # (timestep key, length) of consecutive runs of tokens


def _vec_key(stream: str) -> str:
    """Text tokens are modulated by the image timestep, as in FLUX's text stream."""
    return IMAGE if stream == TEXT else stream


def runs_of(lengths: dict[str, int]) -> Runs:
    """Streams in order -> runs of tokens sharing a timestep key (text joins the image run)."""
    runs: list[tuple[str, int]] = []
    for s, n in lengths.items():
        key = _vec_key(s)
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1] + n)
        else:
            runs.append((key, n))
    return tuple(runs)


def pack_rope(
    ropes: dict[str, Rope], lengths: dict[str, int], head_dim: int, device: torch.device
) -> RopeTable:
    """Per-stream (cos, sin) -> one `rms_rope` table over the streams concatenated in `lengths`'
    order; a stream without RoPE (text) gets the identity rotation (cos 1, sin 0), and leading
    ones are skipped (`RopeTable.start`)."""
    cos, sin, start = [], [], 0
    for s, n in lengths.items():
        rope = ropes.get(s)
        if rope is None:
            start += n if start == sum(len(c) for c in cos) else 0  # still leading
            cos.append(torch.ones(n, head_dim, device=device))
            sin.append(torch.zeros(n, head_dim, device=device))
        else:
            cos.append(rope[0])
            sin.append(signed_sin(rope[1]))
    if len(cos) == 1:
        return RopeTable(cos[0], sin[0], start)
    return RopeTable(torch.cat(cos), torch.cat(sin), start)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens: tokens [B, L, D], mask [B, L] (None: all real) -> [B, D]."""
    if mask is None:
        return tokens.mean(1)
    w = mask.to(tokens.dtype)[..., None]
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1)


class Attention(nn.Module):
    """QK-normalised multi-head projections for one stream (qkv + out proj)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def tables(self, rope: RopeTable) -> tuple[RopeTable, RopeTable]:
        """(q, k) tables for `attend`; q also carries the softmax scale 1/sqrt(Dh)."""
        scale = self.q_norm.weight.shape[0] ** -0.5
        return norm_tables(self.q_norm.weight, rope, scale), norm_tables(self.k_norm.weight, rope)


def per_run(fn: Callable[..., torch.Tensor], runs: Runs, *xs: torch.Tensor) -> torch.Tensor:
    """`fn(key, *slices)` on each run of tokens (dim 1 of every x), concatenated back; one run
    (T2I, decoders) is one call and no copy."""
    if len(runs) == 1:
        return fn(runs[0][0], *xs)
    out, start = [], 0
    for key, n in runs:
        out.append(fn(key, *(x[:, start : start + n] for x in xs)))
        start += n
    return torch.cat(out, dim=1)


def skip_runs(runs: Runs, skip: int) -> Runs:
    """`runs` without their first `skip` tokens."""
    out = []
    for key, n in runs:
        take = min(skip, n)
        skip -= take
        if n > take:
            out.append((key, n - take))
    return tuple(out)


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
        rope: RopeTable,
        attn_mask: torch.Tensor | None,
        kv_only: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Streams [B, N_s, D] -> streams. `rope`: the table of the streams packed in order;
        `kv_only`: a first stream (text, in the last trunk block) that only gives keys and
        values, and is left out of the output."""
        if kv_only is not None and kv_only != next(iter(xs)):
            raise ValueError(f"the kv-only stream '{kv_only}' must come first")
        mods = {s: self.mod[s](vecs[_vec_key(s)]) for s in xs}
        qkv = [self.attn[s].qkv(modulate(self.norm(x), *mods[s][:2])) for s, x in xs.items()]
        lengths = [x.shape[1] for x in xs.values()]
        # Each stream has its own QK-norm weights: one row per token in the tables.
        wq, wk = (torch.cat([getattr(self.attn[s], norm).weight.expand(n, -1)
                             for s, n in zip(xs, lengths, strict=True)])
                  for norm in ("q_norm", "k_norm"))  # fmt: skip
        q_rope, k_rope = norm_tables(wq, rope, wq.shape[-1] ** -0.5), norm_tables(wk, rope)
        skip = lengths.pop(0) if kv_only is not None else 0
        first = next(iter(self.attn.values()))
        attn = attend(torch.cat(qkv, dim=1) if len(qkv) > 1 else qkv[0], first.num_heads, q_rope,
                      k_rope, attn_mask, skip, first.q_norm.eps).split(lengths, dim=1)  # fmt: skip
        out = {}
        for (s, x), a in zip([(s, x) for s, x in xs.items() if s != kv_only], attn, strict=True):
            _, _, gate1, shift2, scale2, gate2 = mods[s]  # shift1/scale1 were used above
            x = torch.addcmul(x, gate1, self.attn[s].proj(a))
            out[s] = torch.addcmul(x, gate2, self.mlp[s](modulate(self.norm(x), shift2, scale2)))
        return out


class SingleBlock(nn.Module):
    """Shared-weight block (FLUX single-stream style, parallel attention + MLP) with per-token
    modulation: each stream's tokens are shifted/scaled/gated by their own modality's timestep.

    Runs on a packed sequence (all streams concatenated, `forward`); the shared weights make every
    matmul one call over all tokens and no per-stream copies are needed. `forward_streams` is the
    same block on per-stream tensors.
    """

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
        x: torch.Tensor | dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        rope: RopeTable | dict[str, Rope],
        attn_mask: torch.Tensor | None,
        runs: Runs | None = None,
        skip: int = 0,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Packed x [B, N, D] (`runs` says which timestep modulates which tokens, `rope` is the
        packed table) -> [B, N - skip, D]: the first `skip` tokens (text, in the last trunk
        block) only give keys and values. Given per-stream dicts (x and rope), see
        `forward_streams`."""
        if isinstance(x, dict):
            return self.forward_streams(x, vecs, rope, attn_mask)  # type: ignore[arg-type]
        assert runs is not None, "a packed sequence needs its runs"
        mods = {key: self.mod[key](vecs[key]) for key, _ in runs}
        h = per_run(lambda key, seg: modulate(seg, *mods[key][:2]), runs, self.norm(x))
        a = attend(self.attn.qkv(h), self.attn.num_heads, *self.attn.tables(rope), attn_mask,
                   skip, self.attn.q_norm.eps)  # fmt: skip
        m = self.mlp_in(h[:, skip:] if skip else h)
        # `out` over cat([a, m]) as two matmuls into one sum: no [B, N, 5D] concatenation.
        w, d = self.out.weight, a.shape[-1]
        y = F.linear(m, w[:, d:], self.out.bias)  # [B, N - skip, D]
        # in place, so no copy of y; in-place ops skip autocast: cast by hand
        y.flatten(0, 1).addmm_(a.flatten(0, 1), w[:, :d].t().to(a.dtype))
        runs = skip_runs(runs, skip)
        return per_run(lambda key, xr, yr: torch.addcmul(xr, mods[key][2], yr), runs,
                       x[:, skip:] if skip else x, y)  # fmt: skip

    def forward_streams(
        self,
        xs: dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        ropes: dict[str, Rope],
        attn_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Per-stream tensors [B, N_s, D] and (cos, sin) ropes in, per-stream tensors out (the
        backbone adapters' depth decoders call blocks this way)."""
        lengths = {s: x.shape[1] for s, x in xs.items()}
        head_dim = self.attn.q_norm.weight.shape[0]
        x = torch.cat(list(xs.values()), dim=1) if len(xs) > 1 else next(iter(xs.values()))
        rope = pack_rope(ropes, lengths, head_dim, x.device)
        y = self.forward(x, vecs, rope, attn_mask, runs_of(lengths))
        return dict(zip(xs, y.split(list(lengths.values()), dim=1), strict=True))


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
        if cfg.depth_hint:
            # Known depth points (value, mask) per pixel, patchified like depth, into the depth
            # tokens; zero at init, so a model gains the input without changing what it does,
            # and bias-free, so "nothing known" (all zeros) adds exactly nothing.
            self.hint_embed = nn.Linear(2 * token_dims[DEPTH], d, bias=False)
        if cfg.text_pooled:
            # The caption's mean token into every adaLN vector (as SD3's pooled text): a global
            # summary that reaches every block's modulation, not only attention.
            self.pooled_in = nn.Sequential(nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d))
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
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Modality ids: small random, so image and depth tokens differ from the first step.
        for p in self.modality_embed.values():
            nn.init.normal_(p, std=0.02)
        # Timestep MLPs: N(0, 0.02) as in DiT.
        for emb in self.time_in.values():
            for layer in (emb.mlp[0], emb.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)
        if self.cfg.text_pooled:
            for layer in (self.pooled_in[0], self.pooled_in[2]):
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
        if self.cfg.depth_hint:
            nn.init.zeros_(self.hint_embed.weight)

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
        hint: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict per-modality patch values.

        Args:
            tokens: modality -> [B, N, token_dim] noisy patches; any subset of the modalities
                (image only = plain T2I). All share the same N-token grid.
            t: modality -> [B] noise levels for the modalities in `tokens`.
            text: [B, L, text_dim] text-encoder tokens.
            text_mask: [B, L] bool, True on real tokens (None = attend to all).
            rope: (cos, sin) [N, head_dim] for the shared image/depth grid.
            hint: [B, N, 2 * depth token_dim] patchified known depth points (value, mask), for
                a model with `depth_hint` and depth in `tokens`; None: no point is known.

        Returns:
            modality -> [B, N, token_dim] predictions (velocity or x0 per the registry).
        """
        xs = {TEXT: self.txt_in(text)}
        for m, x in tokens.items():
            xs[m] = self.embed[m](x) + self.modality_embed[m]
        if hint is not None:
            if not self.cfg.depth_hint or DEPTH not in tokens:
                raise ValueError("known depth points need a model with `depth_hint: true` and "
                                 "the depth stream in its input")  # fmt: skip
            xs[DEPTH] = xs[DEPTH] + self.hint_embed(hint.to(xs[DEPTH].dtype))
        vecs = self.time_vectors({m: t[m] for m in tokens})
        if self.cfg.text_pooled:
            pooled = self.pooled_in(masked_mean(text, text_mask))
            vecs = {k: v + pooled for k, v in vecs.items()}
        lengths = {s: x.shape[1] for s, x in xs.items()}
        head_dim = self.cfg.hidden_size // self.cfg.num_heads
        # Once per forward: the RoPE table of the packed trunk sequence and the key mask.
        table = pack_rope({m: rope for m in tokens}, lengths, head_dim, text.device)
        attn_mask = None
        if text_mask is not None:
            rest = sum(lengths.values()) - text.shape[1]
            keep = F.pad(text_mask.bool(), (0, rest), value=True)  # [B, N_total]
            attn_mask = keep[:, None, None, :]  # [B, 1, 1, N_total]
        # The last trunk block's text outputs would be unused: text only gives keys and values.
        last = len(self.joint_blocks) + len(self.single_blocks) - 1
        for i, block in enumerate(self.joint_blocks):
            xs = self._run(block, xs, vecs, table, attn_mask, TEXT if i == last else None)
        if self.single_blocks:
            x = torch.cat(list(xs.values()), dim=1)  # [B, N_total, D], packed once for the trunk
            runs = runs_of(lengths)
            for i, block in enumerate(self.single_blocks, start=len(self.joint_blocks)):
                x = self._run(block, x, vecs, table, attn_mask, runs,
                              lengths[TEXT] if i == last else 0)  # fmt: skip
            # The last block left text out. Contiguous copies: a compiled decoder block would
            # otherwise be specialised on the packed sequence's stride (one per text length).
            parts = x.split([lengths[m] for m in tokens], dim=1)
            xs = {m: p.contiguous() for m, p in zip(tokens, parts, strict=True)}
        grid = RopeTable(rope[0], signed_sin(rope[1]))  # decoders: one modality's grid
        out = {}
        for m in tokens:
            x = xs[m]
            for block in self.decoders[m]:
                x = self._run(block, x, vecs, grid, None, ((m, lengths[m]),))
            out[m] = self._head(m, x, vecs[m])
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
    sequence, divided by the image+depth tokens. The last trunk block computes only keys and
    values for text (its text outputs would be unused). Embeddings and heads are ignored (~1%).
    """
    d, r = cfg.hidden_size, cfg.mlp_ratio
    per_token, qkv = 4 * d * d + 2 * d * d * r, 3 * d * d  # qkv + proj + MLP; qkv alone
    n_mod = len(cfg.modalities)
    seq = num_tokens * n_mod + num_text
    blocks = cfg.num_layers + cfg.num_single_layers
    trunk = max(blocks - 1, 0) * (per_token * seq + 2 * seq * seq * d)
    if blocks:
        queries = seq - num_text
        trunk += qkv * seq + (per_token - qkv) * queries + 2 * queries * seq * d
    dec = cfg.decoder_layers * n_mod * (per_token * num_tokens + 2 * num_tokens**2 * d)
    return 6.0 * (trunk + dec) / (num_tokens * n_mod)
