"""The full denoiser: text encoder + image codec + MM-DiT, in per-modality grid space.

`encode_batch` turns a data batch into clean per-modality grids (image latents, normalised depth);
`forward` maps noisy grids + noise levels + captions to predictions on the same grids. Image and
depth tokens share one grid: the image latent is patchified with `patch_size`, depth (pixel space,
never a VAE) with `patch_size * codec.downsample`, so both give the same number of tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..modalities import DEPTH, IMAGE, get_modality
from .base import DenoiserBase
from .codecs import ImageCodec, build_codec
from .factory import register_family
from .layers import grid_positions, patchify, rope_2d, unpatchify
from .mmdit import MMDiT
from .text import TextTokens, build_text_encoder

HINT_CHANNELS = 2  # known depth value, known mask (`flow/hints.hint_tensor`)


class PixelRefiner(nn.Module):
    """A light residual conv net on one modality's unpatchified prediction, zero at init.

    Patch-wise heads leave seams every `patch_size` pixels; three 3x3 convolutions over
    [prediction, every modality's x_t and t] can smooth them and copy edges from a clean given
    modality (an image's object boundaries into its depth map).
    """

    def __init__(self, channels: int, context: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + context, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, pred: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return pred + self.net(torch.cat([pred, context], 1))


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
        if cfg.refine_width > 0:
            context = sum(self.channels(m) + 1 for m in cfg.modalities)  # each x_t and its t
            context += HINT_CHANNELS if cfg.depth_hint else 0  # the known points, last
            self.refine = nn.ModuleDict({
                m: PixelRefiner(self.channels(m), context, cfg.refine_width)
                for m in cfg.modalities
            })  # fmt: skip
        self._ropes: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def text_tokens(self, text: TextTokens | list[str]) -> TextTokens:
        """Captions are encoded only up to the longest one (precomputed tokens pass through)."""
        return text if isinstance(text, TextTokens) else self.text_encoder(list(text), trim=True)

    def predict(
        self,
        xt: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor],
        text: TextTokens,
        hint: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Image (velocity or x0, `image_prediction`) and depth (x0) on their grids; image only
        is plain T2I."""
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
        hint_tokens = None if hint is None else patchify(hint, self.patch_size(DEPTH))
        out = self.dit(tokens, t, text.tokens, text.mask, rope, hint_tokens)
        out = {m: unpatchify(out[m], *shapes[m]) for m in out}
        return self._refine(out, xt, t, hint) if self.cfg.refine_width > 0 else out

    def _refine(
        self, out: dict[str, torch.Tensor], xt: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor], hint: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Each prediction refined from [prediction, every modality's x_t and t] (zeros for an
        absent modality), and for a `depth_hint` model the known points (zeros: none known).
        Needs every modality on one pixel grid (the pixel codec)."""
        ref = next(iter(out.values()))
        b, _, h, w = ref.shape
        context = []
        for m in self.cfg.modalities:
            if m in xt:
                x = xt[m]
                if x.shape[-2:] != (h, w):
                    raise ValueError(
                        f"refine_width needs every modality on one grid; '{m}' is "
                        f"{tuple(x.shape[-2:])}, not {(h, w)} (use the pixel codec)"
                    )
                context += [x.to(ref.dtype), t[m].to(ref.dtype).view(b, 1, 1, 1).expand(b, 1, h, w)]
            else:
                context.append(ref.new_zeros(b, self.channels(m) + 1, h, w))
        if self.cfg.depth_hint:
            context.append(ref.new_zeros(b, HINT_CHANNELS, h, w) if hint is None
                           else hint.to(ref.dtype))  # fmt: skip
        ctx = torch.cat(context, 1)
        refined = {}
        for m, pred in out.items():
            if get_modality(m).fp32_head:  # as the depth head: out of autocast, in float32
                with torch.autocast(pred.device.type, enabled=False):
                    refined[m] = self.refine[m](pred.float(), ctx.float())
            else:
                refined[m] = self.refine[m](pred, ctx)
        return refined

    def _rope(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [h * w, head_dim] of the token grid, built once per grid size and device."""
        key = (h, w, str(device))
        if key not in self._ropes:
            head_dim = self.cfg.hidden_size // self.cfg.num_heads
            cos, sin = rope_2d(grid_positions(h, w), head_dim, self.cfg.rope_theta)
            self._ropes[key] = (cos.to(device), sin.to(device))
        return self._ropes[key]


register_family("native", ModalityForcingModel)
