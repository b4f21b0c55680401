"""MM-DiT shapes, initialisation and per-modality timestep conditioning."""

import dataclasses

import pytest
import torch

from modality_forcing.config import ModelConfig, TextConfig, model_preset
from modality_forcing.modalities import DEPTH, IMAGE, contract, denormalize_depth, normalize_depth
from modality_forcing.model.denoiser import ModalityForcingModel
from modality_forcing.model.layers import matmul_attention_limit
from modality_forcing.model.mmdit import count_parameters, flops_per_token


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
    from modality_forcing.training.loop import Trainer

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


@pytest.mark.parametrize("offset", [-8, 8])
def test_cpu_attention_paths_match_a_float64_reference(offset):
    """Both CPU paths (matmuls up to `matmul_attention_limit`, SDPA above) give masked softmax
    attention: padded keys get no weight, bf16 stays within bf16 rounding."""
    import torch.nn.functional as F

    from modality_forcing.model.layers import attention

    n = matmul_attention_limit(torch.bfloat16) + offset
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
    # a given scale replaces 1/sqrt(Dh), as in SDPA
    torch.testing.assert_close(attention(q * 0.5, k, v, None, scale=0.25 * 2),
                               attention(q, k, v, None, scale=0.25))  # fmt: skip


@pytest.mark.parametrize("start", [0, 5])
def test_rms_rope_is_rms_norm_then_rotary_and_its_backward_is_exact(start):
    """The fused QK RMSNorm + RoPE (weight folded into the tables; rows before `start` not
    rotated) equals the plain formula, and its hand-written backward passes gradcheck."""
    import torch.nn.functional as F

    from modality_forcing.model.layers import (
        RopeTable,
        grid_positions,
        norm_tables,
        rms_rope,
        rope_2d,
        signed_sin,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, generator=g, dtype=torch.float64)
    cos, sin = (r.double() for r in rope_2d(grid_positions(3, 4), 8, 100.0))
    cos[:start], sin[:start] = 1.0, 0.0  # leading rows (text) are not rotated
    y = F.rms_norm(x, (8,), w, 1e-6) * 0.5
    half = torch.cat([-y[..., 4:], y[..., :4]], dim=-1)  # rotate_half
    ref = y * cos + half * sin
    table = norm_tables(w, RopeTable(cos, signed_sin(sin), start), scale=0.5)
    torch.testing.assert_close(rms_rope(x, table, 1e-6), ref)

    def fn(x, c, s):
        return rms_rope(x, RopeTable(c, s, start), 1e-6)

    inputs = (x.requires_grad_(), table.cos.detach().requires_grad_(),
              table.sin.detach().requires_grad_())  # fmt: skip
    assert torch.autograd.gradcheck(fn, inputs)


