"""Image codecs: pixel identity, diffusers VAEs loaded from a local directory (tiny, random)."""

from __future__ import annotations

import json

import pytest
import torch

from modality_forcing.config import CodecConfig
from modality_forcing.model.codecs import PixelCodec, VAECodec, build_codec

diffusers = pytest.importorskip("diffusers")

_TINY = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
)


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**_TINY, scaling_factor=0.5, shift_factor=0.1)
    root = tmp_path_factory.mktemp("sd")
    vae.save_pretrained(root / "vae")  # a pipeline-style layout: <root>/vae
    return root


@pytest.fixture(scope="module")
def flux2_dir(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLFlux2(**_TINY, patch_size=(2, 2))
    vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, 16))
    vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, 16))
    path = tmp_path_factory.mktemp("flux2")
    vae.save_pretrained(path)
    return path


def _images(b: int = 2, h: int = 16, w: int = 24) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_pixel_round_trip_exact() -> None:
    codec = build_codec(CodecConfig())
    assert isinstance(codec, PixelCodec)
    assert (codec.channels, codec.downsample) == (3, 1)
    x = _images()
    assert torch.equal(codec.decode(codec.encode(x)), x)


def test_unknown_codec_and_missing_pretrained() -> None:
    with pytest.raises(
        ValueError, match=r"unknown codec 'jpeg'; choose from \['latent', 'pixel', 'vae'\]"
    ):
        build_codec(CodecConfig(kind="jpeg"))
    with pytest.raises(ValueError, match="pretrained"):
        build_codec(CodecConfig(kind="vae"))


def test_vae_missing_dir_and_unsupported_class(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VAECodec(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    with pytest.raises(ValueError, match="unsupported VAE class 'AutoencoderTiny'"):
        VAECodec(tmp_path)


def test_kl_codec_shapes_scaling_and_frozen(kl_dir) -> None:
    codec = build_codec(CodecConfig(kind="vae", pretrained=str(kl_dir), subfolder="vae"))
    assert isinstance(codec, VAECodec)
    assert (codec.channels, codec.downsample) == (4, 2)
    assert all(not p.requires_grad for p in codec.parameters())
    codec.train()
    assert not codec.vae.training  # stays frozen in eval mode

    x = _images()
    z = codec.encode(x)
    assert z.shape == (2, 4, 8, 12)
    assert torch.equal(z, codec.encode(x))  # deterministic: posterior mode, no sampling
    mode = codec.vae.encode(x).latent_dist.mode()
    torch.testing.assert_close(z, (mode - 0.1) * 0.5)  # diffusers' (z - shift) * scale
    y = codec.decode(z)
    assert y.shape == x.shape
    torch.testing.assert_close(y, codec.vae.decode(mode).sample)  # decode inverts the scaling
    with pytest.raises(ValueError, match="divisible"):
        codec.encode(_images(h=15))


def test_flux2_codec_patchify_and_batchnorm(flux2_dir) -> None:
    codec = VAECodec(flux2_dir)
    assert (codec.channels, codec.downsample) == (16, 4)
    assert all(not p.requires_grad for p in codec.parameters())
    x = _images()
    z = codec.encode(x)
    assert z.shape == (2, 16, 4, 6)
    assert torch.equal(z, codec.encode(x))

    # Same normalisation as diffusers' Flux2Pipeline._encode_vae_image.
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

    vae = codec.vae
    ref = Flux2Pipeline._patchify_latents(vae.encode(x).latent_dist.mode())
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    torch.testing.assert_close(z, (ref - mean) / std)
    # The documented channel order `c * 4 + i * 2 + j` is pixel_unshuffle's.
    mode = vae.encode(x).latent_dist.mode()
    torch.testing.assert_close(ref, torch.nn.functional.pixel_unshuffle(mode, 2))

    # And decode as the pipeline's output path does.
    expected = vae.decode(Flux2Pipeline._unpatchify_latents(z * std + mean)).sample
    torch.testing.assert_close(codec.decode(z), expected)
    assert codec.decode(z).shape == x.shape


def test_model_with_a_vae_moves_and_encodes_through_it(kl_dir) -> None:
    """The frozen VAE stays out of the state dict but follows `.to()` and sets the grid."""
    import dataclasses

    from modality_forcing.config import CodecConfig, model_preset
    from modality_forcing.model.denoiser import ModalityForcingModel

    cfg = dataclasses.replace(
        model_preset("tiny"),
        patch_size=1,
        codec=CodecConfig(kind="vae", pretrained=str(kl_dir), subfolder="vae"),
    )
    model = ModalityForcingModel(cfg)
    assert not any(k.startswith("_codec") for k in model.state_dict())
    f = model.codec.downsample
    assert model.grid_shape("image", 16, 24) == (model.codec.channels, 16 // f, 24 // f)
    assert model.grid_shape("depth", 16, 24) == (1, 16, 24)
    model.to(torch.float64)
    assert next(model.codec.parameters()).dtype == torch.float64
    model.to(torch.float32)
    batch = {
        "image": _images(),
        "depth": torch.rand(2, 1, 16, 24) + 0.5,
        "valid_mask": torch.ones(2, 1, 16, 24, dtype=torch.bool),
    }
    x0, _ = model.encode_batch(batch)
    assert x0["image"].shape == (2, model.codec.channels, 16 // f, 24 // f)
    out = model(x0, {"image": torch.rand(2), "depth": torch.rand(2)}, ["a", "b"])
    assert out["depth"].shape == (2, 1, 16, 24)
