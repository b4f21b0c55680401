"""The official release format (`--format official`): names/shapes from the reference tables, a
tiny random checkpoint written with the published names, loading, dtypes, all three modes, the
release AE file layout and the release's schedule numbers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from modality_forcing.backbones.official.ae import (
    AE_DECODER,
    AE_ENCODER,
    ReleaseAECodec,
    diffusers_to_release_files,
)
from modality_forcing.backbones.official.blocks import rope_tables, timestep_embedding
from modality_forcing.backbones.official.dit import (
    VARIANTS,
    FluxRGBDConfig,
    FluxRGBDDiT,
    position_ids,
    tiny_config,
)
from modality_forcing.backbones.official.model import OfficialModel, load_official
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.model.codecs import VAECodec
from modality_forcing.sampling.config import FORMAT_DEFAULTS
from modality_forcing.sampling.schedules import scheduling_matrix

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def reference_shapes(cfg: FluxRGBDConfig) -> dict[str, tuple[int, ...]]:
    """The parameter table of reference section 2b (names relative to `dit.`), in config terms."""
    h, d, m = (
        cfg.hidden_size,
        cfg.hidden_size // cfg.num_heads,
        int(cfg.hidden_size * cfg.mlp_ratio),
    )
    s = {"img_in.weight": (h, cfg.in_channels), "txt_in.weight": (h, cfg.context_in_dim),
         "depth_in.weight": (h, cfg.depth_channels)}  # fmt: skip
    embedders = ["time_in", "time_in_depth"]
    if cfg.cross_stream_timestep_mixing:
        embedders += ["time_in_depth_to_img", "time_in_rgb_to_depth"]
        s["cross_alpha_img"] = s["cross_alpha_depth"] = (1,)
    for e in embedders:
        s[f"{e}.in_layer.weight"], s[f"{e}.out_layer.weight"] = (h, 256), (h, h)
    for stream in ("img", "txt", "depth"):
        s[f"double_stream_modulation_{stream}.lin.weight"] = (6 * h, h)
    for name in ("single_stream_modulation", "single_stream_modulation_depth",
                 "depth_decoder_modulation"):  # fmt: skip
        s[f"{name}.lin.weight"] = (3 * h, h)
    for head, out in (("final_layer", cfg.in_channels), ("depth_final_layer", cfg.depth_channels)):
        s[f"{head}.linear.weight"], s[f"{head}.adaLN_modulation.1.weight"] = (out, h), (2 * h, h)
    for i in range(cfg.depth_double):
        for st in ("img", "txt", "depth"):
            p = f"double_blocks.{i}.{st}"
            s[f"{p}_attn.qkv.weight"], s[f"{p}_attn.proj.weight"] = (3 * h, h), (h, h)
            s[f"{p}_attn.norm.query_norm.scale"] = s[f"{p}_attn.norm.key_norm.scale"] = (d,)
            s[f"{p}_mlp.0.weight"], s[f"{p}_mlp.2.weight"] = (2 * m, h), (h, m)
    singles = [f"single_blocks.{j}" for j in range(cfg.depth_single)]
    for x in singles + [f"depth_decoder_blocks.{k}" for k in range(cfg.depth_decoder_num_layers)]:
        s[f"{x}.linear1.weight"], s[f"{x}.linear2.weight"] = (3 * h + 2 * m, h), (h, h + m)
        s[f"{x}.norm.query_norm.scale"] = s[f"{x}.norm.key_norm.scale"] = (d,)
    return s


def random_release_state(cfg: FluxRGBDConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the published names (`dit.` prefix), stored in bf16 like the release."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in reference_shapes(cfg).items():
        x = torch.randn(shape, generator=g)
        if name.endswith(".scale"):
            x = 1 + 0.1 * x
        elif name.startswith("cross_alpha"):
            x = 0.5 + 0.1 * x
        else:
            x = x / math.sqrt(shape[-1])
        state[f"dit.{name}"] = x.to(torch.bfloat16)
    return state


# ---------------------------------------------------------------------------------------------
# fixtures: tiny Qwen3 (27 layers, hidden 8 -> 3 x 8 = 24 = tiny context_in_dim), tiny FLUX.2 AE
# ---------------------------------------------------------------------------------------------
WORDS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "[UNK]", "user", "assistant", "<think>",
         "</think>", "a", "red", "blue", "sphere", "box"]  # fmt: skip
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant "
    "{% if enable_thinking is defined and not enable_thinking %}<think> </think> {% endif %}"
    "{% endif %}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen3")
    cfg = transformers.Qwen3Config(
        vocab_size=len(WORDS), hidden_size=8, intermediate_size=16, num_hidden_layers=27,
        num_attention_heads=2, num_key_value_heads=1, head_dim=4, max_position_embeddings=512,
    )  # fmt: skip
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(path)
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([w for w in WORDS if w.startswith("<")])
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="<|endoftext|>"
    )
    tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_ae():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLFlux2(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=2,
        norm_num_groups=32, patch_size=(2, 2),
    )  # fmt: skip
    vae.bn.running_mean.copy_(torch.linspace(-0.2, 0.2, 8))
    vae.bn.running_var.copy_(torch.linspace(0.5, 1.5, 8))
    return vae  # 8 latent channels (2 x 2 x 2), downsample 4: in_channels 8, depth patch 4 -> 16


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory, tiny_ae):
    path = tmp_path_factory.mktemp("release")
    (path / "config.json").write_text(json.dumps({"variant": "flux_rgbd_tiny_v2"}))
    save_file(random_release_state(VARIANTS["flux_rgbd_tiny_v2"]), str(path / "model.safetensors"))
    diffusers_to_release_files(tiny_ae, path)
    return path


@pytest.fixture(scope="module")
def model(release_dir, qwen_dir) -> OfficialModel:
    return load_official(release_dir, "cpu", text_encoder=qwen_dir)


# ---------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_matches_reference_tables(variant: str) -> None:
    cfg = VARIANTS[variant]
    with torch.device("meta"):
        dit = FluxRGBDDiT(cfg)
    state = dit.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == reference_shapes(cfg)
    assert not list(dit.buffers()) and not any(k.endswith(".bias") for k in state)
    # 17 top-level + 18 per triple block + 4 per single/decoder block (+ 6 for v2): 273 / 279.
    v2 = cfg.cross_stream_timestep_mixing
    blocks = 18 * cfg.depth_double + 4 * (cfg.depth_single + cfg.depth_decoder_num_layers)
    assert len(state) == 17 + blocks + 6 * v2
    if variant.startswith("flux_rgbd_9b"):
        assert len(state) == (279 if v2 else 273)
        numel = sum(v.numel() for v in state.values())
        assert numel == (11_986_285_570 if v2 else 11_950_633_984)


def test_position_ids_and_rope_axes() -> None:
    img, dep, ctx = position_ids(2, 2, 3, 4)
    assert img.shape == dep.shape == (2, 6, 4) and ctx.shape == (2, 4, 4)
    assert img[0, 4].tolist() == [0, 1, 1, 0] and dep[0, 4].tolist() == [1, 1, 1, 0]
    assert ctx[0, :, 3].tolist() == [0, 1, 2, 3] and ctx[0, :, :3].eq(0).all()
    cos, sin = rope_tables(ctx, (8, 8, 8, 8), 2000.0)  # [B, 1, L, 16]: 4 pairs per axis
    assert sin[0, 0, :, :12].eq(0).all() and cos[0, 0, :, :12].eq(1).all()  # axis 3 only
    torch.testing.assert_close(sin[0, 0, 1, 12:], torch.sin(2000.0 ** (-torch.arange(4) / 4)))


def test_timestep_embedding_rounds_in_bf16() -> None:
    # Reference 3.1: t = 0.97 -> bf16 0.96875 -> x 1000 = 968.75 -> bf16 968; cosine first.
    emb = timestep_embedding(torch.tensor([0.97]).bfloat16())
    freqs = torch.exp(-math.log(10000.0) * torch.arange(128) / 128)
    expected = torch.cat([torch.cos(968.0 * freqs), torch.sin(968.0 * freqs)])
    assert emb.dtype == torch.bfloat16
    torch.testing.assert_close(emb[0], expected.bfloat16())


def test_v2_with_zero_gates_equals_v1() -> None:
    torch.manual_seed(0)
    v1, v2 = FluxRGBDDiT(tiny_config(False)), FluxRGBDDiT(tiny_config(True))
    v2.load_state_dict(v1.state_dict(), strict=False)  # cross_alpha stays 0
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 4, 8, generator=g), torch.randn(1, 4, 16, generator=g),
            torch.randn(1, 5, 24, generator=g), torch.tensor([0.7]), torch.tensor([0.3]),
            *position_ids(1, 2, 2, 5))  # fmt: skip
    for a, b in zip(v1(*args), v2(*args), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        v2.cross_alpha_img.fill_(1.0)
    assert not torch.allclose(v1(*args)[0], v2(*args)[0])


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def test_load_dtype_policy_and_weights(model: OfficialModel, release_dir) -> None:
    assert model.dit_config == VARIANTS["flux_rgbd_tiny_v2"]
    assert model.dit.img_in.weight.dtype == torch.bfloat16
    assert model.dit.final_layer.linear.weight.dtype == torch.bfloat16  # RGB head stays bf16
    assert {p.dtype for p in model.dit.depth_final_layer.parameters()} == {torch.float32}
    file = load_file(str(release_dir / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == set(file)  # the wrapper's state dict is exactly the release key set
    assert all(torch.equal(state[k].float(), file[k].float()) for k in file)
    assert model.text_encoder.max_length == 512 and model.text_encoder.hidden_layers == (9, 18, 27)
    assert model.encode_text(["a red sphere"]).tokens.shape == (1, 512, 24)


def test_missing_tensor_and_bad_inputs(release_dir, qwen_dir, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"variant": "flux_rgbd_tiny_v2"}))
    state = load_file(str(release_dir / "model.safetensors"))
    del state["dit.single_blocks.0.linear2.weight"]
    state["final_layer.linear.weight"] = torch.zeros(1)  # unprefixed: ignored, as the release
    save_file(state, str(tmp_path / "model.safetensors"))
    vae = str(release_dir)
    with pytest.raises(ValueError, match=r"checkpoint is missing 1 tensors: \['dit.single_blo"):
        load_official(tmp_path, "cpu", text_encoder=qwen_dir, vae=vae)
    (tmp_path / "config.json").write_text(json.dumps({"variant": "flux_rgbd_9b_v3"}))
    with pytest.raises(ValueError, match="unknown variant 'flux_rgbd_9b_v3'; choose from"):
        load_official(tmp_path, "cpu", text_encoder=qwen_dir, vae=vae)
    (tmp_path / "config.json").write_text(json.dumps({"variant": "flux_rgbd_tiny_v1"}))
    with pytest.raises(ValueError, match="needs `text_encoder`"):
        load_official(tmp_path, "cpu", vae=vae)


def test_release_ae_layout_and_codec(release_dir, tiny_ae, tmp_path) -> None:
    enc = load_file(str(release_dir / AE_ENCODER))
    dec = load_file(str(release_dir / AE_DECODER))
    # Names of reference 4.2; 1x1-conv attention; `up` level 0 (highest resolution) has no upsample.
    assert {"conv_in.weight", "down.0.downsample.conv.weight", "quant_conv.weight",
            "mid.block_1.conv1.weight", "bn.running_var"} <= set(enc)  # fmt: skip
    assert enc["mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert "up.1.upsample.conv.weight" in dec and not any(k.startswith("up.0.up") for k in dec)
    tiny_ae.save_pretrained(tmp_path / "vae")
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours, ref = ReleaseAECodec(release_dir), VAECodec(tmp_path / "vae")
    assert (ours.channels, ours.downsample) == (8, 4)
    torch.testing.assert_close(ours.encode(image), ref.encode(image))
    dec["up.0.block.0.convX.weight"] = dec.pop("up.0.block.0.conv1.weight")
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(enc, str(bad / AE_ENCODER))
    save_file(dec, str(bad / AE_DECODER))
    with pytest.raises(ValueError, match="do not follow the expected FLUX"):
        ReleaseAECodec(bad)


# ---------------------------------------------------------------------------------------------
# forward, pipeline, CLI
# ---------------------------------------------------------------------------------------------


def test_forward_under_autocast_keeps_release_dtypes(model: OfficialModel) -> None:
    g = torch.Generator().manual_seed(0)
    xt = {IMAGE: torch.randn(1, 8, 4, 4, generator=g), DEPTH: torch.rand(1, 1, 16, 16, generator=g)}
    t = {IMAGE: torch.tensor([0.6]), DEPTH: torch.tensor([0.9])}
    text = model.encode_text(["a red sphere"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xt, t, text)
    assert out[IMAGE].shape == (1, 8, 4, 4) and out[IMAGE].dtype == torch.bfloat16
    assert out[DEPTH].shape == (1, 1, 16, 16) and out[DEPTH].dtype == torch.float32
    # No text mask: the padded positions (all 512 are fed) change the prediction.
    padded = text.tokens.clone()
    padded[:, -1] += 1.0
    other = model(xt, t, type(text)(tokens=padded, mask=text.mask))
    assert not torch.equal(other[DEPTH], out[DEPTH])
    with pytest.raises(ValueError, match="no image-only"):
        model({IMAGE: xt[IMAGE]}, t, text)


def test_pipeline_runs_all_modes(release_dir, qwen_dir) -> None:
    pipe = ModalityForcingPipeline.from_pretrained(
        release_dir, device="cpu", format="official", text_encoder=qwen_dir
    )
    assert pipe.format == "official" and pipe.resolution == (512, 512)

    def run(**kw):
        return pipe(prompt="a red sphere", generator=torch.Generator().manual_seed(0),
                    height=16, width=16, **kw)  # fmt: skip

    joint = run(mode="joint")  # release defaults: 50 steps, CFG 4, log2_alpha 5
    assert joint.image.shape == (1, 16, 16, 3) and joint.depth.shape == (1, 16, 16)
    again = run(mode="joint")
    assert (joint.image == again.image).all() and (joint.depth == again.depth).all()
    pipe.resolution = (16, 16)  # given inputs are letterboxed to the working size
    i2d = run(mode="image_to_depth", image=joint.image[0], num_inference_steps=3)
    assert i2d.depth.shape == (1, 16, 16) and i2d.depth.dtype.name == "float32"
    depth = torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) + 0.5
    d2i = run(mode="depth_to_image", depth=depth, num_inference_steps=3)
    assert d2i.image.shape == (1, 16, 16, 3)
    assert torch.isfinite(torch.as_tensor(i2d.depth)).all()


def test_native_save_round_trip(model: OfficialModel, tmp_path) -> None:
    from modality_forcing.training.checkpoint import load_model

    ModalityForcingPipeline(model, format="official").save_pretrained(tmp_path / "ckpt")
    again = load_model(tmp_path / "ckpt")  # config.yaml with family "official"
    assert isinstance(again, OfficialModel) and again.dit_config == model.dit_config
    state = model.state_dict()
    assert all(torch.equal(v.float(), state[k].float()) for k, v in again.state_dict().items())


def test_cli_sample_official(release_dir, qwen_dir, tmp_path) -> None:
    from modality_forcing.cli import main

    main(["sample", "--ckpt", str(release_dir), "--format", "official", "--text-encoder",
          str(qwen_dir), "--prompt", "a blue box", "--steps", "2", "--size", "16",
          "--out", str(tmp_path)])  # fmt: skip
    meta = json.loads(next(tmp_path.glob("*/metadata.json")).read_text())
    assert meta["steps"] == 2 and meta["log2_alpha"] == 5.0  # official default tilt


def test_release_schedule_numbers() -> None:
    # Reference 5.1/5.2: 50 steps, shift mu 1.1; joint tilt log2_alpha 5 (alpha 32).
    # float32, as the sampler hands t to the network (float64 gives 1 - 1e-16 at t = 1).
    joint = scheduling_matrix("joint", 50, shift_mu=1.1, log2_alpha=5.0).float()
    rgb, dep = joint[:, 0], joint[:, 1]
    assert rgb[0] == 1 and rgb[50] == 0 and dep[50] == 0
    for k, value in ((1, 0.99325), (25, 0.75026), (49, 0.05777)):
        assert rgb[k].item() == pytest.approx(value, abs=1e-5)
    assert dep[25].item() == pytest.approx(0.98970, abs=1e-5)
    assert dep[49].item() == pytest.approx(0.66238, abs=1e-5)
    i2d = scheduling_matrix("image_to_depth", 50, shift_mu=1.1).float()
    assert i2d[:, 0].eq(0).all() and torch.equal(i2d[:, 1], rgb)
    d2i = scheduling_matrix("depth_to_image", 50, shift_mu=1.1).float()
    assert d2i[:, 1].eq(0).all() and torch.equal(d2i[:, 0], rgb)
    official = FORMAT_DEFAULTS["official"]
    joint = official["joint"]
    assert (joint.steps, joint.shift_mu, joint.log2_alpha) == (50, 1.1, 5.0)
    assert joint.guidance == official["depth_to_image"].guidance == 4.0
    assert official["image_to_depth"].guidance == 1.0
