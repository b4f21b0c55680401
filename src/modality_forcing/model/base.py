"""What every denoiser family shares: the frozen image codec, grid geometry and batch encoding.

The native MM-DiT, the diffusers backbone adapters and the official-release model all see data
the same way: the image through the codec, depth in pixel space normalised to unit mean and
contracted, further registered modalities as they come. Only the network differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..modalities import DEPTH, IMAGE, get_modality, normalize_depth
from .codecs import ImageCodec
from .text import TextTokens


class DenoiserBase(nn.Module):
    """Base of the denoiser families. Subclasses set `self.cfg`, `self._codec = [codec]` and a
    `text_encoder`, and implement `predict(xt, t, text)` on encoded text; `forward` is shared."""

    cfg: ModelConfig
    _codec: list[ImageCodec]

    @property
    def codec(self) -> ImageCodec:
        return self._codec[0]

    def untracked_modules(self) -> list[nn.Module]:
        """Frozen modules kept out of the state dict (they load from their own directory)."""
        return list(self._codec)

    def _apply(self, fn: Any, recurse: bool = True) -> DenoiserBase:
        """`.to()` / `.cuda()` / `.float()` reach the untracked frozen modules too."""
        super()._apply(fn, recurse)
        for module in self.untracked_modules():
            module._apply(fn, recurse)
        return self

    def channels(self, modality: str) -> int:
        return self.codec.channels if modality == IMAGE else get_modality(modality).channels

    def patch_size(self, modality: str) -> int:
        """Patch side in the modality's own grid (latent pixels for image, pixels otherwise)."""
        return self.cfg.patch_size * (1 if modality == IMAGE else self.codec.downsample)

    def grid_shape(self, modality: str, height: int, width: int) -> tuple[int, int, int]:
        """[C, h, w] of a modality's grid for an image of height x width pixels."""
        if modality == IMAGE:
            return self.codec.channels, *self.codec.latent_size(height, width)
        return self.channels(modality), height, width

    @torch.no_grad()
    def encode_batch(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Data batch -> (clean grids per modality, depth valid_mask [B, 1, H, W]).

        Depth is normalised per sample (unit mean over valid pixels, then contracted); any other
        registered modality is taken from `batch[name]` ([B, C, H, W]) as it is.
        """
        x0 = {IMAGE: self.codec.encode(batch["image"])}
        valid = batch["valid_mask"].bool()
        for m in self.cfg.modalities:
            if m == DEPTH:
                x0[DEPTH], _ = normalize_depth(batch["depth"].float(), valid)
            elif m != IMAGE:
                if m not in batch:
                    raise ValueError(f"the model has modality '{m}' but the batch has no '{m}'")
                x0[m] = batch[m].float()
        return x0, valid

    def encode_text(self, captions: list[str]) -> TextTokens:
        return self.text_encoder(captions)

    def text_tokens(self, text: TextTokens | list[str]) -> TextTokens:
        """Captions encoded for a forward pass (precomputed `TextTokens` pass through)."""
        return text if isinstance(text, TextTokens) else self.encode_text(list(text))

    def forward(
        self,
        xt: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor],
        text: TextTokens | list[str],
        hint: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict for every modality in `xt`.

        Args:
            xt: modality -> [B, C, h, w] noisy grid (a held-clean modality is passed as is).
            t: modality -> [B] noise levels (t = 0 clean, 1 noise).
            text: captions, or precomputed `TextTokens` (e.g. the empty-prompt unconditional).
            hint: [B, 2, H, W] known depth points on the depth grid (`flow/hints.py`: the
                normalised value where known, then the known mask), for a model with
                `depth_hint`; None: none known.

        Returns:
            modality -> [B, C, h, w] prediction: velocity or x0 per the modality registry and
            the model's config.
        """
        if hint is None:
            return self.predict(xt, t, self.text_tokens(text))
        if not getattr(self.cfg, "depth_hint", False):
            raise ValueError(
                "this model has no input for known depth points (`depth_hint` is off in its "
                "config); fine-tune one with `model.depth_hint=true`"
            )
        return self.predict(xt, t, self.text_tokens(text), hint=hint)

    def predict(
        self, xt: dict[str, torch.Tensor], t: dict[str, torch.Tensor], text: TextTokens
    ) -> dict[str, torch.Tensor]:
        """The family's network on encoded text (see `forward`)."""
        raise NotImplementedError
