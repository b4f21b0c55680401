"""Flow path maths, noise-level policies and the masked per-modality loss."""

import pytest
import torch

from modality_forcing.config import ForcingConfig, LossConfig
from modality_forcing.flow.loss import flow_loss, object_weights
from modality_forcing.flow.noise_levels import (
    BOTH_NOISED,
    DEPTH_ABSENT,
    DEPTH_CLEAN,
    IMAGE_CLEAN,
    sample_noise_levels,
)
from modality_forcing.flow.path import (
    interpolate,
    sample_path,
    velocity_to_noise,
    velocity_to_x0,
    x0_to_velocity,
)
from modality_forcing.modalities import DEPTH, IMAGE


def test_path_round_trips_in_float64():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    ps = sample_path(x0, t, g)
    v = ps.v_target
    torch.testing.assert_close(velocity_to_x0(ps.xt, v, t), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(velocity_to_noise(ps.xt, v, t), ps.noise, rtol=0, atol=1e-12)
    # x0-prediction -> velocity is exact away from the t_min clamp.
    torch.testing.assert_close(x0_to_velocity(ps.xt, x0, t, t_min=0.05), v, rtol=0, atol=1e-12)


def test_clean_modality_is_bit_identical():
    x0 = torch.randn(3, 1, 4, 4)
    noise = torch.randn(3, 1, 4, 4)
    xt = interpolate(x0, noise, torch.tensor([0.0, 0.5, 0.0]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], x0[2])
    assert not torch.equal(xt[1], x0[1])
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)


def test_corner_frequencies_match_config():
    cfg = ForcingConfig(p_image_clean=0.3, p_depth_clean=0.1, p_both_noised=0.5, p_depth_absent=0.1)
    levels = sample_noise_levels(cfg, 40000, torch.Generator().manual_seed(1))
    freq = torch.bincount(levels.corner, minlength=4).float() / 40000
    torch.testing.assert_close(freq, torch.tensor([0.3, 0.1, 0.5, 0.1]), atol=0.01, rtol=0)
    c, ti, td = levels.corner, levels.t[IMAGE], levels.t[DEPTH]
    assert (ti[c == IMAGE_CLEAN] == 0).all() and (td[c == IMAGE_CLEAN] > 0).all()
    assert (td[c == DEPTH_CLEAN] == 0).all() and (ti[c == DEPTH_CLEAN] > 0).all()
    assert (td[c == DEPTH_ABSENT] == 1).all()
    both = c == BOTH_NOISED
    assert (ti[both] > 0).all() and (td[both] > 0).all() and not torch.equal(ti[both], td[both])
    # Shifted logit-normal with mu = 1.1: median sigmoid(1.1) ~ 0.75.
    assert abs(ti[both].median().item() - torch.sigmoid(torch.tensor(1.1)).item()) < 0.02


def test_bad_probabilities_and_unknown_policy_raise():
    with pytest.raises(ValueError, match="sum to 1"):
        sample_noise_levels(ForcingConfig(p_both_noised=0.9), 4)
    with pytest.raises(ValueError, match="unknown forcing policy 'nope'"):
        sample_noise_levels(ForcingConfig(policy="nope"), 4)


def _loss_inputs(b=2, h=4):
    g = torch.Generator().manual_seed(0)
    x0 = {IMAGE: torch.randn(b, 3, h, h, generator=g), DEPTH: torch.rand(b, 1, h, h, generator=g)}
    noise = {m: torch.randn(x.shape, generator=g) for m, x in x0.items()}
    t = {IMAGE: torch.full((b,), 0.5), DEPTH: torch.full((b,), 0.5)}
    active = {m: torch.ones(b, dtype=torch.bool) for m in x0}
    return x0, noise, t, active


def test_masked_depth_pixels_carry_no_gradient():
    x0, noise, t, active = _loss_inputs()
    pred = {m: torch.randn(x.shape, requires_grad=True) for m, x in x0.items()}
    valid = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    valid[:, :, :2] = True
    with torch.no_grad():
        pred[DEPTH][:, :, 2:] = float("nan")  # garbage where nothing was measured
    out = flow_loss(pred, x0, noise, t, active, LossConfig(), valid_mask={DEPTH: valid})
    out.total.backward()
    g = pred[DEPTH].grad
    assert torch.isfinite(out.total)
    assert (g[:, :, 2:] == 0).all() and (g[:, :, :2] != 0).all()


def test_all_invalid_depth_gives_finite_image_only_loss():
    x0, noise, t, active = _loss_inputs()
    pred = {m: torch.randn(x.shape, requires_grad=True) for m, x in x0.items()}
    valid = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    out = flow_loss(pred, x0, noise, t, active, LossConfig(), valid_mask={DEPTH: valid})
    assert torch.isfinite(out.total) and out.per_modality[DEPTH].item() == 0
    torch.testing.assert_close(out.total, out.per_modality[IMAGE])
    out.total.backward()
    assert (pred[DEPTH].grad == 0).all() and pred[IMAGE].grad.abs().sum() > 0


def test_clean_modality_gets_no_loss_and_targets_are_right():
    x0, noise, t, active = _loss_inputs()
    active[IMAGE] = torch.tensor([False, True])
    # Perfect predictions for sample 1: velocity for image, x0 for depth -> zero loss.
    pred = {IMAGE: noise[IMAGE] - x0[IMAGE], DEPTH: x0[DEPTH].clone()}
    pred[IMAGE][0] += 5.0  # wrong, but sample 0's image is held clean
    out = flow_loss(pred, x0, noise, t, active, LossConfig())
    assert out.total.item() == 0
    assert torch.isnan(out.per_sample[IMAGE][0]) and out.per_sample[IMAGE][1] == 0


