"""Stable Diffusion 3 / 3.5 (diffusers `SD3Transformer2DModel`) with the depth stream.

SD3 has no RoPE: image tokens carry an additive 2-D sin-cos position embedding. Depth tokens get
the same embedding at the same grid positions plus a learned modality embedding, a copy of
`time_text_embed` (timestep + pooled CLIP) for their adaLN and, with `copy`, per-block copies of
the image stream (including SD3.5's second, within-stream attention). SD3 has only dual-stream
blocks; the last one's text stream only gives keys and values.

Timestep convention (checked against `StableDiffusion3Pipeline`): the model is given the
scheduler timestep 1000 t directly (no internal x 1000); latents are `(1 - t) x0 + t noise` and the
output is `noise - x0`, this project's flow convention, sign included.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.text import TextTokens
from .base import BackboneModel
from .common import BackboneDiT, pooled_text


class SD3DiT(BackboneDiT):
    time_module = "time_text_embed"
    learned_modality_id = True

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer.pos_embed(x)  # conv patchify + cropped sin-cos positions

    def unembed_image(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # As SD3Transformer2DModel.forward: tokens hold (p, q, c) per patch, channel last.
        b, c, hh, ww = like.shape
        p = self.image_patch
        x = tokens.reshape(b, hh // p, ww // p, p, p, c)  # [B, h, w, p, p, C]
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, hh, ww)

    def time_vector(self, embedder: nn.Module, t: torch.Tensor, text: TextTokens,
                    like: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return embedder(t * 1000, pooled_text(text).to(like.dtype))

    def depth_position(self, h: int, w: int) -> torch.Tensor:
        p = self.image_patch
        pos = self.transformer.pos_embed.cropped_pos_embed(h * p, w * p)  # [1, N, D]
        return pos + self.modality_embed

    def original_forward(self, transformer: nn.Module, x: torch.Tensor, t: torch.Tensor,
                         text: TextTokens) -> torch.Tensor:  # fmt: skip
        return transformer(
            hidden_states=x, encoder_hidden_states=text.tokens.to(x.dtype),
            pooled_projections=pooled_text(text).to(x.dtype), timestep=t * 1000, return_dict=False,
        )[0]  # fmt: skip


class SD3Model(BackboneModel):
    """Modality Forcing on SD3 / SD3.5 (`model.family: sd3`)."""

    dit_class = SD3DiT
    transformer_class = "SD3Transformer2DModel"
    text_kind = "sd3"
    pooled_key = "pooled_projection_dim"
