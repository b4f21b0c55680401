"""Parameters and training memory of the adapted backbones at their real sizes, from configs alone.

Every model is built on the meta device (nothing is allocated, nothing downloaded): the published
transformer configs below, the depth stream exactly as `BackboneDiT` adds it, and the frozen text
encoders / VAE from their transformers / diffusers configs. Memory per GPU under FSDP2 (N GPUs,
`MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` as `distributed.wrap_model` sets it):

    states   = (16 P_train + 2 P_frozen) / N      fp32 weight + fp32 grad + Adam m, v (4+4+4+4 B)
                                                  per trainable parameter; bf16 frozen trunk (LoRA)
    ema      = 4 P_train / N                      fp32 EMA of the trainable weights (sharded)
    working  = 4 x 2 B x P_unit                   bf16 all-gather of the current + prefetched
                                                  block, and its unsharded grads (P_unit = largest)
    acts     = b x sum over blocks of S_block x a x 2 B, without checkpointing;
               b x (sum over blocks of S_block x D + S_max x a) x 2 B with it (block inputs kept,
               one block recomputed at a time)
    frozen encoders + VAE: bf16, replicated on every GPU (0 if embeddings are precomputed)

with a = values saved for backward per token per block (flash attention: no S^2 term): 13 D + k M
for a dual-stream block and 10 D + (k + 1) M for a single-stream block, k = 2 for a GELU MLP and 3
for SwiGLU (M = MLP width). S_block = text + image + depth tokens in the trunk, depth tokens in the
decoder. It is an estimate (+-20%): allocator fragmentation and CUDA context (~1-2 GiB) come on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import BackboneConfig
from ..model.mmdit import count_parameters
from .base import lora_target_names
from .common import BackboneDiT

GiB = 1024**3

# Published diffusers transformer configs (config.json of each model's `transformer/` folder).
FLUX2_KLEIN_9B = dict(
    patch_size=1, in_channels=128, num_layers=8, num_single_layers=24, attention_head_dim=128,
    num_attention_heads=32, joint_attention_dim=12288, timestep_guidance_channels=256,
    mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=False,
)  # fmt: skip
FLUX2_DEV = dict(
    patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
    num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256,
    mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=True,
)  # fmt: skip
FLUX1_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
SD35_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)  # fmt: skip
SD35_LARGE = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm",
)  # fmt: skip

# Frozen parts: (library, class, config class, config). Text parts only for Mistral 3.
CLIP_L = ("transformers", "CLIPTextModel", "CLIPTextConfig", dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77))  # fmt: skip
CLIP_G = ("transformers", "CLIPTextModelWithProjection", "CLIPTextConfig", dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
    num_attention_heads=20, max_position_embeddings=77, projection_dim=1280))  # fmt: skip
T5_XXL = ("transformers", "T5EncoderModel", "T5Config", dict(
    vocab_size=32128, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
    feed_forward_proj="gated-gelu"))  # fmt: skip
QWEN3_8B = ("transformers", "Qwen3ForCausalLM", "Qwen3Config", dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    tie_word_embeddings=False))  # fmt: skip
MISTRAL_24B = ("transformers", "MistralForCausalLM", "MistralConfig", dict(
    vocab_size=131072, hidden_size=5120, intermediate_size=32768, num_hidden_layers=40,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128))  # fmt: skip
VAE_16 = ("diffusers", "AutoencoderKL", None, dict(
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16))  # fmt: skip
VAE_FLUX2 = ("diffusers", "AutoencoderKLFlux2", None, dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=32))  # fmt: skip


@dataclass(frozen=True)
class RealBackbone:
    """A published backbone: family, transformer config, frozen parts, text tokens it uses."""

    family: str
    transformer: dict[str, Any]
    frozen: tuple[tuple[str, str, str | None, dict[str, Any]], ...]
    text_tokens: int
    latent_factor: int = 16  # image pixels per token side (VAE x patch)


REAL_BACKBONES: dict[str, RealBackbone] = {
    "FLUX.2 [klein] 9B": RealBackbone("flux2", FLUX2_KLEIN_9B, (QWEN3_8B, VAE_FLUX2), 512),
    "FLUX.2 [dev]": RealBackbone("flux2", FLUX2_DEV, (MISTRAL_24B, VAE_FLUX2), 512),
    "FLUX.1 [dev]": RealBackbone("flux", FLUX1_DEV, (CLIP_L, T5_XXL, VAE_16), 512),
    "SD3.5 medium": RealBackbone("sd3", SD35_MEDIUM, (CLIP_L, CLIP_G, T5_XXL, VAE_16), 77 + 256),
    "SD3.5 large": RealBackbone("sd3", SD35_LARGE, (CLIP_L, CLIP_G, T5_XXL, VAE_16), 77 + 256),
}
TRANSFORMERS = {"flux2": "Flux2Transformer2DModel", "flux": "FluxTransformer2DModel",
                "sd3": "SD3Transformer2DModel"}  # fmt: skip


def _dit_class(family: str) -> type[BackboneDiT]:
    from .flux import FluxDiT
    from .flux2 import Flux2DiT
    from .sd3 import SD3DiT

    return {"flux2": Flux2DiT, "flux": FluxDiT, "sd3": SD3DiT}[family]


def _frozen_params(spec: tuple[str, str, str | None, dict[str, Any]]) -> int:
    import diffusers
    import transformers

    library, name, config_name, config = spec
    with torch.device("meta"):
        if library == "transformers":
            model = getattr(transformers, name)(getattr(transformers, config_name)(**config))
        else:
            model = getattr(diffusers, name)(**config)
    return count_parameters(model)


def build_meta(spec: RealBackbone, depth_weights: str = "copy",
               decoder_layers: int = 2) -> tuple[nn.Module, BackboneDiT]:  # fmt: skip
    """(original transformer, adapted DiT) on the meta device."""
    import diffusers

    cls = getattr(diffusers, TRANSFORMERS[spec.family])
    with torch.device("meta"):
        original = cls(**spec.transformer)
        bcfg = BackboneConfig(depth_weights=depth_weights, depth_decoder_layers=decoder_layers)
        dit = _dit_class(spec.family)(cls(**spec.transformer), bcfg, spec.latent_factor**2)
    return original, dit


def lora_parameters(dit: BackboneDiT, rank: int) -> int:
    """r (in + out) per adapted linear (`lora_target_names`)."""
    modules = dict(dit.transformer.named_modules())
    return sum(rank * (modules[n].in_features + modules[n].out_features)
               for n in lora_target_names(dit.transformer))  # fmt: skip


def _activation_values(single: bool, d: int, mlp: int, swiglu: bool) -> int:
    """Values saved for backward per token by one block (see the module docstring)."""
    k = 3 if swiglu else 2
    return 10 * d + (k + 1) * mlp if single else 13 * d + k * mlp


@dataclass
class Footprint:
    """What one adapted backbone holds and computes, for the memory formula."""

    trunk: int  # original transformer parameters
    added: int  # parameters the depth stream adds
    largest_unit: int  # parameters of the largest FSDP unit (block)
    frozen_extra: int  # text encoders + VAE
    act_values: int  # sum over blocks of tokens x saved values per token (one sample)
    act_ckpt_values: int  # the same with activation checkpointing
    tokens: tuple[int, int]  # (text, image) tokens; depth = image
    lora: int  # LoRA parameters at the requested rank


def footprint(spec: RealBackbone, resolution: tuple[int, int] = (1024, 1024),
              depth_weights: str = "copy", decoder_layers: int = 2,
              lora_rank: int = 64) -> Footprint:  # fmt: skip
    """Parameters and activation counts of an adapted real backbone (meta device)."""
    original, dit = build_meta(spec, depth_weights, decoder_layers)
    d = dit.hidden_size
    ratio = dit.mlp_ratio_of(dit.transformer.config)
    swiglu = spec.family == "flux2"
    n_img = (resolution[0] // spec.latent_factor) * (resolution[1] // spec.latent_factor)
    seq = spec.text_tokens + 2 * n_img
    per_block = [(seq, _activation_values(False, d, int(d * ratio), swiglu), b)
                 for b in dit.joint_blocks]  # fmt: skip
    per_block += [(seq, _activation_values(True, d, int(d * ratio), swiglu), b)
                  for b in dit.single_blocks]  # fmt: skip
    per_block += [(n_img, _activation_values(True, d, int(d * ratio), False), b)
                  for b in dit.decoders["depth"]]  # fmt: skip
    acts = sum(n * a for n, a, _ in per_block)
    ckpt = sum(n * d for n, _, _ in per_block) + max(n * a for n, a, _ in per_block)
    return Footprint(
        trunk=count_parameters(original), added=count_parameters(dit) - count_parameters(original),
        largest_unit=max(count_parameters(b) for _, _, b in per_block),
        frozen_extra=sum(_frozen_params(f) for f in spec.frozen), act_values=acts,
        act_ckpt_values=ckpt, tokens=(spec.text_tokens, n_img),
        lora=lora_parameters(dit, lora_rank),
    )  # fmt: skip


def training_gib(fp: Footprint, gpus: int, lora: int | None, checkpointing: bool,
                 micro_batch: int = 1) -> float:  # fmt: skip
    """GiB per GPU by the module docstring's formula; `lora` = LoRA parameters (None: full)."""
    train = fp.trunk + fp.added if lora is None else lora + fp.added
    frozen = 0 if lora is None else fp.trunk
    states = (16 * train + 2 * frozen) / gpus + 4 * train / gpus
    working = 4 * 2 * fp.largest_unit
    acts = 2 * micro_batch * (fp.act_ckpt_values if checkpointing else fp.act_values)
    return (states + working + acts + 2 * fp.frozen_extra) / GiB


