"""Model family `official`: the release's `FluxRGBDDiT` behind our denoiser interface, and the
loader for a release directory (`config.json` + `model.safetensors` + `ae_*.safetensors`).

Conventions match ours exactly (reference 3.11): t = 0 clean, t = 1 noise,
`x_t = (1 - t) x0 + t noise`, RGB head = velocity `noise - x0`, depth head = x0 with
`v = (x_t - x0_hat) / max(t, 0.05)`; so the wrapper converts only layouts (grids <-> tokens), never
signs or times. Position ids, text recipe and dtypes follow the release.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ...config import CodecConfig, ModelConfig, TextConfig
from ...modalities import DEPTH, IMAGE
from ...model.base import DenoiserBase
from ...model.codecs import ImageCodec, build_codec
from ...model.layers import patchify, unpatchify
from ...model.text import HFTextEncoder, TextEncoder, TextTokens, build_text_encoder
from .ae import ReleaseAECodec, has_release_autoencoder
from .dit import FluxRGBDConfig, FluxRGBDDiT, get_variant, position_ids

RELEASE_CONFIG, RELEASE_WEIGHTS = "config.json", "model.safetensors"
QWEN3_LAYERS = (9, 18, 27)  # reference section 6: hidden_states[9 | 18 | 27]
TEXT_LENGTH = 512


def release_text_config(pretrained: str | Path | None, dim: int = 12288) -> TextConfig:
    """The release's text recipe on a local Qwen3 directory (Qwen/Qwen3-8B in the release)."""
    return TextConfig(
        kind="hf", dim=dim, max_length=TEXT_LENGTH, hidden_layers=QWEN3_LAYERS, trainable=False,
        chat_template=True, pretrained=None if pretrained is None else str(pretrained),
    )  # fmt: skip


def variant_model_config(
    variant: str,
    text: TextConfig,
    codec: CodecConfig,
    resolution: tuple[int, int] = (512, 512),
) -> ModelConfig:
    """Our `ModelConfig` (family `official`) for a release variant.

    The image stream takes the codec latent unpatchified (`patch_size` 1: the FLUX.2 AE already
    packs 2 x 2), depth takes `codec.downsample`-pixel patches (16), RoPE axes are head_dim / 4.
    """
    v = get_variant(variant)
    return ModelConfig(
        family="official", hidden_size=v.hidden_size, num_layers=v.depth_double,
        num_single_layers=v.depth_single, num_heads=v.num_heads, patch_size=1,
        mlp_ratio=v.mlp_ratio, decoder_layers=v.depth_decoder_num_layers,
        modalities=(IMAGE, DEPTH), rope_theta=v.theta,
        cross_modality_time=v.cross_stream_timestep_mixing, depth_t_min=0.05,
        resolution=resolution, text=text, codec=codec,
    )  # fmt: skip


def _build_text(cfg: TextConfig) -> TextEncoder:
    if cfg.kind == "hf":  # no trainable projection: txt_in takes the hidden states as they are
        dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
        return HFTextEncoder(cfg, chat_template=cfg.chat_template, dtype=dtype, project=False)
    return build_text_encoder(cfg)


def _build_codec(cfg: CodecConfig) -> ImageCodec:
    if cfg.kind == "vae" and cfg.pretrained and has_release_autoencoder(cfg.pretrained):
        return ReleaseAECodec(cfg.pretrained)
    return build_codec(cfg)


