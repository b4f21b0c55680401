"""FLUX.1 ([dev], [schnell]; diffusers `FluxTransformer2DModel`) with the depth stream.

Depth tokens take the image's (row, col) RoPE ids with the first axis (FLUX.1's image-index axis,
0 for the generated image) set to 1, a copy of `time_text_embed` (timestep + pooled CLIP
+ guidance) for their adaLN, and, with `copy`, per-block copies of the image stream of the
dual-stream blocks and of the single blocks' modulation. The image is the 16-channel VAE latent
packed 2x2 into 64-channel tokens, as `FluxPipeline._pack_latents` does.

Timestep convention (checked against `FluxPipeline`): the model gets sigma = t and embeds 1000 t
(guidance likewise x 1000); latents are `(1 - t) x0 + t noise` and the output is `noise - x0`,
this project's flow convention, sign included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..model.layers import patchify, unpatchify
from ..model.text import TextTokens
from .base import BackboneModel
from .common import BackboneDiT, Rope, SingleSpec, grid_ids, pooled_text

PACK = 2  # FLUX.1 packs 2 x 2 latent pixels into one token


class FluxSingle(SingleSpec):
    """`FluxSingleTransformerBlock`: separate q/k/v and GELU MLP, one output projection."""

    @staticmethod
    def mod(block: nn.Module) -> nn.Module | None:
        return block.norm  # AdaLayerNormZeroSingle: (shift, scale, gate)

    @staticmethod
    def norm(block: nn.Module) -> nn.Module:
        return block.norm.norm

    @staticmethod
    def project(block: nn.Module, h: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, ...]:
        attn = block.attn
        q, k, v = (f(h).unflatten(-1, (-1, head_dim)) for f in (attn.to_q, attn.to_k, attn.to_v))
        return attn.norm_q(q), attn.norm_k(k), v, block.act_mlp(block.proj_mlp(h))

    @staticmethod
    def out(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.proj_out(y)


class FluxDiT(BackboneDiT):
    time_module = "time_text_embed"
    single_spec = FluxSingle

    @classmethod
    def image_patch_of(cls, config: Any) -> int:
        return PACK

    @classmethod
    def image_channels_of(cls, config: Any) -> int:
        return config.in_channels // PACK**2

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer.x_embedder(patchify(x, PACK))

    def unembed_image(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, *like.shape[1:], PACK)

    def time_vector(self, embedder: nn.Module, t: torch.Tensor, text: TextTokens,
                    like: torch.Tensor) -> torch.Tensor:  # fmt: skip
        pooled, g = pooled_text(text).to(like.dtype), self.guidance(like)
        if g is None:
            return embedder(t.to(like.dtype) * 1000, pooled)
        return embedder(t.to(like.dtype) * 1000, g.to(like.dtype) * 1000, pooled)

    def rope(self, h: int, w: int, num_text: int, depth: bool, device: torch.device) -> Rope:
        # 3 axes (image index, row, col): text (0, 0, 0), image (0, r, c), depth (1, r, c)
        ids = [torch.zeros(num_text, 3), grid_ids(h, w, 0, 3)]
        ids += [grid_ids(h, w, 1, 3)] if depth else []
        return self.transformer.pos_embed(torch.cat(ids).to(device))

    def original_forward(self, transformer: nn.Module, x: torch.Tensor, t: torch.Tensor,
                         text: TextTokens) -> torch.Tensor:  # fmt: skip
        h, w = x.shape[-2] // PACK, x.shape[-1] // PACK
        out = transformer(
            hidden_states=patchify(x, PACK), encoder_hidden_states=text.tokens.to(x.dtype),
            pooled_projections=pooled_text(text).to(x.dtype), timestep=t,
            img_ids=grid_ids(h, w, 0, 3).to(x.device),
            txt_ids=torch.zeros(text.tokens.shape[1], 3, device=x.device),
            guidance=self.guidance(x), return_dict=False,
        )[0]  # fmt: skip
        return unpatchify(out, *x.shape[1:], PACK)


class FluxModel(BackboneModel):
    """Modality Forcing on FLUX.1 (`model.family: flux`)."""

    dit_class = FluxDiT
    transformer_class = "FluxTransformer2DModel"
    text_kind = "flux"
    pooled_key = "pooled_projection_dim"
