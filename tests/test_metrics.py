"""Depth metrics and alignment protocols: hand-computed values, exact fits, masks, degeneracy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from modality_forcing.metrics.alignment import PROTOCOLS, align, get_protocol, protocols_for
from modality_forcing.metrics.depth import METRICS, depth_metrics, mean_over_images

RANGE = (1e-3, 1e3)


def _t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def test_metrics_hand_computed() -> None:
    # p = [3, 4], g = [2, 4]: one pixel off by a ratio of 1.5, one exact; a third, masked-out
    # pixel must not count.
    pred, gt = _t([[3.0, 4.0, 100.0]]), _t([[2.0, 4.0, 1.0]])
    mask = torch.tensor([[True, True, False]])
    out = {k: float(v[0]) for k, v in depth_metrics(pred, gt, mask).items()}
    assert out["abs_rel"] == pytest.approx((1 / 2 + 0 / 4) / 2)
    assert out["sq_rel"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["rmse"] == pytest.approx(math.sqrt(1 / 2))
    assert out["rmse_log"] == pytest.approx(math.sqrt(math.log(1.5) ** 2 / 2))
    assert out["log10"] == pytest.approx(math.log10(1.5) / 2)
    # d = [ln 1.5, 0]: mean(d^2) - mean(d)^2 = (ln 1.5)^2 / 2 - (ln 1.5)^2 / 4 = (ln 1.5)^2 / 4
    assert out["silog"] == pytest.approx(100 * math.log(1.5) / 2)
    assert out["delta1"] == pytest.approx(0.5)  # 1.5 >= 1.25
    assert out["delta2"] == pytest.approx(1.0)  # 1.5 < 1.5625
    assert out["delta3"] == pytest.approx(1.0)
    assert set(out) == set(METRICS)


def test_metrics_are_per_image_then_averaged() -> None:
    pred = _t([[[1.0, 1.0]], [[2.0, 2.0]]])  # [2, 1, 2]
    gt = torch.ones(2, 1, 2, dtype=torch.float64)
    mask = torch.tensor([[[True, True]], [[True, False]]])
    abs_rel = depth_metrics(pred, gt, mask)["abs_rel"]
    assert abs_rel.tolist() == pytest.approx([0.0, 1.0])
    # Image mean 0.5 (a pixel-pooled mean would be 1/3).
    assert mean_over_images(abs_rel) == (pytest.approx(0.5), 2)
    assert mean_over_images(_t([1.0, math.nan, 3.0])) == (pytest.approx(2.0), 2)


def test_metrics_clamp_nonpositive_and_nan_rules() -> None:
    gt, mask = _t([[1.0, 1.0]]), torch.tensor([[True, True]])
    out = depth_metrics(_t([[-5.0, 1.0]]), gt, mask, eps=1e-6)
    assert float(out["abs_rel"][0]) == pytest.approx((1 - 1e-6) / 2)
    # NaN prediction on a valid pixel, or no valid pixel: NaN, not a silent delta of 0 or 1.
    for pred, m in ((_t([[math.nan, 1.0]]), mask), (_t([[1.0, 1.0]]), ~mask)):
        assert all(math.isnan(float(v[0])) for v in depth_metrics(pred, gt, m).values())
    # ... but a NaN outside the mask changes nothing.
    out = depth_metrics(_t([[1.0, math.nan]]), gt, torch.tensor([[True, False]]))
    assert float(out["delta1"][0]) == 1.0


def _reference_metrics(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """Straightforward float64 numpy version over one image's valid pixels."""
    p = np.maximum(p, 1e-6)
    d = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": np.mean(np.abs(p - g) / g),
        "sq_rel": np.mean((p - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)),
        "rmse_log": np.sqrt(np.mean(d**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "silog": 100 * np.sqrt(np.mean(d**2) - np.mean(d) ** 2),
        **{f"delta{k}": np.mean(ratio < 1.25**k) for k in (1, 2, 3)},
    }


def test_metrics_match_numpy_reference_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 20, (4, 17, 23))
    pred = gt * rng.lognormal(0, 0.3, gt.shape)
    pred[:, 0, :4] = [-1.0, 0.0, 1e-9, -3.0]  # non-positive predictions are clamped to 1e-6
    mask = rng.random(gt.shape) > 0.3
    ours = depth_metrics(
        torch.from_numpy(pred).float(), torch.from_numpy(gt), torch.from_numpy(mask)
    )
    p32 = torch.from_numpy(pred).float().double().numpy()  # same float32 input as ours
    for b in range(gt.shape[0]):
        ref = _reference_metrics(p32[b][mask[b]], gt[b][mask[b]])
        for name in METRICS:
            assert float(ours[name][b]) == pytest.approx(ref[name], rel=1e-6, abs=1e-9), name