def memory_table(gpus: int = 8, resolution: tuple[int, int] = (1024, 1024), lora_rank: int = 64,
                 micro_batch: int = 1) -> str:  # fmt: skip
    """Markdown tables: parameters added by the depth stream, and training GiB per GPU."""
    params = [
        f"| backbone | trunk | + depth (`copy`) | + depth (`shared`) | LoRA r={lora_rank} "
        "| text enc. + VAE | tokens text + image + depth |",
        "|---|---|---|---|---|---|---|",
    ]
    mem = [
        f"| backbone | full FT | full FT + AC | LoRA r={lora_rank} | LoRA + AC "
        "| LoRA + AC, `shared` |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in REAL_BACKBONES.items():
        fp = footprint(spec, resolution, lora_rank=lora_rank)
        shared = footprint(spec, resolution, depth_weights="shared", lora_rank=lora_rank)
        lora = fp.lora
        text, img = fp.tokens
        params.append(
            f"| {name} | {fp.trunk / 1e9:.2f}B | {fp.added / 1e9:.2f}B | {shared.added / 1e9:.2f}B "
            f"| {lora / 1e6:.0f}M | {fp.frozen_extra / 1e9:.2f}B | {text} + {img} + {img} |"
        )
        cells = [training_gib(fp, gpus, r, ac, micro_batch) for r in (None, lora)
                 for ac in (False, True)]  # fmt: skip
        cells.append(training_gib(shared, gpus, shared.lora, True, micro_batch))
        mem.append(f"| {name} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    head = (f"Training memory per GPU (GiB), FSDP2 over {gpus} GPUs, micro-batch {micro_batch}, "
            f"{resolution[0]}x{resolution[1]}, bf16 compute, AdamW + EMA, frozen encoders "
            "resident, depth weights `copy` unless noted (formula: backbones/memory.py):"
            )  # fmt: skip
    return "\n".join(params) + "\n\n" + head + "\n\n" + "\n".join(mem)
