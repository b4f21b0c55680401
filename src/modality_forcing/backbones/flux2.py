"""FLUX.2 ([klein], [dev]; diffusers `Flux2Transformer2DModel`) with the depth stream.

As in the official release: depth tokens take the image's (row, col) RoPE ids with the time axis
set to 1, their own timestep embedder (a copy of `time_guidance_embed`) and, with `copy`, their own
copies of the global double-stream (image) and single-stream modulations; single-stream blocks
modulate each token by its own modality. The image is the FLUX.2 VAE latent (128 channels at
1/16, already 2x2-patchified by `VAECodec`), one token per latent pixel.

Timestep convention (checked against `Flux2KleinPipeline`): the pipeline passes sigma = t (t = 1
noise) and the model embeds 1000 t; latents are `(1 - t) x0 + t noise` and the output is the
velocity `noise - x0`, which is exactly this project's flow convention, sign included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modalities import DEPTH, IMAGE
from ..model.layers import patchify, unpatchify
from ..model.mmdit import TEXT
from ..model.text import TextTokens
from .base import BackboneModel
from .common import BackboneDiT, Chunks, Rope, SingleSpec, grid_ids, modulation


def text_ids(n: int) -> torch.Tensor:
    """FLUX.2 text position ids: (0, 0, 0, n) for token n, [n, 4]."""
    ids = torch.zeros(n, 4)
    ids[:, 3] = torch.arange(n)
    return ids


class Flux2Single(SingleSpec):
    """`Flux2SingleTransformerBlock`: fused qkv + SwiGLU-MLP input, fused output projection."""

    @staticmethod
    def mod(block: nn.Module) -> nn.Module | None:
        return None  # FLUX.2 modulates all single blocks from one global module

    @staticmethod
    def norm(block: nn.Module) -> nn.Module:
        return block.norm

    @staticmethod
    def project(block: nn.Module, h: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, ...]:
        attn = block.attn
        y = attn.to_qkv_mlp_proj(h)
        qkv, mlp = y.split([3 * attn.inner_dim, y.shape[-1] - 3 * attn.inner_dim], dim=-1)
        q, k, v = (z.unflatten(-1, (-1, head_dim)) for z in qkv.chunk(3, dim=-1))
        return attn.norm_q(q), attn.norm_k(k), v, attn.mlp_act_fn(mlp)

    @staticmethod
    def out(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.attn.to_out(y)


class Flux2DiT(BackboneDiT):
    time_module = "time_guidance_embed"
    global_modulations = ("double_stream_modulation_img", "single_stream_modulation")
    single_spec = Flux2Single

    @classmethod
    def image_channels_of(cls, config: Any) -> int:
        return config.in_channels // config.patch_size**2

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer.x_embedder(patchify(x, self.image_patch))

    def unembed_image(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, *like.shape[1:], self.image_patch)

    def time_vector(self, embedder: nn.Module, t: torch.Tensor, text: TextTokens,
                    like: torch.Tensor) -> torch.Tensor:  # fmt: skip
        g = self.guidance(like)
        return embedder(t.to(like.dtype) * 1000, None if g is None else g.to(like.dtype) * 1000)

    def rope(self, h: int, w: int, num_text: int, depth: bool, device: torch.device) -> Rope:
        # (time, row, col, text index): text (0, 0, 0, n), image (0, r, c, 0), depth (1, r, c, 0)
        ids = [text_ids(num_text), grid_ids(h, w, 0, 4)] + ([grid_ids(h, w, 1, 4)] if depth else [])
        return self.transformer.pos_embed(torch.cat(ids).to(device))

    def global_mods(self, vecs: dict[str, torch.Tensor]) -> dict[str, dict[str, Chunks]]:
        t, own = self.transformer, self.depth_modulation
        double = modulation(t.double_stream_modulation_img, vecs[IMAGE])
        single = modulation(t.single_stream_modulation, vecs[IMAGE])
        mods = {
            "joint": {TEXT: modulation(t.double_stream_modulation_txt, vecs[IMAGE]), IMAGE: double},
            "single": {TEXT: single, IMAGE: single},
        }
        if DEPTH in vecs:
            for kind, name in zip(("joint", "single"), self.global_modulations, strict=True):
                source = own[name] if name in own else getattr(t, name)
                mods[kind][DEPTH] = modulation(source, vecs[DEPTH])
        return mods

    def original_forward(self, transformer: nn.Module, x: torch.Tensor, t: torch.Tensor,
                         text: TextTokens) -> torch.Tensor:  # fmt: skip
        p = self.image_patch
        h, w = x.shape[-2] // p, x.shape[-1] // p
        out = transformer(
            hidden_states=patchify(x, p), encoder_hidden_states=text.tokens.to(x.dtype),
            timestep=t, img_ids=grid_ids(h, w, 0, 4).to(x.device),
            txt_ids=text_ids(text.tokens.shape[1]).to(x.device), guidance=self.guidance(x),
            return_dict=False,
        )[0]  # fmt: skip
        return unpatchify(out, *x.shape[1:], p)


class Flux2Model(BackboneModel):
    """Modality Forcing on FLUX.2 (`model.family: flux2`)."""

    dit_class = Flux2DiT
    transformer_class = "Flux2Transformer2DModel"
    text_kind = "flux2"