def test_least_squares_recovers_scale_shift_exactly() -> None:
    gt = torch.rand(3, 8, 9, dtype=torch.float64) * 9 + 1
    pred = (gt - 0.7) / 2.5
    mask = torch.rand(3, 8, 9) > 0.2
    res = align(pred, gt, mask, "least_squares", RANGE)
    assert res.scale.tolist() == pytest.approx([2.5] * 3, rel=1e-10)
    assert res.shift.tolist() == pytest.approx([0.7] * 3, rel=1e-10)
    torch.testing.assert_close(res.aligned[mask], gt[mask], rtol=1e-10, atol=1e-10)
    assert not res.degenerate.any()


def test_disparity_fit_recovers_inverse_depth_affine() -> None:
    gt = torch.rand(2, 6, 7, dtype=torch.float64) * 9 + 1
    mask = torch.ones_like(gt, dtype=torch.bool)
    disparity = 3.0 / gt + 0.1  # affine-invariant disparity
    res = align(disparity, gt, mask, "least_squares_disparity", RANGE, "disparity")
    assert res.scale.tolist() == pytest.approx([1 / 3] * 2, rel=1e-10)
    assert res.shift.tolist() == pytest.approx([-0.1 / 3] * 2, rel=1e-8)
    torch.testing.assert_close(res.aligned, gt, rtol=1e-10, atol=1e-10)
    # A depth prediction is inverted first: depth d with 1/gt = s / d + t is recovered.
    depth_pred = 1.0 / (2.0 / gt - 0.05)
    res = align(depth_pred, gt, mask, "least_squares_disparity", RANGE)
    torch.testing.assert_close(res.aligned, gt, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="cannot align disparity"):
        align(disparity, gt, mask, "least_squares", RANGE, "disparity")


def test_median_and_none_and_clipping() -> None:
    gt = _t([[1.0, 2.0, 3.0, 10.0]])
    pred = gt / 4
    mask = torch.ones_like(gt, dtype=torch.bool)
    res = align(pred, gt, mask, "median", (1e-3, 5.0))
    assert float(res.scale[0]) == pytest.approx(4.0)  # median of 4 values: mean of the middle two
    assert res.aligned.flatten().tolist() == pytest.approx([1.0, 2.0, 3.0, 5.0])  # clipped at 5
    res = align(pred, gt, mask, "none", (0.5, 5.0))
    assert res.aligned.flatten().tolist() == pytest.approx([0.5, 0.5, 0.75, 2.5])


def test_robust_ignores_bad_ground_truth_where_least_squares_fails() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 30, 40, generator=gen, dtype=torch.float64) * 9 + 1
    pred = (gt - 0.7) / 2.5
    bad = torch.rand(2, 30, 40, generator=gen) < 0.15  # e.g. reflections measured far too deep
    gt = torch.where(bad, gt * 4 + 20, gt)
    mask = torch.ones_like(gt, dtype=torch.bool)
    robust = align(pred, gt, mask, "robust", RANGE)
    assert robust.scale.tolist() == pytest.approx([2.5] * 2, rel=1e-8)
    assert robust.shift.tolist() == pytest.approx([0.7] * 2, rel=1e-8)
    lsq = align(pred, gt, mask, "least_squares", RANGE)
    assert abs(float(lsq.scale[0]) - 2.5) > 0.1


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_masked_out_pixels_change_nothing(protocol: str) -> None:
    gen = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 10, 12, generator=gen, dtype=torch.float64) * 5 + 1
    pred = gt * 0.5 + 0.2 + 0.05 * torch.rand(2, 10, 12, generator=gen, dtype=torch.float64)
    mask = torch.rand(2, 10, 12, generator=gen) > 0.4
    space = "disparity" if protocol == "least_squares_disparity" else "depth"
    pred_in = 1.0 / pred if space == "disparity" else pred
    a = align(pred_in, gt, mask, protocol, RANGE, space)
    junk_pred = torch.where(mask, pred_in, torch.tensor(-1e6, dtype=torch.float64))
    junk_gt = torch.where(mask, gt, torch.tensor(math.nan, dtype=torch.float64))
    b = align(junk_pred, junk_gt, mask, protocol, RANGE, space)
    torch.testing.assert_close(a.scale, b.scale)
    torch.testing.assert_close(a.shift, b.shift)
    ma, mb = depth_metrics(a.aligned, gt, mask), depth_metrics(b.aligned, junk_gt, mask)
    for name in METRICS:
        torch.testing.assert_close(ma[name], mb[name])