class OfficialModel(DenoiserBase):
    """The release network with the interface of `ModalityForcingModel`.

    Only `dit` is a registered child, so `state_dict()` is exactly the release file's key set
    (`dit.*`); the frozen codec and text encoder live outside it and follow the DiT's device.

    Args:
        cfg: a `ModelConfig` with `family="official"` (see `variant_model_config`).
        meta: build the DiT on the meta device (for loading 12B weights with `assign=True`).
    """

    def __init__(self, cfg: ModelConfig, meta: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self._codec = [_build_codec(cfg.codec)]
        self._text: list[TextEncoder] = [_build_text(cfg.text)]
        f = self.codec.downsample
        self.dit_config = FluxRGBDConfig(
            in_channels=self.codec.channels * cfg.patch_size**2,
            depth_channels=(cfg.patch_size * f) ** 2, context_in_dim=cfg.text.dim,
            hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, depth_double=cfg.num_layers,
            depth_single=cfg.num_single_layers, depth_decoder_num_layers=cfg.decoder_layers,
            axes_dim=(cfg.hidden_size // cfg.num_heads // 4,) * 4, theta=cfg.rope_theta,
            mlp_ratio=cfg.mlp_ratio, cross_stream_timestep_mixing=cfg.cross_modality_time,
        )  # fmt: skip
        with torch.device("meta") if meta else contextlib.nullcontext():
            self.dit = FluxRGBDDiT(self.dit_config)

    @property
    def text_encoder(self) -> TextEncoder:
        return self._text[0]

    def untracked_modules(self) -> list[nn.Module]:
        return [*self._codec, *self._text]

    def _apply(self, fn: Any, recurse: bool = True) -> OfficialModel:
        """`.to(device)` also moves the frozen codec and text encoder, but only their device:
        they keep their own dtypes when the DiT is cast to bf16 (and nothing moves to meta)."""
        nn.Module._apply(self, fn, recurse)
        device = self.dit.img_in.weight.device
        if device.type != "meta":
            for module in self.untracked_modules():
                module.to(device)
        return self

    def predict(
        self, xt: dict[str, torch.Tensor], t: dict[str, torch.Tensor], text: TextTokens
    ) -> dict[str, torch.Tensor]:
        """Image velocity (body dtype) and depth x0 (fp32 head); both streams are required and
        the text mask is ignored (the release attends to padding)."""
        if set(xt) != {IMAGE, DEPTH}:
            raise ValueError(
                f"the official model needs both 'image' and 'depth' (got {sorted(xt)}): the "
                "release has no image-only (marginal) mode"
            )
        image, depth = xt[IMAGE], xt[DEPTH]
        p_img, p_dep = self.patch_size(IMAGE), self.patch_size(DEPTH)
        b, c, h, w = image.shape
        ids = position_ids(b, h // p_img, w // p_img, text.tokens.shape[1], image.device)
        # The release sets every dtype itself (bf16 body, fp32 depth head): no autocast inside.
        with torch.autocast(image.device.type, enabled=False):
            rgb, dep = self.dit(
                patchify(image, p_img), patchify(depth, p_dep), text.tokens,
                t[IMAGE], t[DEPTH], *ids,
            )  # fmt: skip
        return {
            IMAGE: unpatchify(rgb, c, h, w, p_img),
            DEPTH: unpatchify(dep, 1, depth.shape[2], depth.shape[3], p_dep),
        }

    def apply_dtype_policy(
        self, body: torch.dtype = torch.bfloat16, head: torch.dtype = torch.float32
    ) -> OfficialModel:
        self.dit.apply_dtype_policy(body, head)
        return self


def read_variant(path: str | Path) -> str:
    """The `"variant"` of a release directory's config.json (the only key the release reads)."""
    file = Path(path) / RELEASE_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"'{path}' is not a release directory (no {RELEASE_CONFIG})")
    data = json.loads(file.read_text())
    if not isinstance(data, dict) or "variant" not in data:
        raise ValueError(f'{file} has no "variant" key')
    get_variant(data["variant"])  # unknown names raise with the choices
    return data["variant"]


def load_release_weights(
    dit: FluxRGBDDiT, file: str | Path, dtype: torch.dtype, device: torch.device | str
) -> list[str]:
    """Assign `dit.*` tensors of a release file onto a meta-device `dit`, cast to `dtype`.

    As the release: keys without the `dit.` prefix or unknown to the model are ignored
    (returned), and any parameter the file does not supply is an error.
    """
    expected = dict(dit.named_parameters())
    state, ignored = {}, []
    with safe_open(str(file), framework="pt", device="cpu") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            name = key[4:] if key.startswith("dit.") else None
            if name not in expected:
                ignored.append(key)
                continue
            tensor = f.get_tensor(key)
            if tensor.shape != expected[name].shape:
                raise ValueError(
                    f"'{key}' has shape {tuple(tensor.shape)}, the variant expects "
                    f"{tuple(expected[name].shape)}"
                )
            state[name] = tensor.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"checkpoint is missing {len(missing)} tensors: {['dit.' + k for k in missing[:5]]}"
        )
    dit.load_state_dict(state, strict=True, assign=True)
    return ignored


def load_official(
    path: str | Path,
    device: str | torch.device | None = None,
    text_encoder: str | Path | TextConfig | None = None,
    vae: str | Path | CodecConfig | None = None,
    dtype: torch.dtype = torch.bfloat16,
    head_dtype: torch.dtype = torch.float32,
    resolution: tuple[int, int] = (512, 512),
) -> OfficialModel:
    """Load a release directory as an `OfficialModel` (eval mode, release dtypes).

    Args:
        path: directory with `config.json` ({"variant": ...}) and `model.safetensors`.
        device: where the DiT, codec and text encoder go (default: CUDA if available).
        text_encoder: a local Qwen3 directory (the release uses Qwen/Qwen3-8B) run with the
            release recipe, or a full `TextConfig` (its hidden-state width must equal the
            variant's `context_in_dim`).
        vae: a diffusers `AutoencoderKLFlux2` directory or a `CodecConfig`; default: the
            release's own `ae_encoder/ae_decoder.safetensors` in `path`.
        dtype, head_dtype: body and depth-head dtypes (bf16 / fp32 as in the release).
        resolution: working (H, W); 512 for the default checkpoint (the token grid is fixed by
            training, not by the weights).
    """
    path = Path(path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    variant = get_variant(read_variant(path))
    if not (path / RELEASE_WEIGHTS).is_file():
        raise FileNotFoundError(f"release directory '{path}' has no {RELEASE_WEIGHTS}")
    if text_encoder is None:
        raise ValueError("the official format needs `text_encoder`: a local Qwen3-8B directory")
    text = text_encoder if isinstance(text_encoder, TextConfig) else release_text_config(
        text_encoder, variant.context_in_dim)  # fmt: skip
    if vae is None:
        if not has_release_autoencoder(path):
            raise ValueError(f"'{path}' has no ae_encoder/ae_decoder.safetensors; pass `vae`")
        vae = str(path)
    codec = vae if isinstance(vae, CodecConfig) else CodecConfig(kind="vae", pretrained=str(vae))
    model = OfficialModel(variant_model_config(read_variant(path), text, codec, resolution), True)
    if model.dit_config != variant:
        raise ValueError(
            f"text encoder / codec do not fit variant {read_variant(path)}: they give "
            f"{model.dit_config}, the variant is {variant}"
        )
    ignored = load_release_weights(model.dit, path / RELEASE_WEIGHTS, dtype, device)
    if ignored:
        warnings.warn(f"ignored {len(ignored)} unused tensors: {ignored[:5]}", stacklevel=2)
    model.apply_dtype_policy(dtype, head_dtype)
    return model.to(device).eval()
