"""Size summaries of the model presets: parameters and training FLOPs per token, from configs alone.

Models are built on the meta device, so even the 3.3B preset costs no memory to describe.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import MODEL_PRESETS, ModelConfig, model_preset
from ..modalities import DEPTH, IMAGE
from .mmdit import MMDiT, count_parameters, flops_per_token

# Latent geometry assumed for VAE presets when no VAE is loaded: a 16-channel, 8x-downsampling
# autoencoder (SD3 / FLUX.1 `AutoencoderKL`).
ASSUMED_VAE = {"channels": 16, "downsample": 8}


def describe(cfg: ModelConfig, resolution: tuple[int, int]) -> dict[str, Any]:
    """Parameters and FLOPs of a config at an image resolution (H, W) in pixels."""
    vae = cfg.codec.kind == "vae"
    channels, down = (ASSUMED_VAE["channels"], ASSUMED_VAE["downsample"]) if vae else (3, 1)
    p = cfg.patch_size
    dims = {IMAGE: channels * p * p, DEPTH: (p * down) ** 2}
    with torch.device("meta"):
        dit = MMDiT(cfg, dims, cfg.text.dim)
    tokens = (resolution[0] // (p * down)) * (resolution[1] // (p * down))
    return {
        "dit_params": count_parameters(dit),
        "tokens_per_modality": tokens,
        "train_gflops_per_token": flops_per_token(cfg, tokens, cfg.text.max_length) / 1e9,
        "hidden_size": cfg.hidden_size,
        "blocks": f"{cfg.num_layers} joint + {cfg.num_single_layers} single "
        f"+ {cfg.decoder_layers}/modality",
        "codec": cfg.codec.kind,
    }


def preset_table(resolutions: dict[str, tuple[int, int]] | None = None) -> str:
    """Markdown table over all presets (CPU presets at 32x32, VAE presets at 512x512)."""
    rows = [
        "| preset | DiT params | blocks | hidden | codec | resolution | tokens/modality "
        "| train GFLOPs/token |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODEL_PRESETS:
        cfg = model_preset(name)
        res = (resolutions or {}).get(name) or ((512, 512) if cfg.codec.kind == "vae" else (32, 32))
        d = describe(cfg, res)
        rows.append(
            f"| {name} | {d['dit_params'] / 1e6:,.1f}M | {d['blocks']} | {d['hidden_size']} "
            f"| {d['codec']} | {res[0]}x{res[1]} | {d['tokens_per_modality']} "
            f"| {d['train_gflops_per_token']:.4g} |"
        )
    return "\n".join(rows)
