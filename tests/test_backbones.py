"""Diffusers backbones + depth stream (FLUX.2, FLUX.1, SD3) on tiny random pipelines built here.

Each pipeline (transformer, VAE, text encoders with WordLevel tokenizers) is a real diffusers
pipeline saved with `save_pretrained` and loaded back by path, as a user's download would be.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from modality_forcing.backbones import build_model  # noqa: E402
from modality_forcing.backbones.base import lora_target_names  # noqa: E402
from modality_forcing.backbones.memory import (  # noqa: E402
    REAL_BACKBONES,
    RealBackbone,
    footprint,
    lora_parameters,
    training_gib,
)
from modality_forcing.config import (  # noqa: E402
    BackboneConfig,
    LossConfig,
    ModelConfig,
    resolve_train_config,
)
from modality_forcing.flow.loss import flow_loss  # noqa: E402
from modality_forcing.flow.path import interpolate  # noqa: E402
from modality_forcing.inference.pipeline import ModalityForcingPipeline  # noqa: E402
from modality_forcing.modalities import DEPTH, IMAGE  # noqa: E402
from modality_forcing.model.mmdit import count_parameters  # noqa: E402
from modality_forcing.training.checkpoint import load_model, write_checkpoint  # noqa: E402

FAMILIES = ["flux2", "flux", "sd3"]
SIZE = 16  # image pixels; the tiny VAEs downsample 2x (FLUX.2: 4x with its 2x2 patchify)
TEXT_LEN = 8
WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "user",
         "assistant", "<think>", "</think>", "a", "red", "blue", "sphere", "box", "on",
         "floor"]  # fmt: skip
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant <think> </think> {% endif %}"
)
CAPTIONS = ["a red sphere on a floor", "a blue box", "", "red"]


def _tokenizer(kind: str) -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([w for w in WORDS if w.startswith(("<", "["))])
    if kind == "clip":  # <s> ... </s>, like CLIP's BOS/EOS
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
        )
    pad = "<|endoftext|>" if kind == "qwen" else "[PAD]"
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token=pad, model_max_length=77
    )
    if kind == "qwen":
        tok.chat_template = CHAT
    return tok


def _clip(projection: bool, hidden: int = 8) -> torch.nn.Module:
    cfg = transformers.CLIPTextConfig(
        vocab_size=len(WORDS), hidden_size=hidden, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden,
        eos_token_id=3, bos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(cfg)


def _t5() -> torch.nn.Module:
    cfg = transformers.T5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=32, num_layers=1,
                                num_heads=2)  # fmt: skip
    return transformers.T5EncoderModel(cfg)


def _vae(flux2: bool) -> torch.nn.Module:
    kw = dict(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8,
              down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2)  # fmt: skip
    if flux2:
        return diffusers.AutoencoderKLFlux2(latent_channels=4, **kw)
    return diffusers.AutoencoderKL(latent_channels=4, **kw)


def _pipeline(family: str) -> diffusers.DiffusionPipeline:
    """A tiny random pipeline of the family (latents: 16 channels at /4 for FLUX.2, 4 at /2)."""
    torch.manual_seed(0)
    sched = diffusers.FlowMatchEulerDiscreteScheduler()
    small = dict(num_layers=1, attention_head_dim=16, num_attention_heads=2)
    if family == "flux2":
        qwen = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
            vocab_size=len(WORDS), hidden_size=8, intermediate_size=16, num_hidden_layers=27,
            num_attention_heads=2, num_key_value_heads=1, head_dim=4, max_position_embeddings=64,
        ))  # fmt: skip
        tr = diffusers.Flux2Transformer2DModel(
            in_channels=16, num_single_layers=1, joint_attention_dim=24,
            timestep_guidance_channels=32, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=False, **small,
        )  # fmt: skip
        return diffusers.Flux2KleinPipeline(sched, _vae(True), qwen, _tokenizer("qwen"), tr)
    if family == "flux":
        tr = diffusers.FluxTransformer2DModel(
            in_channels=16, num_single_layers=1, joint_attention_dim=32, pooled_projection_dim=8,
            guidance_embeds=True, axes_dims_rope=(4, 6, 6), **small,
        )  # fmt: skip
        return diffusers.FluxPipeline(sched, _vae(False), _clip(False), _tokenizer("clip"), _t5(),
                                      _tokenizer("t5"), tr)  # fmt: skip
    tr = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, joint_attention_dim=32,
        caption_projection_dim=32, pooled_projection_dim=16, pos_embed_max_size=8,
        dual_attention_layers=(0,), qk_norm="rms_norm",
        **{**small, "num_layers": 2},
    )  # fmt: skip
    return diffusers.StableDiffusion3Pipeline(
        tr, sched, _vae(False), _clip(True), _tokenizer("clip"), _clip(True), _tokenizer("clip"),
        _t5(), _tokenizer("t5"),
    )  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pipelines")
    paths = {}
    for family in FAMILIES:
        _pipeline(family).save_pretrained(root / family)
        paths[family] = str(root / family)
    return paths


def _cfg(pipelines: dict[str, str], family: str, **backbone: object) -> ModelConfig:
    bcfg = BackboneConfig(pretrained=pipelines[family], text_max_length=TEXT_LEN, **backbone)
    return ModelConfig(family=family, backbone=bcfg, resolution=(SIZE, SIZE))


def _build(pipelines: dict[str, str], family: str, **backbone: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_cfg(pipelines, family, **backbone))


def _batch(model: torch.nn.Module, b: int = 4, seed: int = 0) -> dict[str, dict]:
    g = torch.Generator().manual_seed(seed)
    shapes = {m: (b, *model.grid_shape(m, SIZE, SIZE)) for m in (IMAGE, DEPTH)}
    x0 = {IMAGE: torch.randn(shapes[IMAGE], generator=g),
          DEPTH: 2 * torch.rand(shapes[DEPTH], generator=g)}  # fmt: skip
    noise = {m: torch.randn(s, generator=g) for m, s in shapes.items()}
    t = {m: torch.rand(b, generator=g) for m in shapes}
    xt = {m: interpolate(x0[m], noise[m], t[m]) for m in shapes}
    return {"x0": x0, "noise": noise, "t": t, "xt": xt}


def _original(pipelines: dict[str, str], model: torch.nn.Module) -> torch.nn.Module:
    cls = getattr(diffusers, model.transformer_class)
    return cls.from_pretrained(model.cfg.backbone.pretrained, subfolder="transformer").eval()


# ------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_and_function_preservation(pipelines, family):
    """Image-only calls, and depth at t_depth = 1 (masked out), reproduce the original model."""
    model = _build(pipelines, family).eval()
    original = _original(pipelines, model)
    d = _batch(model)
    text = model.encode_text(CAPTIONS)
    t_depth = torch.tensor([1.0, 1.0, 0.3, 0.0])
    with torch.no_grad():
        want = model.dit.original_forward(original, d["xt"][IMAGE], d["t"][IMAGE], text)
        only = model({IMAGE: d["xt"][IMAGE]}, {IMAGE: d["t"][IMAGE]}, text)
        both = model(d["xt"], {IMAGE: d["t"][IMAGE], DEPTH: t_depth}, text)
    assert set(only) == {IMAGE} and only[IMAGE].shape == d["xt"][IMAGE].shape
    assert both[DEPTH].shape == d["xt"][DEPTH].shape and both[DEPTH].dtype == torch.float32
    torch.testing.assert_close(only[IMAGE], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[IMAGE][:2], want[:2], atol=1e-5, rtol=1e-5)
    assert (both[IMAGE][2:] - want[2:]).abs().amax() > 1e-3  # visible depth does change it
    assert (both[DEPTH] == 0).all()  # zero-initialised depth head
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(d["xt"], d["t"], text)
    assert out[DEPTH].dtype == torch.float32 and torch.isfinite(out[IMAGE]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoders_match_the_diffusers_pipeline(pipelines, family):
    model = _build(pipelines, family)
    pipe = diffusers.DiffusionPipeline.from_pretrained(pipelines[family])
    text = model.encode_text(CAPTIONS[:2])
    with torch.no_grad():
        if family == "flux2":
            want = pipe._get_qwen3_prompt_embeds(pipe.text_encoder, pipe.tokenizer, CAPTIONS[:2],
                                                 max_sequence_length=TEXT_LEN)  # fmt: skip
            pooled = None
        elif family == "flux":
            want, pooled, _ = pipe.encode_prompt(CAPTIONS[:2], None, max_sequence_length=TEXT_LEN)
        else:
            want, _, pooled, _ = pipe.encode_prompt(
                CAPTIONS[:2], None, None, do_classifier_free_guidance=False,
                max_sequence_length=TEXT_LEN,
            )  # fmt: skip
    torch.testing.assert_close(text.tokens, want.float())
    if pooled is not None:
        torch.testing.assert_close(text.pooled, pooled.float())


# ------------------------------------------------------------------------------------ training


@pytest.mark.parametrize(
    ("family", "backbone"),
    [("flux2", {}), ("flux", {"lora_rank": 4}), ("sd3", {"depth_weights": "shared"})],
)
def test_one_step_lowers_the_loss_on_a_fixed_batch(pipelines, family, backbone):
    model = _build(pipelines, family, **backbone).train()
    d = _batch(model)
    active = {m: torch.ones(4, dtype=torch.bool) for m in (IMAGE, DEPTH)}
    valid = torch.ones(d["x0"][DEPTH].shape, dtype=torch.bool)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)

    def loss() -> torch.Tensor:
        pred = model(d["xt"], d["t"], CAPTIONS)
        out = flow_loss(pred, d["x0"], d["noise"], d["t"], active, LossConfig(),
                        valid_mask={DEPTH: valid})  # fmt: skip
        return out.total

    before = loss()
    opt.zero_grad()
    before.backward()
    assert model.dit.depth_embed.weight.grad is not None
    assert model.dit.final[DEPTH].linear.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        assert loss() < before


def test_lora_counts_frozen_trunk_and_teacher_shares_weights(pipelines):
    rank = 4
    full = _build(pipelines, "flux")
    lora = _build(pipelines, "flux", lora_rank=rank)
    targets = lora_target_names(full.dit.transformer)
    modules = dict(full.dit.transformer.named_modules())
    expected = sum(rank * (modules[n].in_features + modules[n].out_features) for n in targets)
    assert count_parameters(lora) - count_parameters(full) == expected
    added = count_parameters(full.dit) - count_parameters(_original(pipelines, full))
    assert count_parameters(lora, trainable_only=True) == expected + added
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    depth_part = ("dit.depth_", "dit.decoders.", "dit.final.", ".depth.", ".depth_mod.")
    assert all("lora_" in n or any(k in n for k in depth_part) for n in trainable)
    assert not any("base_layer" in n for n in trainable)
    # Train the adapters away from zero: the teacher (adapters off, depth off) stays the original.
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    d = _batch(lora)
    text = lora.encode_text(CAPTIONS)
    with torch.no_grad():
        teacher = lora.teacher_forward(d["xt"], d["t"], text)[IMAGE]
        student = lora(d["xt"], d["t"], text)[IMAGE]
        want = lora.dit.original_forward(_original(pipelines, lora), d["xt"][IMAGE], d["t"][IMAGE],
                                         text)  # fmt: skip
    torch.testing.assert_close(teacher, want, atol=1e-5, rtol=1e-5)
    assert (student - want).abs().amax() > 1e-3
    assert all(p.requires_grad for n, p in lora.named_parameters() if "lora_" in n)


@pytest.mark.parametrize(("family", "backbone"), [("sd3", {}), ("flux2", {"lora_rank": 2})])
def test_checkpoint_round_trip_keeps_only_trained_tensors(pipelines, tmp_path, family, backbone):
    model = _build(pipelines, family, **backbone)
    with torch.no_grad():  # make every trained tensor count
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = model.state_dict()
    assert sum(v.numel() for v in state.values()) == count_parameters(model, trainable_only=True)
    assert not any("text_encoder.encoders" in k for k in state)  # frozen encoders: reloaded
    path = write_checkpoint(tmp_path / "ckpt", model.cfg, state, {"step": 1})
    loaded = load_model(path)
    d = _batch(model)
    with torch.no_grad():
        a, b = model.eval()(d["xt"], d["t"], CAPTIONS), loaded(d["xt"], d["t"], CAPTIONS)
    for m in a:
        torch.testing.assert_close(a[m], b[m])


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_every_mode(pipelines, family):
    pipe = ModalityForcingPipeline(_build(pipelines, family))
    g = torch.Generator().manual_seed(0)
    image, depth = torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 1, SIZE, SIZE) + 0.5  # [0, 1]
    for mode, given in [("joint", {}), ("marginal", {}), ("image_to_depth", {"image": image}),
                        ("depth_to_image", {"depth": depth})]:  # fmt: skip
        out = pipe(prompt="a red sphere", mode=mode, num_inference_steps=2, output_type="pt",
                   guidance_scale=2.0, generator=g, **given)  # fmt: skip
        assert out.image.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out.image).all()
        if mode != "marginal":
            assert out.depth.shape == (1, 1, SIZE, SIZE) and torch.isfinite(out.depth).all()


def test_trainer_with_lora_distillation_checkpointing_and_resume(pipelines, tmp_path):
    from modality_forcing.training.loop import Trainer

    data = {
        "model": {"family": "flux", "backbone": {"pretrained": pipelines["flux"], "lora_rank": 2,
                                                 "text_max_length": TEXT_LEN}},
        "data": {"height": SIZE, "width": SIZE, "shadows": False},
        "batch_size": 2, "max_steps": 2, "ckpt_every": 1, "sample_every": 0,
        "out_dir": str(tmp_path),
        "loss": {"distill_weight": 0.5}, "activation_checkpointing": True,
        "optim": {"warmup_steps": 1, "ema_decay": 0.9},
    }  # fmt: skip
    trainer = Trainer(resolve_train_config(data))
    assert trainer.teacher is not None
    final = trainer.run()
    assert Trainer(resolve_train_config(data), resume=True).state.step == 2
    assert load_model(final).cfg.backbone.lora_rank == 2


# ------------------------------------------------------------------------------------ config


def test_config_errors(pipelines):
    with pytest.raises(ValueError, match="pretrained"):
        build_model(ModelConfig(family="flux"))
    with pytest.raises(ValueError, match="needs FluxTransformer2DModel"):
        build_model(dataclasses.replace(_cfg(pipelines, "sd3"), family="flux"))
    with pytest.raises(ValueError, match="depth_weights"):
        _build(pipelines, "sd3", depth_weights="triple")
    with pytest.raises(ValueError, match="text_encoder"):
        _build(pipelines, "sd3", text_encoder="t5")


# ------------------------------------------------------------------------------------ memory


def test_memory_footprint_matches_a_built_model(pipelines):
    """The meta-device count of the memory table equals the parameters of a real tiny build."""
    pipe = diffusers.DiffusionPipeline.from_pretrained(pipelines["flux"])
    config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    spec = RealBackbone("flux", config, (), 8, latent_factor=4)
    fp = footprint(spec, (SIZE, SIZE), lora_rank=3)
    model = _build(pipelines, "flux")
    assert fp.trunk == count_parameters(_original(pipelines, model))
    assert fp.added == count_parameters(model.dit) - fp.trunk
    assert fp.lora == lora_parameters(model.dit, 3) > 0
    assert fp.tokens == (8, (SIZE // 4) ** 2)
    full, full_ac = training_gib(fp, 8, None, False), training_gib(fp, 8, None, True)
    lora, lora_ac = training_gib(fp, 8, fp.lora, False), training_gib(fp, 8, fp.lora, True)
    assert full_ac < full and lora_ac < lora < full and training_gib(fp, 16, None, False) < full
    assert set(REAL_BACKBONES) >= {"FLUX.2 [klein] 9B", "FLUX.1 [dev]", "SD3.5 medium"}


def test_checkpoints_store_base_models_portably_and_can_be_pointed_elsewhere(pipelines, tmp_path):
    import shutil

    import yaml

    from modality_forcing.training.checkpoint import portable_paths

    model = _build(pipelines, "sd3")
    root = tmp_path / "project"
    shutil.copytree(pipelines["sd3"], root / "base" / "sd3")
    cfg = dataclasses.replace(model.cfg, backbone=dataclasses.replace(
        model.cfg.backbone, pretrained=str(root / "base" / "sd3")))  # fmt: skip
    path = write_checkpoint(root / "runs" / "ckpt", cfg, model.state_dict(), {"step": 1})
    stored = yaml.safe_load((path / "config.yaml").read_text())["backbone"]["pretrained"]
    assert stored == "../../base/sd3"  # relative to the checkpoint, never absolute
    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)  # the project moves: the checkpoint still finds its base model
    d = _batch(model)
    loaded = load_model(moved / "runs" / "ckpt")
    with torch.no_grad():
        a, b = model.eval()(d["xt"], d["t"], CAPTIONS), loaded(d["xt"], d["t"], CAPTIONS)
    torch.testing.assert_close(a[IMAGE], b[IMAGE])
    shutil.move(moved / "base" / "sd3", tmp_path / "sd3-copy")  # gone: an override points to it
    with pytest.raises((OSError, ValueError)):
        load_model(moved / "runs" / "ckpt")
    again = load_model(
        moved / "runs" / "ckpt", base_models={"backbone": str(tmp_path / "sd3-copy")}
    )
    assert again.cfg.backbone.pretrained == str(tmp_path / "sd3-copy")
    with pytest.raises(ValueError, match="unknown base model"):
        load_model(moved / "runs" / "ckpt", base_models={"vae": "x"})
    snap = tmp_path / "hf" / "models--org--sd3-mini" / "snapshots" / "abc123"
    snap.mkdir(parents=True)  # a folder in the Hugging Face cache is stored as its Hub id
    hub = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=str(snap)))
    assert portable_paths(hub, tmp_path).backbone.pretrained == "org/sd3-mini"
