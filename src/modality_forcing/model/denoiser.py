"""The full denoiser: text encoder + image codec + MM-DiT, in per-modality grid space.

`encode_batch` turns a data batch into clean per-modality grids (image latents, normalised depth);
`forward` maps noisy grids + noise levels + captions to predictions on the same grids. Image and
depth tokens share one grid: the image latent is patchified with `patch_size`, depth (pixel space,
never a VAE) with `patch_size * codec.downsample`, so both give the same number of tokens.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..modalities import IMAGE
from .base import DenoiserBase
from .codecs import ImageCodec, build_codec
from .layers import grid_positions, patchify, rope_2d, unpatchify
from .mmdit import MMDiT
from .text import TextTokens, build_text_encoder


class ModalityForcingModel(DenoiserBase):
    """Denoiser over `{"image": [B, C, h, w] latent, "depth": [B, 1, H, W] normalised depth}`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # The codec is frozen and may be large: keep it out of the state dict (its weights stay
        # in the pretrained directory the config points to).
        self._codec: list[ImageCodec] = [build_codec(cfg.codec)]
        self.text_encoder = build_text_encoder(cfg.text)
        dims = {m: self.patch_size(m) ** 2 * self.channels(m) for m in cfg.modalities}
        self.dit = MMDiT(cfg, dims, cfg.text.dim)
        self._ropes: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(
        self,
        xt: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor],
        text: TextTokens | list[str],
    ) -> dict[str, torch.Tensor]:
        """Predict for every modality in `xt` (a subset of cfg.modalities; image only = T2I).

        Args:
            xt: modality -> [B, C, h, w] noisy grid (a held-clean modality is passed as is).
            t: modality -> [B] noise levels.
            text: captions, or precomputed `TextTokens` (e.g. the empty-prompt unconditional).

        Returns:
            modality -> [B, C, h, w]: velocity for image, x0 for depth (see modalities registry).
        """
        if not isinstance(text, TextTokens):  # encode only up to the longest caption
            text = self.text_encoder(list(text), trim=True)
        if text.mask is not None:
            # Trailing padding that no caption in the batch uses is masked out as keys anyway:
            # dropping it is exact and saves attention/MLP work on short captions.
            keep = max(1, int(text.mask.sum(1).max()))
            mask = text.mask[:, :keep]
            # No padding left: attending to every token needs no mask (exact, and it saves a
            # masking pass over every attention matrix).
            text = TextTokens(tokens=text.tokens[:, :keep], mask=None if mask.all() else mask)
        tokens, shapes = {}, {}
        for m, x in xt.items():
            p = self.patch_size(m)
            tokens[m] = patchify(x, p)
            shapes[m] = (x.shape[1], x.shape[2], x.shape[3], p)
        _, h, w, p = shapes[IMAGE] if IMAGE in shapes else next(iter(shapes.values()))
        device = next(iter(xt.values())).device
        rope = self._rope(h // p, w // p, device)
        out = self.dit(tokens, t, text.tokens, text.mask, rope)
        return {m: unpatchify(out[m], *shapes[m]) for m in out}

    def _rope(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [h * w, head_dim] of the token grid, built once per grid size and device."""
        key = (h, w, str(device))
        if key not in self._ropes:
            head_dim = self.cfg.hidden_size // self.cfg.num_heads
            cos, sin = rope_2d(grid_positions(h, w), head_dim, self.cfg.rope_theta)
            self._ropes[key] = (cos.to(device), sin.to(device))
        return self._ropes[key]
