"""MM-DiT shapes, initialisation and per-modality timestep conditioning."""

import dataclasses

import pytest
import torch

from modality_forcing.config import ModelConfig, TextConfig, model_preset
from modality_forcing.modalities import DEPTH, IMAGE, contract, denormalize_depth, normalize_depth
from modality_forcing.model.denoiser import ModalityForcingModel
from modality_forcing.model.mmdit import CPU_MATMUL_ATTENTION, count_parameters, flops_per_token


def _inputs(b=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {IMAGE: torch.randn(b, 3, h, w, generator=g), DEPTH: torch.rand(b, 1, h, w, generator=g)}
    t = {IMAGE: torch.rand(b, generator=g), DEPTH: torch.rand(b, generator=g)}
    return x, t, ["a red sphere on a checkered floor", ""][:b] + ["x"] * max(0, b - 2)


def _tiny(**kw) -> ModalityForcingModel:
    torch.manual_seed(0)
    return ModalityForcingModel(dataclasses.replace(model_preset("tiny"), **kw))


def test_shapes_non_square_and_image_only():
    model = _tiny()
    x, t, caps = _inputs()
    out = model(x, t, caps)
    assert out[IMAGE].shape == (2, 3, 16, 24) and out[DEPTH].shape == (2, 1, 16, 24)
    assert out[DEPTH].dtype == torch.float32
    only = model({IMAGE: x[IMAGE]}, {IMAGE: t[IMAGE]}, caps)
    assert set(only) == {IMAGE}
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model({IMAGE: torch.randn(1, 3, 10, 16)}, {IMAGE: torch.rand(1)}, ["a"])


def test_zero_initialised_outputs():
    model = _tiny()
    out = model(*_inputs())
    assert all((v == 0).all() for v in out.values())


def test_depth_head_is_fp32_under_bf16_autocast():
    model = _tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_inputs())
    assert out[DEPTH].dtype == torch.float32 and out[IMAGE].dtype == torch.bfloat16


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_t_depth_changes_only_depth_at_init():
    """adaLN-Zero blocks are identities at init, so t_depth can only reach the depth head."""
    model = _tiny()
    for head in model.dit.final.values():
        _randomise(head)
    x, t, caps = _inputs()
    a = model(x, t, caps)
    b = model(x, {IMAGE: t[IMAGE], DEPTH: t[DEPTH] * 0.3}, caps)
    torch.testing.assert_close(a[IMAGE], b[IMAGE], rtol=0, atol=0)
    assert not torch.allclose(a[DEPTH], b[DEPTH])


def test_trained_model_mixes_modalities_and_cross_time_gate():
    model = _tiny(cross_modality_time=True)
    t = {IMAGE: torch.tensor([0.3]), DEPTH: torch.tensor([0.9])}
    t2 = {IMAGE: torch.tensor([0.3]), DEPTH: torch.tensor([0.1])}
    # Gate at zero: the image vector ignores t_depth; open it and it no longer does.
    assert torch.equal(model.dit.time_vectors(t)[IMAGE], model.dit.time_vectors(t2)[IMAGE])
    with torch.no_grad():
        model.dit.cross_alpha[IMAGE].fill_(0.5)
    assert not torch.equal(model.dit.time_vectors(t)[IMAGE], model.dit.time_vectors(t2)[IMAGE])
    # With every weight non-zero, the image prediction depends on the depth tokens (joint attn).
    _randomise(model)
    x, tt, caps = _inputs(b=1)
    a = model(x, tt, caps)
    x2 = {IMAGE: x[IMAGE], DEPTH: x[DEPTH] + 1}
    assert not torch.allclose(a[IMAGE], model(x2, tt, caps)[IMAGE])


def test_text_changes_output_and_padding_is_masked():
    model = _tiny()
    _randomise(model)
    x, t, _ = _inputs(b=1)
    a = model(x, t, ["a red sphere"])[IMAGE]
    b = model(x, t, ["a blue box"])[IMAGE]
    assert not torch.allclose(a, b)


