"""The depth stream grafted onto a diffusers MM-DiT, shared by the FLUX.2, FLUX.1 and SD3 adapters.

Depth tokens (pixel-space patches, one per image token) join the joint sequence `[text, image,
depth]` on the image's grid. In dual-stream blocks depth is a third stream with its own copy of the
image stream's weights (`copy`, the official triple-stream layout) or the image weights themselves
(`shared`); in single-stream blocks every token shares the weights and is modulated (adaLN) by its
own modality's timestep embedding. After the trunk, depth-only decoder blocks (the native
`SingleBlock`) and an fp32 head predict depth x0. Depth keys of samples at t_depth = 1 are masked
out of attention, so those samples, and image-only calls, reproduce the original backbone exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import AdaLayerNormContinuous
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import BackboneConfig
from ..modalities import DEPTH, IMAGE
from ..model.layers import Modulation, grid_positions, patchify, rope_2d, unpatchify
from ..model.mmdit import TEXT, FinalLayer, SingleBlock
from ..model.text import TextTokens

Rope = tuple[torch.Tensor, torch.Tensor] | None
Chunks = tuple[torch.Tensor, ...]
DEPTH_WEIGHTS = ("copy", "shared")
DECODER_ROPE_THETA = 10000.0

# Text-stream parts of a dual-stream block; the names are the same in all three diffusers models.
TEXT_STREAM_PARTS = (
    "norm1_context", "norm2_context", "ff_context", "attn.add_q_proj", "attn.add_k_proj",
    "attn.add_v_proj", "attn.to_add_out", "attn.norm_added_q", "attn.norm_added_k",
)  # fmt: skip


def modulation(module: nn.Module, vec: torch.Tensor) -> Chunks:
    """adaLN chunks [B, 1, D] in (shift, scale, gate, ...) order from a vector [B, D].

    `module` is any diffusers adaLN source: `AdaLayerNormZero[Single]`, `SD35AdaLayerNormZeroX`,
    FLUX.2's `Flux2Modulation` (all `linear(SiLU(vec))`, shift first) or `AdaLayerNormContinuous`
    (scale first: reordered here).
    """
    out = module.linear(F.silu(vec))
    chunks = out.unsqueeze(1).chunk(out.shape[-1] // vec.shape[-1], dim=-1)
    return (chunks[1], chunks[0]) if isinstance(module, AdaLayerNormContinuous) else chunks


def pooled_text(text: TextTokens) -> torch.Tensor:
    """The pooled text embedding [B, P] FLUX.1 and SD3 condition their timestep on."""
    pooled = getattr(text, "pooled", None)
    if pooled is None:
        raise ValueError("this backbone needs a pooled text embedding (BackboneTextTokens.pooled)")
    return pooled


def vec_for(stream: str, vecs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Text tokens are modulated by the image timestep, as in every backbone here."""
    return vecs[IMAGE if stream == TEXT else stream]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: Rope,
           key_mask: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """Joint attention over [B, S, H, Dh] with the backbone's RoPE; returns [B, S, H * Dh]."""
    if rope is not None:
        q = apply_rotary_emb(q, rope, sequence_dim=1)
        k = apply_rotary_emb(k, rope, sequence_dim=1)
    return dispatch_attention_fn(q, k, v, attn_mask=key_mask).flatten(2, 3).to(q.dtype)


@dataclass
class StreamView:
    """One stream of a dual-stream block, as the backbone modules that implement it."""

    mod: nn.Module | None  # adaLN source; None: chunks come from a global (FLUX.2) modulation
    norm1: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    norm_q: nn.Module | None
    norm_k: nn.Module | None
    out: nn.Module | None  # None: keys/values only (SD3's last text stream)
    norm2: nn.Module | None
    ff: nn.Module | None
    attn2: nn.Module | None = None  # SD3.5: extra self-attention within the stream


def image_view(block: nn.Module) -> StreamView:
    attn, norm1 = block.attn, block.norm1
    mod = norm1 if hasattr(norm1, "linear") else None
    return StreamView(
        mod, norm1.norm if mod is not None else norm1, attn.to_q, attn.to_k, attn.to_v,
        attn.norm_q, attn.norm_k, attn.to_out[0], block.norm2, block.ff,
        getattr(block, "attn2", None),
    )  # fmt: skip


def text_view(block: nn.Module) -> StreamView:
    attn, norm1 = block.attn, block.norm1_context
    mod = norm1 if hasattr(norm1, "linear") else None
    return StreamView(
        mod, norm1.norm if mod is not None else norm1, attn.add_q_proj, attn.add_k_proj,
        attn.add_v_proj, attn.norm_added_q, attn.norm_added_k, attn.to_add_out,
        getattr(block, "norm2_context", None), getattr(block, "ff_context", None),
    )  # fmt: skip


