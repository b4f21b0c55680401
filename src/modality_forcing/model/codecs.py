"""Image codecs: the space the image stream lives in. `pixel` is RGB itself; `vae` is the
normalised latent of a frozen diffusers autoencoder (SD/FLUX.1 `AutoencoderKL`, FLUX.2
`AutoencoderKLFlux2`), normalised exactly as the matching diffusers pipelines do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..config import CodecConfig


class ImageCodec(nn.Module):
    """Common interface: images [B, 3, H, W] in [-1, 1] <-> codec space [B, channels, h, w].

    Attributes:
        channels: channels of the codec space the network sees.
        downsample: spatial factor, `h = H // downsample`, `w = W // downsample`.
    """

    channels: int
    downsample: int

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [-1, 1] -> codec space [B, channels, H / f, W / f]."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Codec space [B, channels, h, w] -> image [B, 3, h * f, w * f], roughly in [-1, 1]."""
        raise NotImplementedError

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Codec-space (h, w) of an image of (height, width); both must divide by `downsample`."""
        f = self.downsample
        if height % f or width % f:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the codec's downsample factor "
                f"{f}; resize or crop it first"
            )
        return height // f, width // f


class PixelCodec(ImageCodec):
    """Identity: the network works on RGB pixels in [-1, 1] (the tensor is returned as is)."""

    channels = 3
    downsample = 1

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


def _read_vae_config(path: Path) -> dict:
    if not path.is_dir():
        raise FileNotFoundError(f"VAE directory '{path}' does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"VAE directory '{path}' has no config.json")
    return json.loads(config_file.read_text())


class VAECodec(ImageCodec):
    """A frozen diffusers autoencoder, loaded from a local directory.

    The class is read from `_class_name` in `config.json`:

    - `AutoencoderKL` (SD 1.x/2.x/XL, SD3, FLUX.1): `z = (mode - shift_factor) * scaling_factor`
      (`shift_factor` None counts as 0), or, when the config stores per-channel `latents_mean`
      and `latents_std`, `z = (mode - mean) * scaling_factor / std` (the SDXL pipelines' rule).
      `channels = latent_channels`, `downsample = 2 ** (len(block_out_channels) - 1)`.
    - `AutoencoderKLFlux2` (FLUX.2): as `Flux2Pipeline._encode_vae_image`: the mode is
      patchified `p x p` (new channel `c * p * p + i * p + j`, i.e. `pixel_unshuffle`), then
      normalised with the stored batch-norm running stats,
      `z = (z - running_mean) / sqrt(running_var + batch_norm_eps)`. `decode` inverts both, as
      the pipeline does before `vae.decode`. `channels = latent_channels * p * p` (128 for
      FLUX.2), `downsample = 2 ** (len(block_out_channels) - 1) * p` (16 for FLUX.2).

    Encoding is deterministic: it takes the posterior mode (= mean of the diagonal Gaussian), never
    a sample. The autoencoder is frozen (`requires_grad=False`) and stays in eval mode even when
    the parent module is put in training mode. `encode` runs without autograd; `decode` lets
    gradients reach its latent input.

    Args:
        pretrained: local directory holding the diffusers model (or its parent, with `subfolder`).
        subfolder: e.g. `"vae"` for a full pipeline directory.
        dtype: dtype to load and run the autoencoder in; inputs are cast to it and outputs cast
            back to the input's dtype. None keeps the checkpoint's dtype.
    """

    def __init__(
        self,
        pretrained: str | Path,
        subfolder: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        import diffusers

        root = Path(pretrained)
        config = _read_vae_config(root / subfolder if subfolder else root)
        class_name = config.get("_class_name")
        if class_name not in _VAE_CLASSES:
            raise ValueError(
                f"unsupported VAE class '{class_name}'; choose from {sorted(_VAE_CLASSES)}"
            )
        cls = getattr(diffusers, class_name)
        kwargs = {"subfolder": subfolder} if subfolder else {}
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        self.vae = cls.from_pretrained(
            str(root), local_files_only=True, use_safetensors=True, **kwargs
        )
        self.vae.requires_grad_(False).eval()
        self.kind = class_name

        cfg = self.vae.config
        vae_factor = 2 ** (len(cfg.block_out_channels) - 1)
        if class_name == "AutoencoderKLFlux2":
            self.patch = tuple(int(p) for p in cfg.patch_size)
            self.channels = cfg.latent_channels * math.prod(self.patch)
            if self.patch[0] != self.patch[1]:
                raise ValueError(f"non-square VAE patch_size {self.patch} is not supported")
            self.downsample = vae_factor * self.patch[0]
        else:
            self.patch = (1, 1)
            self.channels = cfg.latent_channels
            self.downsample = vae_factor

    def train(self, mode: bool = True) -> VAECodec:
        """Keep the frozen autoencoder in eval mode whatever the parent does."""
        super().train(mode)
        self.vae.eval()
        return self

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) [1, C, 1, 1] with `z_norm = (z - mean) / std`, fp32."""
        cfg = self.vae.config
        kw = {"device": like.device, "dtype": torch.float32}
        if self.kind == "AutoencoderKLFlux2":
            mean = self.vae.bn.running_mean.to(**kw)
            std = torch.sqrt(self.vae.bn.running_var.to(**kw) + cfg.batch_norm_eps)
        elif getattr(cfg, "latents_mean", None) is not None and cfg.latents_std is not None:
            mean = torch.tensor(cfg.latents_mean, **kw)
            std = torch.tensor(cfg.latents_std, **kw) / cfg.scaling_factor
        else:
            shift = cfg.shift_factor if getattr(cfg, "shift_factor", None) is not None else 0.0
            mean = torch.full((self.channels,), float(shift), **kw)
            std = torch.full((self.channels,), 1.0 / cfg.scaling_factor, **kw)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [-1, 1] -> normalised latent [B, channels, H / f, W / f]."""
        self.latent_size(image.shape[-2], image.shape[-1])
        vae_dtype = next(self.vae.parameters()).dtype
        z = self.vae.encode(image.to(vae_dtype)).latent_dist.mode().float()  # [B, c, H/8, W/8]
        z = _patchify(z, self.patch)  # [B, c * p * p, H / f, W / f]
        mean, std = self._stats(z)
        return ((z - mean) / std).to(image.dtype)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent [B, channels, h, w] -> image [B, 3, h * f, w * f], about [-1, 1]."""
        if latent.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} latent channels, got {latent.shape[1]}")
        mean, std = self._stats(latent)
        z = _unpatchify(latent.float() * std + mean, self.patch)  # [B, c, h * p, w * p]
        vae_dtype = next(self.vae.parameters()).dtype
        return self.vae.decode(z.to(vae_dtype)).sample.to(latent.dtype)