def test_parameter_count_and_flops_grow_with_presets():
    counts = [
        count_parameters(ModalityForcingModel(model_preset(n)).dit) for n in ["tiny", "cpu-s"]
    ]
    assert counts[0] < counts[1]
    f = [flops_per_token(model_preset(n), 64, 32) for n in ["tiny", "cpu-s", "cpu-m"]]
    assert f[0] < f[1] < f[2]
    # Paper-sized presets: DiT parameter counts near the published 370M / 1B / 3.3B, counted on
    # the meta device (nothing allocated).
    from modality_forcing.model.summary import describe

    for name, target in [("mf-370m", 370e6), ("mf-1b", 1.0e9), ("mf-3b", 3.3e9)]:
        params = describe(model_preset(name), (512, 512))["dit_params"]
        assert abs(params / target - 1) < 0.05, (name, params)


def test_depth_normalisation_round_trip_and_mask():
    depth = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 20 + 0.1
    valid = torch.rand(3, 1, 8, 8) > 0.3
    depth_garbage = torch.where(valid, depth, torch.full_like(depth, float("nan")))
    norm, scale = normalize_depth(depth_garbage, valid)
    assert torch.isfinite(norm).all() and (norm >= 0).all() and (norm < 2).all()
    back = denormalize_depth(norm, scale)
    torch.testing.assert_close(back[valid], depth[valid], rtol=1e-9, atol=1e-9)
    for i in range(3):  # unit mean over valid pixels (before contraction)
        rel = depth[i][valid[i]] / scale[i]
        assert rel.mean().item() == pytest.approx(1.0)
    assert contract(torch.tensor([0.5, 1.0, 2.0, 1e9])).tolist() == pytest.approx(
        [0.5, 1.0, 1.5, 2.0]
    )


def test_unknown_modality_or_text_kind():
    with pytest.raises(ValueError, match="unknown text encoder"):
        ModalityForcingModel(ModelConfig(text=TextConfig(kind="nope")))


def test_a_third_modality_is_a_registry_entry_plus_data(tmp_path):
    """Surface normals from the procedural world as a third stream: register, configure, train."""
    from modality_forcing.config import resolve_train_config
    from modality_forcing.data.batch import collate
    from modality_forcing.data.procedural import SceneConfig, render_split
    from modality_forcing.modalities import Modality, register_modality
    from modality_forcing.train import Trainer

    register_modality(Modality("normals", channels=3, prediction="x0"))
    cfg = resolve_train_config({
        "preset": "tiny", "out_dir": str(tmp_path), "batch_size": 4, "precision": "fp32",
        "model": {"modalities": ["image", "depth", "normals"]}, "data": {"height": 16, "width": 16},
    })  # fmt: skip
    trainer = Trainer(cfg)
    batch = collate(render_split("train", 0, 4, SceneConfig(height=16, width=16)))
    assert batch["normals"].shape == (4, 3, 16, 16)
    out = trainer.compute_loss(batch)
    assert set(out.per_modality) == {"image", "depth", "normals"}
    assert out.per_modality["normals"] > 0
    out.total.backward()
    assert trainer.model.dit.final["normals"].linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n", [CPU_MATMUL_ATTENTION - 8, CPU_MATMUL_ATTENTION + 8])
def test_cpu_attention_paths_match_a_float64_reference(n):
    """Both CPU paths (matmuls up to CPU_MATMUL_ATTENTION tokens, SDPA above) give masked
    softmax attention: padded keys get no weight, bf16 stays within bf16 rounding."""
    import torch.nn.functional as F

    from modality_forcing.model.mmdit import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) for _ in range(3))
    keep = torch.ones(2, 1, 1, n, dtype=torch.bool)
    keep[0, ..., 5:12] = False
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=keep)
    out = attention(*(x.bfloat16() for x in (q, k, v)), keep)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert (out.double() - ref).abs().max() < 0.03
    v2 = v.clone()
    v2[0, :, 5:12] = 1e3  # values of masked keys must not leak into the output
    assert torch.equal(attention(q, k, v2, keep)[0], attention(q, k, v, keep)[0])
