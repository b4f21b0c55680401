"""The release's split FLUX.2 autoencoder files (`ae_encoder.safetensors`, `ae_decoder.safetensors`)
mapped onto diffusers' `AutoencoderKLFlux2`, and wrapped as our `VAECodec`.

The reference (section 4.2) names the modules in the original (LDM-style) layout: `conv_in`,
`down.{l}.block.{b}`, `down.{l}.downsample.conv`, `mid.block_1/attn_1/block_2`, `norm_out`,
`conv_out`, `quant_conv` / `post_quant_conv`, `up.{l}.block.{b}`, `up.{l}.upsample.conv`, `bn.*`.
It does not state each file's key prefix, the names inside ResnetBlock / AttnBlock, nor which file
holds `bn`, so the mapping below accepts an optional `encoder.` / `decoder.` prefix, `bn.*` in
either file, and assumes the usual LDM leaf names (`norm1/conv1/norm2/conv2/nin_shortcut`,
`norm/q/k/v/proj_out`). Anything else fails loudly, listing the keys it could not place.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ...model.codecs import ImageCodec, VAECodec

AE_ENCODER, AE_DECODER = "ae_encoder.safetensors", "ae_decoder.safetensors"
_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
           "nin_shortcut": "conv_shortcut"}  # fmt: skip
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_RESNET_INV = {v: k for k, v in _RESNET.items()}
_ATTN_INV = {v: k for k, v in _ATTN.items()}


def _mid(part: str, rest: list[str], leaf: str) -> str | None:
    """`mid.block_1|attn_1|block_2.<name>` -> diffusers `mid_block.*`."""
    blocks = {"block_1": "resnets.0", "block_2": "resnets.1"}
    if len(rest) == 2 and rest[0] in blocks and rest[1] in _RESNET:
        return f"{part}.mid_block.{blocks[rest[0]]}.{_RESNET[rest[1]]}.{leaf}"
    if len(rest) == 2 and rest[0] == "attn_1" and rest[1] in _ATTN:
        return f"{part}.mid_block.attentions.0.{_ATTN[rest[1]]}.{leaf}"
    return None


def release_to_diffusers_key(key: str, part: str, num_levels: int) -> str | None:
    """Diffusers name of a release AE key (`part` = "encoder" | "decoder"), None if unknown."""
    if key.startswith(f"{part}."):
        key = key[len(part) + 1 :]
    if key.startswith(("bn.", "quant_conv.", "post_quant_conv.")):
        return key
    head, _, leaf = key.rpartition(".")
    p = head.split(".")
    if p in (["conv_in"], ["conv_out"]):
        return f"{part}.{head}.{leaf}"
    if p == ["norm_out"]:
        return f"{part}.conv_norm_out.{leaf}"
    if p[0] == "mid":
        return _mid(part, p[1:], leaf)
    stage = {"encoder": ("down", "down_blocks", "downsample", "downsamplers"),
             "decoder": ("up", "up_blocks", "upsample", "upsamplers")}[part]  # fmt: skip
    if p[0] != stage[0] or len(p) < 3 or not p[1].isdigit():
        return None
    # Original `up` levels count from the highest resolution; diffusers' up_blocks from the lowest.
    level = int(p[1]) if part == "encoder" else num_levels - 1 - int(p[1])
    if len(p) == 5 and p[2] == "block" and p[4] in _RESNET:
        return f"{part}.{stage[1]}.{level}.resnets.{p[3]}.{_RESNET[p[4]]}.{leaf}"
    if p[2:] == [stage[2], "conv"]:
        return f"{part}.{stage[1]}.{level}.{stage[3]}.0.conv.{leaf}"
    return None


def diffusers_to_release_key(key: str, num_levels: int) -> tuple[str, str]:
    """Inverse of `release_to_diffusers_key` (unprefixed): diffusers key -> (file part, key)."""
    if key.startswith("bn."):
        return "encoder", key
    if key.startswith("quant_conv."):
        return "encoder", key
    if key.startswith("post_quant_conv."):
        return "decoder", key
    part, rest = key.split(".", 1)
    head, _, leaf = rest.rpartition(".")
    if head in ("conv_in", "conv_out"):
        return part, rest
    if head == "conv_norm_out":
        return part, f"norm_out.{leaf}"
    m = re.fullmatch(r"mid_block\.resnets\.(\d)\.(\w+)", head)
    if m:
        return part, f"mid.block_{int(m[1]) + 1}.{_RESNET_INV[m[2]]}.{leaf}"
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", head)
    if m:
        return part, f"mid.attn_1.{_ATTN_INV[m[1]]}.{leaf}"
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets\.(\d+)\.(\w+)|\w+samplers\.0\.conv)", head)
    if m is None:
        raise ValueError(f"no release name for diffusers AE key '{key}'")
    level = int(m[2]) if m[1] == "down" else num_levels - 1 - int(m[2])
    if m[4] is not None:
        return part, f"{m[1]}.{level}.block.{m[4]}.{_RESNET_INV[m[5]]}.{leaf}"
    return part, f"{m[1]}.{level}.{m[1]}sample.conv.{leaf}"


def _is_attn_linear(diffusers_key: str) -> bool:
    return ".attentions.0.to_" in diffusers_key and diffusers_key.endswith(".weight")


def _flux2_config(sd: dict[str, torch.Tensor], norm_num_groups: int) -> dict:
    """AutoencoderKLFlux2 arguments read off the (release-named) encoder shapes."""
    levels = sorted({int(k.split(".")[1]) for k in sd if k.startswith("down.")})
    blocks = {int(k.split(".")[3]) for k in sd if k.startswith("down.0.block.")}
    return dict(
        block_out_channels=tuple(sd[f"down.{lv}.block.0.conv1.weight"].shape[0] for lv in levels),
        down_block_types=("DownEncoderBlock2D",) * len(levels),
        up_block_types=("UpDecoderBlock2D",) * len(levels),
        layers_per_block=len(blocks),
        latent_channels=sd["conv_out.weight"].shape[0] // 2,
        norm_num_groups=norm_num_groups,
        batch_norm_eps=1e-4,  # reference 4.2: BatchNorm2d(128, eps=1e-4, affine=False)
        patch_size=(2, 2),
    )


def _strip(sd: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    return {k[len(part) + 1 :] if k.startswith(f"{part}.") else k: v for k, v in sd.items()}


def load_release_autoencoder(directory: str | Path, norm_num_groups: int = 32) -> torch.nn.Module:
    """Build a diffusers `AutoencoderKLFlux2` from the release's two AE files (strict, fp32)."""
    import diffusers

    directory = Path(directory)
    files = {part: directory / name for part, name in (("encoder", AE_ENCODER),
                                                       ("decoder", AE_DECODER))}  # fmt: skip
    for file in files.values():
        if not file.is_file():
            raise FileNotFoundError(f"'{directory}' has no {file.name}")
    parts = {part: _strip(load_file(str(f)), part) for part, f in files.items()}
    config = _flux2_config(parts["encoder"], norm_num_groups)
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLFlux2(**config)
    expected = vae.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unplaced = []
    num_levels = len(config["block_out_channels"])
    for part, sd in parts.items():
        for key, value in sd.items():
            name = release_to_diffusers_key(key, part, num_levels)
            if name is None or name not in expected:
                unplaced.append(f"{part}:{key}")
                continue
            if _is_attn_linear(name) and value.dim() == 4:
                value = value[:, :, 0, 0]  # 1x1 conv -> Linear
            mapped[name] = value.float() if value.is_floating_point() else value
    missing = sorted(set(expected) - set(mapped))
    if unplaced or missing:
        raise ValueError(
            f"the AE files in '{directory}' do not follow the expected FLUX.2 layout: "
            f"{len(unplaced)} keys not placed {unplaced[:5]}, {len(missing)} diffusers tensors "
            f"missing {missing[:5]}; pass a diffusers AutoencoderKLFlux2 directory instead"
        )
    vae.load_state_dict(mapped, strict=True, assign=True)
    return vae