def _old_single_block(block, xs, vecs, ropes):
    """The single block as it was written before packing (per-stream qkv, rms_norm, rotate-half
    RoPE, scores scaled after the matmul, `out` over a concatenation): the reference."""
    import torch.nn.functional as F

    from modality_forcing.model.mmdit import _vec_key

    def heads(h, rope):
        b, n, _ = h.shape
        q, k, v = block.attn.qkv(h).view(b, n, 3, block.attn.num_heads, -1).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q = F.rms_norm(q, q.shape[-1:], block.attn.q_norm.weight, 1e-6)
        k = F.rms_norm(k, k.shape[-1:], block.attn.k_norm.weight, 1e-6)
        if rope is not None:
            rot = [torch.cat([-t[..., t.shape[-1] // 2 :], t[..., : t.shape[-1] // 2]], -1)
                   for t in (q, k)]  # fmt: skip
            q, k = q * rope[0] + rot[0] * rope[1], k * rope[0] + rot[1] * rope[1]
        return q, k, v

    mods = {s: block.mod[_vec_key(s)](vecs[_vec_key(s)]) for s in xs}
    hs = {s: block.norm(x) * (1 + mods[s][1]) + mods[s][0] for s, x in xs.items()}
    qkv = [heads(h, ropes.get(s)) for s, h in hs.items()]
    q, k, v = (torch.cat([t[i] for t in qkv], dim=2) for i in range(3))
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    a = a.split([x.shape[1] for x in xs.values()], dim=1)
    return {s: x + mods[s][2] * block.out(torch.cat([ai, block.mlp_in(hs[s])], -1))
            for (s, x), ai in zip(xs.items(), a, strict=True)}  # fmt: skip


def test_packed_single_block_matches_the_per_stream_reference():
    """Packing (one sequence, per-run modulation, split `out`, fused QK norm + RoPE) and leaving
    the text outputs of the last block out change no number beyond float rounding."""
    from modality_forcing.model.layers import grid_positions, rope_2d
    from modality_forcing.model.mmdit import SingleBlock, pack_rope, runs_of

    torch.manual_seed(0)
    block = SingleBlock(["text", IMAGE, DEPTH], 32, 2, 4.0)
    _randomise(block)
    xs = {"text": torch.randn(2, 5, 32), IMAGE: torch.randn(2, 6, 32), DEPTH: torch.randn(2, 6, 32)}
    vecs = {IMAGE: torch.randn(2, 32), DEPTH: torch.randn(2, 32)}
    rope = rope_2d(grid_positions(2, 3), 16, 100.0)
    ropes = {IMAGE: rope, DEPTH: rope}
    ref = _old_single_block(block, xs, vecs, ropes)
    out = block(xs, vecs, ropes, None)  # the per-stream API the backbone adapters use
    for s in xs:
        torch.testing.assert_close(out[s], ref[s], rtol=1e-5, atol=1e-5)
    lengths = {s: x.shape[1] for s, x in xs.items()}
    packed = torch.cat(list(xs.values()), dim=1)
    table = pack_rope(ropes, lengths, 16, packed.device)
    skipped = block(packed, vecs, table, None, runs_of(lengths), skip=5)  # text: keys, values
    torch.testing.assert_close(skipped, torch.cat([ref[IMAGE], ref[DEPTH]], 1), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_kv_only_text_in_a_last_joint_block_is_exact():
    from modality_forcing.model.layers import grid_positions, rope_2d
    from modality_forcing.model.mmdit import JointBlock, pack_rope

    torch.manual_seed(0)
    block = JointBlock(["text", IMAGE], 32, 2, 4.0)
    _randomise(block)
    xs = {"text": torch.randn(2, 5, 32), IMAGE: torch.randn(2, 6, 32)}
    vecs = {IMAGE: torch.randn(2, 32)}
    table = pack_rope({IMAGE: rope_2d(grid_positions(2, 3), 16, 100.0)}, {"text": 5, IMAGE: 6},
                      16, torch.device("cpu"))  # fmt: skip
    full = block(xs, vecs, table, None)
    last = block(xs, vecs, table, None, kv_only="text")
    assert set(last) == {IMAGE}
    torch.testing.assert_close(last[IMAGE], full[IMAGE])


def test_text_without_padding_and_trimmed_captions_are_exact():
    """No mask when no token is padding, and captions encoded only up to the longest one, give
    the outputs of the full padded encoding with its mask."""
    from modality_forcing.model.text import TextTokens

    model = _tiny()
    _randomise(model, seed=3)
    x, t, _ = _inputs()
    caps = ["a red sphere on a checkered floor", "a box"]
    full = model.text_encoder(caps)  # max_length tokens, padded, masked
    assert full.tokens.shape[1] == model.cfg.text.max_length
    trimmed = model.text_encoder(caps, trim=True)
    assert trimmed.tokens.shape[1] == int(full.mask.sum(1).max())
    torch.testing.assert_close(trimmed.tokens[trimmed.mask], full.tokens[full.mask])
    torch.testing.assert_close(model(x, t, caps)[DEPTH], model(x, t, full)[DEPTH])
    dense = TextTokens(tokens=full.tokens[:, :4], mask=torch.ones(2, 4, dtype=torch.bool))
    no_mask = TextTokens(tokens=full.tokens[:, :4], mask=None)
    for m in (IMAGE, DEPTH):
        torch.testing.assert_close(model(x, t, dense)[m], model(x, t, no_mask)[m])