def _patchify(z: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, C * ph * pw, H / ph, W / pw], channel `c * ph * pw + i * pw + j`."""
    ph, pw = patch
    if ph == pw == 1:
        return z
    b, c, h, w = z.shape
    z = z.view(b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4)  # [B, C, ph, pw, h, w]
    return z.reshape(b, c * ph * pw, h // ph, w // pw)


def _unpatchify(z: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """Inverse of `_patchify`."""
    ph, pw = patch
    if ph == pw == 1:
        return z
    b, c, h, w = z.shape
    z = z.reshape(b, c // (ph * pw), ph, pw, h, w).permute(0, 1, 4, 2, 5, 3)  # [B, C, h, ph, w, pw]
    return z.reshape(b, c // (ph * pw), h * ph, w * pw)


_VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLFlux2")


class LatentStandIn(ImageCodec):
    """The latent space of an SD3 / Flux.1-style VAE (16 channels, 8x downsampling) without its
    weights: for throughput and memory benchmarks, which train on random latents and never
    encode or decode."""

    channels = 16
    downsample = 8

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("codec 'latent' is a benchmark stand-in: it cannot encode images; "
                           "use codec 'vae' with a pretrained autoencoder")  # fmt: skip

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("codec 'latent' is a benchmark stand-in: it cannot decode latents; "
                           "use codec 'vae' with a pretrained autoencoder")  # fmt: skip


def _build_pixel(cfg: CodecConfig) -> ImageCodec:
    return PixelCodec()


def _build_latent(cfg: CodecConfig) -> ImageCodec:
    return LatentStandIn()


def _build_vae(cfg: CodecConfig) -> ImageCodec:
    if not cfg.pretrained:
        raise ValueError("codec 'vae' needs `pretrained`: a local diffusers autoencoder directory")
    return VAECodec(cfg.pretrained, subfolder=cfg.subfolder)


CODECS: dict[str, Callable[[CodecConfig], ImageCodec]] = {
    "pixel": _build_pixel,
    "vae": _build_vae,
    "latent": _build_latent,
}


def build_codec(cfg: CodecConfig) -> ImageCodec:
    """Build the image codec named by `cfg.kind` (`pixel`, `vae`, or the benchmarks' `latent`)."""
    if cfg.kind not in CODECS:
        raise ValueError(f"unknown codec '{cfg.kind}'; choose from {sorted(CODECS)}")
    return CODECS[cfg.kind](cfg)