def strip_text_stream(block: nn.Module) -> nn.Module:
    """Delete a dual-stream block's text half in place (what is left is its image stream)."""
    for path in TEXT_STREAM_PARTS:
        *parents, name = path.split(".")
        owner = block
        for p in parents:
            owner = getattr(owner, p)
        if hasattr(owner, name):
            delattr(owner, name)
    return block


class JointLayer(nn.Module):
    """A dual-stream backbone block run over `[text, image(, depth)]` (one FSDP/checkpoint unit).

    Args:
        block: the diffusers block (kept, weights untouched).
        head_dim: attention head width.
        copy_depth: give depth its own copy of the image stream (else it reuses the image's).
    """

    def __init__(self, block: nn.Module, head_dim: int, copy_depth: bool) -> None:
        super().__init__()
        self.block = block
        self.depth = strip_text_stream(copy.deepcopy(block)) if copy_depth else None
        self.head_dim = head_dim

    def views(self) -> dict[str, StreamView]:
        depth = self.depth if self.depth is not None else self.block
        return {
            TEXT: text_view(self.block),
            IMAGE: image_view(self.block),
            DEPTH: image_view(depth),
        }

    def _qkv(self, view: StreamView, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v = (lin(h).unflatten(-1, (-1, self.head_dim)) for lin in (view.q, view.k, view.v))
        q = view.norm_q(q) if view.norm_q is not None else q
        k = view.norm_k(k) if view.norm_k is not None else k
        return q, k, v  # [B, S, H, Dh]

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        mods: dict[str, Chunks],
        rope: Rope,
        key_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        views = self.views()
        chunks = {
            s: mods[s] if s in mods else modulation(views[s].mod, vec_for(s, vecs)) for s in xs
        }
        normed, qkv = {}, []
        for s, x in xs.items():
            normed[s] = views[s].norm1(x)
            shift, scale = chunks[s][:2]
            qkv.append(self._qkv(views[s], normed[s] * (1 + scale) + shift))
        q, k, v = (torch.cat([t[i] for t in qkv], dim=1) for i in range(3))
        attn = attend(q, k, v, rope, key_mask).split([x.shape[1] for x in xs.values()], dim=1)
        out = {}
        for (s, x), a in zip(xs.items(), attn, strict=True):
            view, c = views[s], chunks[s]
            if view.out is None:  # keys and values only: the stream ends here
                out[s] = x
                continue
            x = x + c[2] * view.out(a)
            if view.attn2 is not None:
                x = x + c[8] * view.attn2(hidden_states=normed[s] * (1 + c[7]) + c[6])
            out[s] = x + c[5] * view.ff(view.norm2(x) * (1 + c[4]) + c[3])
        return out


class SingleSpec:
    """How a backbone's single-stream (parallel attention + MLP) block computes; see flux*.py."""

    @staticmethod
    def mod(block: nn.Module) -> nn.Module | None:
        """The block's own adaLN source (None: FLUX.2's global modulation)."""
        raise NotImplementedError

    @staticmethod
    def norm(block: nn.Module) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def project(block: nn.Module, h: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, ...]:
        """h [B, S, D] -> (q, k, v [B, S, H, Dh] QK-normalised, MLP activations [B, S, M])."""
        raise NotImplementedError

    @staticmethod
    def out(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """[attention | MLP] [B, S, D + M] -> [B, S, D]."""
        raise NotImplementedError


class SingleLayer(nn.Module):
    """A single-stream backbone block with per-token (per-modality) modulation."""

    def __init__(self, block: nn.Module, spec: type[SingleSpec], head_dim: int,
                 copy_depth: bool) -> None:  # fmt: skip
        super().__init__()
        self.block, self.spec, self.head_dim = block, spec, head_dim
        own = spec.mod(block)
        self.depth_mod = copy.deepcopy(own) if copy_depth and own is not None else None

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        vecs: dict[str, torch.Tensor],
        mods: dict[str, Chunks],
        rope: Rope,
        key_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        own, norm = self.spec.mod(self.block), self.spec.norm(self.block)
        chunks = {}
        for s in xs:
            source = self.depth_mod if s == DEPTH and self.depth_mod is not None else own
            chunks[s] = mods[s] if s in mods else modulation(source, vec_for(s, vecs))
        h = torch.cat([norm(x) * (1 + chunks[s][1]) + chunks[s][0] for s, x in xs.items()], dim=1)
        q, k, v, mlp = self.spec.project(self.block, h, self.head_dim)
        y = self.spec.out(self.block, torch.cat([attend(q, k, v, rope, key_mask), mlp], dim=-1))
        ys = y.split([x.shape[1] for x in xs.values()], dim=1)
        return {s: x + chunks[s][2] * y for (s, x), y in zip(xs.items(), ys, strict=True)}


class BackboneDiT(nn.Module):
    """A diffusers MM-DiT (`transformer`, its blocks wrapped in place) plus the depth stream.

    Subclasses say how image, text, time and positions enter the trunk (`embed_image`,
    `time_vector`, `rope`, ...); `forward` is the triple-stream computation they share.

    Args:
        transformer: the loaded diffusers transformer (taken over; its own `forward` is unused).
        bcfg: depth-stream options (`depth_weights`, `depth_decoder_layers`, `guidance`).
        depth_token_dim: depth values per token (pixels per image token).
    """

    time_module: ClassVar[str] = "time_text_embed"  # the backbone's timestep embedder
    global_modulations: ClassVar[tuple[str, ...]] = ()  # FLUX.2: adaLN shared by all blocks
    single_spec: ClassVar[type[SingleSpec] | None] = None
    learned_modality_id: ClassVar[bool] = False  # SD3 has no RoPE: a learned depth embedding

    def __init__(self, transformer: nn.Module, bcfg: BackboneConfig, depth_token_dim: int) -> None:
        super().__init__()
        if bcfg.depth_weights not in DEPTH_WEIGHTS:
            raise ValueError(
                f"unknown depth_weights '{bcfg.depth_weights}'; choose from {list(DEPTH_WEIGHTS)}"
            )
        copy_depth = bcfg.depth_weights == "copy"
        self.bcfg = bcfg
        self.transformer = transformer
        d = self.hidden_size = transformer.inner_dim
        self.head_dim = transformer.config.attention_head_dim
        heads = d // self.head_dim
        # New depth parts. They are built before any LoRA, which targets trunk modules by name.
        self.depth_embed = nn.Linear(depth_token_dim, d)
        self.depth_time = copy.deepcopy(getattr(transformer, self.time_module))
        self.depth_modulation = nn.ModuleDict(
            {n: copy.deepcopy(getattr(transformer, n)) for n in self.global_modulations}
            if copy_depth else {}
        )  # fmt: skip
        self.modality_embed = nn.Parameter(torch.zeros(d)) if self.learned_modality_id else None
        transformer.transformer_blocks = nn.ModuleList(
            JointLayer(b, self.head_dim, copy_depth) for b in transformer.transformer_blocks
        )
        if self.single_spec is not None:
            transformer.single_transformer_blocks = nn.ModuleList(
                SingleLayer(b, self.single_spec, self.head_dim, copy_depth)
                for b in transformer.single_transformer_blocks
            )
        layers, ratio = range(bcfg.depth_decoder_layers), self.mlp_ratio_of(transformer.config)
        self.decoders = nn.ModuleDict(
            {DEPTH: nn.ModuleList(SingleBlock([DEPTH], d, heads, ratio) for _ in layers)}
        )
        self.final = nn.ModuleDict({DEPTH: FinalLayer(d, depth_token_dim)})
        self.activation_checkpointing = False  # set by the trainer
        self._init_depth_parts()

    def _init_depth_parts(self) -> None:
        # Fresh parts follow the native MM-DiT: Xavier linears, adaLN-Zero decoder blocks (each the
        # identity at init) and a zero head. Copied parts keep the backbone's pretrained weights.
        for module in [self.depth_embed, *self.decoders.modules(), *self.final.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for module in [*self.decoders.modules(), *self.final.modules()]:
            if isinstance(module, Modulation):
                nn.init.zeros_(module.lin.weight)
                nn.init.zeros_(module.lin.bias)
        nn.init.zeros_(self.final[DEPTH].linear.weight)
        nn.init.zeros_(self.final[DEPTH].linear.bias)
        if self.modality_embed is not None:
            nn.init.normal_(self.modality_embed, std=0.02)

    @property
    def joint_blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    @property
    def single_blocks(self) -> nn.ModuleList | tuple[()]:
        return getattr(self.transformer, "single_transformer_blocks", ())

    # ------------------------------------------------------------------ backbone-specific hooks
    @classmethod
    def image_patch_of(cls, config: Any) -> int:
        """Image token side in codec-latent pixels."""
        return config.patch_size

    @classmethod
    def image_channels_of(cls, config: Any) -> int:
        """Latent channels the transformer expects (what the codec must produce)."""
        return config.in_channels

    @classmethod
    def mlp_ratio_of(cls, config: Any) -> float:
        return float(getattr(config, "mlp_ratio", 4.0))

    @property
    def image_patch(self) -> int:
        return self.image_patch_of(self.transformer.config)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """Image grid [B, C, h, w] -> tokens [B, N, D] (positions included where additive)."""
        raise NotImplementedError

    def unembed_image(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Output tokens [B, N, C p p] -> grid shaped like the input image grid."""
        raise NotImplementedError

    def time_vector(self, embedder: nn.Module, t: torch.Tensor, text: TextTokens,
                    like: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Conditioning vector [B, D] of noise level t [B] (flow convention) via `embedder`."""
        raise NotImplementedError

    def rope(self, h: int, w: int, num_text: int, depth: bool, device: torch.device) -> Rope:
        """RoPE (cos, sin) [S, Dh] of the sequence [text, image(, depth)]; None without RoPE."""
        return None

    def global_mods(self, vecs: dict[str, torch.Tensor]) -> dict[str, dict[str, Chunks]]:
        """FLUX.2: adaLN chunks per stream computed once per call, for `joint` and `single`."""
        return {}

    def depth_position(self, h: int, w: int) -> torch.Tensor | float:
        """Additive depth-token position/modality embedding (SD3); 0 where RoPE does it."""
        return 0.0

    def original_forward(self, transformer: nn.Module, x: torch.Tensor, t: torch.Tensor,
                         text: TextTokens) -> torch.Tensor:  # fmt: skip
        """The unmodified diffusers forward of a pristine `transformer` on an image grid."""
        raise NotImplementedError

    def guidance(self, like: torch.Tensor) -> torch.Tensor | None:
        """Guidance-embedding input [B] for guidance-distilled backbones (FLUX.1-dev)."""
        if not getattr(self.transformer.config, "guidance_embeds", False):
            return None
        return torch.full((like.shape[0],), self.bcfg.guidance, device=like.device)

    # ------------------------------------------------------------------ forward
    def _run(self, layer: nn.Module, *args: Any) -> Any:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(
        self, xt: dict[str, torch.Tensor], t: dict[str, torch.Tensor], text: TextTokens
    ) -> dict[str, torch.Tensor]:
        """Image velocity (the backbone's own convention, = flow v) and depth x0 on their grids."""
        x = xt[IMAGE]
        b, p = x.shape[0], self.image_patch
        h, w = x.shape[-2] // p, x.shape[-1] // p
        xs = {TEXT: self.transformer.context_embedder(text.tokens.to(x.dtype))}
        xs[IMAGE] = self.embed_image(x)
        vecs = {IMAGE: self.time_vector(getattr(self.transformer, self.time_module), t[IMAGE],
                                        text, x)}  # fmt: skip
        key_mask = None
        if DEPTH in xt:
            tokens = patchify(xt[DEPTH], xt[DEPTH].shape[-1] // w).to(x.dtype)
            xs[DEPTH] = self.depth_embed(tokens) + self.depth_position(h, w)
            vecs[DEPTH] = self.time_vector(self.depth_time, t[DEPTH], text, x)
            present = t[DEPTH] < 1  # pure-noise depth carries nothing: hide it from attention
            if not bool(present.all()):
                n = xs[TEXT].shape[1] + xs[IMAGE].shape[1]
                keep = torch.cat([present.new_ones(b, n), present[:, None].expand(b, h * w)], 1)
                key_mask = keep[:, None, None, :]  # [B, 1, 1, S]
        rope = self.rope(h, w, xs[TEXT].shape[1], DEPTH in xt, x.device)
        mods = self.global_mods(vecs)
        for layer in self.joint_blocks:
            xs = self._run(layer, xs, vecs, mods.get("joint", {}), rope, key_mask)
        for layer in self.single_blocks:
            xs = self._run(layer, xs, vecs, mods.get("single", {}), rope, key_mask)
        image = self.transformer.proj_out(self.transformer.norm_out(xs[IMAGE], vecs[IMAGE]))
        out = {IMAGE: self.unembed_image(image, x)}
        if DEPTH in xt:
            out[DEPTH] = self._decode_depth(xs[DEPTH], vecs[DEPTH], h, w, xt[DEPTH].shape)
        return out

    def _decode_depth(self, x: torch.Tensor, vec: torch.Tensor, h: int, w: int,
                      shape: torch.Size) -> torch.Tensor:  # fmt: skip
        cos, sin = rope_2d(grid_positions(h, w), self.head_dim, DECODER_ROPE_THETA)
        ropes = {DEPTH: (cos.to(x.device), sin.to(x.device))}
        xs = {DEPTH: x}
        for block in self.decoders[DEPTH]:
            xs = self._run(block, xs, {DEPTH: vec}, ropes, None)
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp32 depth head
            tokens = self.final[DEPTH](xs[DEPTH].float(), vec.float())
        return unpatchify(tokens, shape[1], shape[2], shape[3], shape[-1] // w)


def grid_ids(h: int, w: int, modality_id: int, num_axes: int) -> torch.Tensor:
    """FLUX position ids of an h x w token grid: (modality, row, col, 0...) rows, [h * w, axes]."""
    ids = torch.zeros(h * w, num_axes)
    ids[:, 0] = modality_id
    ids[:, 1:3] = grid_positions(h, w)
    return ids