def diffusers_to_release_files(vae: torch.nn.Module, directory: str | Path) -> None:
    """Write a diffusers `AutoencoderKLFlux2` as release-named `ae_encoder/decoder.safetensors`."""
    from safetensors.torch import save_file

    num_levels = len(vae.config.block_out_channels)
    parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    for key, value in vae.state_dict().items():
        part, name = diffusers_to_release_key(key, num_levels)
        if _is_attn_linear(key):
            value = value[:, :, None, None]  # Linear -> 1x1 conv, as in the original AttnBlock
        parts[part][name] = value.detach().contiguous().cpu()
    save_file(parts["encoder"], str(Path(directory) / AE_ENCODER))
    save_file(parts["decoder"], str(Path(directory) / AE_DECODER))


def has_release_autoencoder(directory: str | Path) -> bool:
    return (Path(directory) / AE_ENCODER).is_file() and (Path(directory) / AE_DECODER).is_file()


class ReleaseAECodec(VAECodec):
    """`VAECodec` (FLUX.2 normalisation: 2x2 patchify + batch-norm stats) over the release AE."""

    def __init__(self, directory: str | Path, norm_num_groups: int = 32) -> None:
        ImageCodec.__init__(self)  # VAECodec.__init__ reads a diffusers directory; set it up here
        self.vae = load_release_autoencoder(directory, norm_num_groups).requires_grad_(False)
        self.vae.eval()
        self.kind = "AutoencoderKLFlux2"
        cfg = self.vae.config
        self.patch = tuple(int(p) for p in cfg.patch_size)
        self.channels = cfg.latent_channels * self.patch[0] * self.patch[1]
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1) * self.patch[0]