def test_degenerate_images_are_nan_warned_and_counted() -> None:
    gt = torch.rand(3, 4, 4, dtype=torch.float64) + 1
    pred = torch.rand(3, 4, 4, dtype=torch.float64) + 1
    pred[1] = 2.0  # constant prediction
    mask = torch.ones(3, 4, 4, dtype=torch.bool)
    mask[2] = False
    mask[2, 0, 0] = True  # one valid pixel
    with pytest.warns(RuntimeWarning, match="2 of 3 image"):
        res = align(pred, gt, mask, "least_squares", RANGE)
    assert res.degenerate.tolist() == [False, True, True]
    assert res.num_degenerate == 2
    assert torch.isnan(res.scale[1:]).all() and torch.isnan(res.aligned[1:]).all()
    metrics = depth_metrics(res.aligned, gt, mask)
    assert math.isfinite(float(metrics["abs_rel"][0]))
    assert all(torch.isnan(v[1:]).all() for v in metrics.values())
    assert mean_over_images(metrics["abs_rel"])[1] == 1
    # A constant prediction is fine for median and none; no warning then.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not align(pred[:2], gt[:2], mask[:2], "median", RANGE).degenerate.any()
    with pytest.warns(RuntimeWarning):
        assert align(-pred, gt, mask, "median", RANGE).degenerate.all()  # median(p) <= 0


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown protocol 'bogus'; choose from \["):
        get_protocol("bogus")
    with pytest.raises(ValueError, match="unknown prediction space"):
        protocols_for("normals")
    assert protocols_for("disparity") == ["least_squares_disparity"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_align_and_metrics_on_gpu_match_cpu() -> None:
    gt = torch.rand(2, 32, 32, dtype=torch.float64) + 1
    pred, mask = gt * 0.3 + 0.1, torch.ones(2, 32, 32, dtype=torch.bool)
    for protocol in PROTOCOLS:
        space = "disparity" if protocol == "least_squares_disparity" else "depth"
        cpu = align(pred, gt, mask, protocol, RANGE, space)
        gpu = align(pred.cuda(), gt.cuda(), mask.cuda(), protocol, RANGE, space)
        torch.testing.assert_close(gpu.aligned.cpu(), cpu.aligned)


def test_object_abs_rel_scores_only_object_pixels_under_the_full_image_alignment():
    from modality_forcing.metrics.alignment import aligned_scores

    gt = torch.full((2, 4, 4), 2.0, dtype=torch.float64)
    gt[:, :, 2:] = 4.0  # two depths, so least squares is well posed
    pred = gt.clone()
    pred[0, 0, 0] = 3.0  # an error on an object pixel of image 0 (off by 0.5 relative)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    objects = torch.zeros_like(mask)
    objects[0, 0, :2] = True  # image 0: two object pixels; image 1: none
    _, plain = aligned_scores(pred, gt, mask, (1e-3, 10.0), "none")
    _, scored = aligned_scores(pred, gt, mask, (1e-3, 10.0), "none", objects=objects)
    assert "object_abs_rel" not in plain and scored["abs_rel"] == plain["abs_rel"]
    # image 0's objects: (0.5 + 0) / 2 pixels; image 1 has no objects and is left out
    assert scored["object_abs_rel"] == pytest.approx(0.25)
