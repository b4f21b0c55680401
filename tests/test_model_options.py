"""Model options of the flagship recipe: image x0-prediction, pooled text in the adaLN vectors and
the pixel refiner after unpatchify. All default off, so older checkpoints load unchanged."""

import dataclasses

import pytest
import torch

from modality_forcing.config import LossConfig, ModelConfig, model_preset, resolve_train_config
from modality_forcing.flow.loss import flow_loss
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.model.denoiser import ModalityForcingModel
from modality_forcing.model.mmdit import masked_mean
from modality_forcing.sampling.generate import generate


def _tiny(**kw) -> ModalityForcingModel:
    torch.manual_seed(0)
    return ModalityForcingModel(dataclasses.replace(model_preset("tiny"), **kw))


def _inputs(b=2, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    x = {IMAGE: torch.randn(b, 3, h, w, generator=g), DEPTH: torch.randn(b, 1, h, w, generator=g)}
    t = {IMAGE: torch.rand(b, generator=g), DEPTH: torch.rand(b, generator=g)}
    return x, t, ["a red sphere on a blue floor", "a green box"]


def test_refiner_starts_as_the_identity_and_then_learns():
    plain, refined = _tiny(), _tiny(refine_width=8)
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine.") for k in missing)
    for p in plain.dit.final.parameters():  # non-zero heads: a prediction worth refining
        torch.nn.init.normal_(p, std=0.1)
    refined.dit.load_state_dict(plain.dit.state_dict())
    x, t, caps = _inputs()
    a, b = plain(x, t, caps), refined(x, t, caps)
    for m in (IMAGE, DEPTH):
        torch.testing.assert_close(a[m], b[m])  # zero-initialised last conv: identity
    sum(v.square().mean() for v in b.values()).backward()
    assert refined.refine[DEPTH].net[-1].weight.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the depth refiner stays in float32
        out = refined(x, t, caps)
    assert out[DEPTH].dtype == torch.float32 and out[IMAGE].dtype == torch.bfloat16


def test_refiner_sees_a_clean_given_modality():
    """The depth refiner's context holds the image's x_t: changing only the image changes the
    refined depth even where the DiT's depth output would not (DiT output zero at init)."""
    model = _tiny(refine_width=8)
    with torch.no_grad():
        for p in model.refine[DEPTH].parameters():
            p.normal_(std=0.1)
    x, t, caps = _inputs()
    base = model(x, t, caps)[DEPTH]
    x2 = {IMAGE: -x[IMAGE], DEPTH: x[DEPTH]}
    assert not torch.allclose(model(x2, t, caps)[DEPTH], base)
    image_only = model({IMAGE: x[IMAGE]}, {IMAGE: t[IMAGE]}, caps)  # absent depth: zeros
    assert set(image_only) == {IMAGE}


def test_pooled_text_reaches_the_modulation_and_ignores_padding():
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(tokens, mask)[0], tokens[0, :2].mean(0))
    torch.testing.assert_close(masked_mean(tokens, None), tokens.mean(1))
    model = _tiny(text_pooled=True)
    with torch.no_grad():  # non-zero modulation and heads, so the caption can show
        for p in model.dit.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(std=0.05)
    x, t, caps = _inputs()
    out = model(x, t, caps)[IMAGE]
    out.square().mean().backward()
    assert model.dit.pooled_in[0].weight.grad.abs().sum() > 0
    other = model(x, t, ["a yellow cone", "a purple cylinder"])[IMAGE]
    assert not torch.allclose(out, other)


def test_image_x0_prediction_is_trained_and_sampled_as_x0():
    model = _tiny(image_prediction="x0")
    x, t, _ = _inputs()
    noise = {m: torch.randn_like(v) for m, v in x.items()}
    active = {m: torch.ones(2, dtype=torch.bool) for m in x}
    perfect = flow_loss(dict(x), x, noise, t, active, LossConfig(),
                        prediction={IMAGE: "x0", DEPTH: "x0"})  # fmt: skip
    assert perfect.per_modality[IMAGE] == 0  # the clean image is the target
    # Sampling converts the x0 prediction to a velocity: a zero-output x0 model drives the
    # image to 0, where a zero-output velocity model would leave the start noise unchanged.
    g = torch.Generator().manual_seed(0)
    as_x0 = generate(model, "joint", ["a"], 16, 16, num_steps=8, generator=g).image
    g = torch.Generator().manual_seed(0)
    as_v = generate(_tiny(), "joint", ["a"], 16, 16, num_steps=8, generator=g).image
    assert as_x0.abs().mean() < 0.5 * as_v.abs().mean()


def test_bad_model_options_name_the_key():
    with pytest.raises(ValueError, match=r"model\.image_prediction'.*x0 or velocity"):
        resolve_train_config({"preset": "tiny", "model": {"image_prediction": "eps"}})
    with pytest.raises(ValueError, match=r"model\.refine_width'.*>= 0"):
        resolve_train_config({"preset": "tiny", "model": {"refine_width": -1}})
    assert ModelConfig().image_prediction == "velocity" and ModelConfig().refine_width == 0


def test_distillation_needs_velocity_image_predictions(tmp_path):
    from modality_forcing.training.loop import Trainer

    cfg = resolve_train_config({"preset": "tiny", "out_dir": str(tmp_path / "r"),
                                "model": {"image_prediction": "x0"},
                                "loss": {"distill_weight": 1.0}})  # fmt: skip
    with pytest.raises(ValueError, match=r"loss\.distill_weight.*'velocity', got 'x0'"):
        Trainer(cfg)