def test_self_distillation_weighted_by_depth_noise():
    x0, noise, t, active = _loss_inputs()
    pred = {IMAGE: noise[IMAGE] - x0[IMAGE], DEPTH: x0[DEPTH].clone()}
    teacher = pred[IMAGE] + 1.0  # unit squared error per element
    cfg = LossConfig(distill_weight=2.0)
    w = torch.tensor([0.0, 1.0])
    out = flow_loss(pred, x0, noise, t, active, cfg, teacher_v=teacher, distill_weight_t=w)
    assert out.distill.item() == pytest.approx(0.5)
    assert out.total.item() == pytest.approx(1.0)


def test_depth_readout_share_and_depth_shift():
    cfg = ForcingConfig(p_image_clean=0.5, p_depth_clean=0.1, p_both_noised=0.4,
                        p_depth_readout=0.3, depth_shift_mu=-1.0)  # fmt: skip
    levels = sample_noise_levels(cfg, 40000, torch.Generator().manual_seed(2))
    c, ti, td = levels.corner, levels.t[IMAGE], levels.t[DEPTH]
    readout = (td[c == IMAGE_CLEAN] == 1).float().mean().item()
    assert abs(readout - 0.3) < 0.01  # share of image-clean samples at t_depth = 1 exactly
    assert (td[c != IMAGE_CLEAN] < 1).all()  # only the image-clean corner reads out
    both = c == BOTH_NOISED  # depth t's median moves to sigmoid(-1); the image keeps mu = 1.1
    assert abs(td[both].median().item() - torch.sigmoid(torch.tensor(-1.0)).item()) < 0.02
    assert abs(ti[both].median().item() - torch.sigmoid(torch.tensor(1.1)).item()) < 0.02
    with pytest.raises(ValueError, match="p_depth_readout"):
        sample_noise_levels(ForcingConfig(p_depth_readout=1.5), 4)


def test_readout_changes_only_image_clean_depth_levels():
    """The readout moves some image-clean t_depth to 1 and leaves every other draw alone."""
    off = ForcingConfig(p_depth_readout=0.0)
    a = sample_noise_levels(off, 256, torch.Generator().manual_seed(5))
    b = sample_noise_levels(ForcingConfig(), 256, torch.Generator().manual_seed(5))
    assert torch.equal(a.corner, b.corner) and torch.equal(a.t[IMAGE], b.t[IMAGE])
    changed = a.t[DEPTH] != b.t[DEPTH]
    assert changed.any() and (b.t[DEPTH][changed] == 1).all()
    assert (a.corner[changed] == IMAGE_CLEAN).all()


def test_l1_depth_loss_is_mean_absolute_error_on_valid_pixels():
    x0, noise, t, active = _loss_inputs()
    pred = {IMAGE: noise[IMAGE] - x0[IMAGE], DEPTH: x0[DEPTH] + 0.5}
    pred[DEPTH][:, :, 0] += 10.0  # large errors on the first row, which is not measured
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[:, :, 0] = False
    l1 = flow_loss(pred, x0, noise, t, active, LossConfig(), {DEPTH: valid})  # the default
    mse = flow_loss(pred, x0, noise, t, active, LossConfig(depth_loss="mse"), {DEPTH: valid})
    assert l1.per_modality[DEPTH].item() == pytest.approx(0.5)
    assert mse.per_modality[DEPTH].item() == pytest.approx(0.25)
    assert l1.per_modality[IMAGE].item() == 0  # the image stream keeps its velocity MSE
    with pytest.raises(ValueError, match="depth_loss"):
        flow_loss(pred, x0, noise, t, active, LossConfig(depth_loss="huber"))


def test_velocity_parametrised_depth_uses_the_velocity_target():
    x0, noise, t, active = _loss_inputs()
    perfect = {IMAGE: noise[IMAGE] - x0[IMAGE], DEPTH: noise[DEPTH] - x0[DEPTH]}
    out = flow_loss(perfect, x0, noise, t, active, LossConfig(), prediction={DEPTH: "velocity"})
    assert out.total.item() == 0
    out = flow_loss(perfect, x0, noise, t, active, LossConfig())  # registry default: x0
    assert out.per_modality[DEPTH].item() > 0
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        flow_loss(perfect, x0, noise, t, active, LossConfig(), prediction={DEPTH: "eps"})


def test_object_pixels_weigh_up_the_image_error_as_a_weighted_mean():
    x0, noise, t, active = _loss_inputs()
    v = noise[IMAGE] - x0[IMAGE]
    pred = {IMAGE: v.clone(), DEPTH: x0[DEPTH].clone()}
    objects = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    objects[:, :, 1:3, 1:3] = True  # 4 of 16 pixels
    pred[IMAGE][objects.expand_as(v)] += 1.0  # unit error on objects only
    plain = flow_loss(pred, x0, noise, t, active, LossConfig())
    weights = object_weights(objects, 4.0, (4, 4))
    weighted = flow_loss(pred, x0, noise, t, active, LossConfig(), pixel_weight={IMAGE: weights})
    assert plain.per_modality[IMAGE].item() == pytest.approx(4 / 16)
    assert weighted.per_modality[IMAGE].item() == pytest.approx(4 * 4 / (12 + 4 * 4))
    uniform = {IMAGE: torch.full((2, 1, 4, 4), 3.0)}  # a constant weight changes nothing
    same = flow_loss(pred, x0, noise, t, active, LossConfig(), pixel_weight=uniform)
    assert same.per_modality[IMAGE].item() == pytest.approx(plain.per_modality[IMAGE].item())
    # on a coarser grid (a latent) the weights are the object share of each cell
    coarse = object_weights(objects, 4.0, (2, 2))
    assert torch.allclose(coarse, torch.full((2, 1, 2, 2), 1.75))
