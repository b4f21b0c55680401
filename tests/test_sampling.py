"""Scheduling matrices, the sampler loop, ensembles, and the pipeline's contract."""

import json

import numpy as np
import pytest
import torch

from modality_forcing.config import model_preset
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.model.denoiser import ModalityForcingModel
from modality_forcing.sampling.ensemble import ensemble_depth
from modality_forcing.sampling.sampler import SamplerConfig, sample
from modality_forcing.sampling.schedules import MODES, scheduling_matrix, tilt, time_shift


@pytest.mark.parametrize("mode", sorted(MODES))
def test_schedules_shape_and_monotone(mode):
    m = scheduling_matrix(mode, 10, shift_mu=1.1, log2_alpha=3.0)
    assert m.shape == (11, 2)
    assert (m[1:] <= m[:-1]).all() and (m >= 0).all() and (m <= 1).all()
    held = {"image_to_depth": 0, "depth_to_image": 1}.get(mode)
    if held is not None:
        assert (m[:, held] == 0).all()
    if mode == "marginal":
        assert (m[:, 1] == 1).all()
    else:
        assert (m[-1] == 0).all()


def test_tilt_and_shift():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(tilt(t, 0.0), t)
    assert (tilt(t, 5.0)[1:-1] > t[1:-1]).all() and (tilt(t, -3.0)[1:-1] < t[1:-1]).all()
    assert tilt(t, 5.0)[[0, -1]].tolist() == [0.0, 1.0]
    # 50-step grid with mu = 1.1 matches the official release's values (shared/reference).
    grid = time_shift(torch.linspace(1, 0, 51, dtype=torch.float64), 1.1)
    assert grid[25].item() == pytest.approx(0.75026, abs=1e-5)
    assert tilt(grid, 5.0)[25].item() == pytest.approx(0.98970, abs=1e-5)
    with pytest.raises(ValueError, match="unknown mode 'x'"):
        scheduling_matrix("x", 4)


def test_euler_is_exact_on_a_constant_velocity_field():
    v = {IMAGE: torch.full((1, 3, 2, 2), 0.7), DEPTH: torch.full((1, 1, 2, 2), -0.2)}

    def fn(x, t, text):  # image: velocity; depth: x0 prediction consistent with velocity v
        return {IMAGE: v[IMAGE], DEPTH: x[DEPTH] - t[DEPTH].view(-1, 1, 1, 1) * v[DEPTH]}

    sched = scheduling_matrix("joint", 7, shift_mu=1.1)
    g = torch.Generator().manual_seed(0)
    shapes = {IMAGE: (1, 3, 2, 2), DEPTH: (1, 1, 2, 2)}
    out = sample(fn, sched, (IMAGE, DEPTH), shapes, None, generator=g, cfg=SamplerConfig(t_min=0))
    g = torch.Generator().manual_seed(0)
    start = {m: torch.randn(shapes[m], generator=g) for m in (IMAGE, DEPTH)}
    for m in (IMAGE, DEPTH):  # x(0) = x(1) - v exactly, whatever the step sizes
        torch.testing.assert_close(out[m], start[m] - v[m], rtol=0, atol=1e-6)


def test_given_modality_is_bit_identical_and_absent_is_skipped():
    given = torch.rand(2, 1, 4, 4)
    seen = []

    def fn(x, t, text):
        seen.append(set(x))
        return {m: torch.randn_like(v) for m, v in x.items()}

    shapes = {IMAGE: (2, 3, 4, 4), DEPTH: (2, 1, 4, 4)}
    out = sample(fn, scheduling_matrix("depth_to_image", 5), (IMAGE, DEPTH), shapes, None,
                 given={DEPTH: given}, cfg=SamplerConfig(solver="heun"))  # fmt: skip
    assert torch.equal(out[DEPTH], given)
    out = sample(fn, scheduling_matrix("marginal", 3), (IMAGE, DEPTH), shapes, None)
    assert set(out) == {IMAGE} and seen[-1] == {IMAGE}
    with pytest.raises(ValueError, match="held clean by this schedule but not given"):
        sample(fn, scheduling_matrix("image_to_depth", 3), (IMAGE, DEPTH), shapes, None)


def test_ensemble_aligns_scales_and_measures_spread():
    base = torch.rand(1, 1, 8, 8) + 0.5
    base = base / base.mean()
    samples = torch.cat([base * s for s in (0.5, 1.0, 2.0)])
    depth, unc = ensemble_depth(samples)
    torch.testing.assert_close(depth, base, rtol=1e-5, atol=1e-5)
    assert unc.abs().max() < 1e-5  # same shape up to scale -> no disagreement
    noisy = base * (1 + 0.1 * torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    _, unc = ensemble_depth(noisy)
    assert unc.shape == (1, 1, 8, 8) and unc.mean() > 0.01


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.resolution = (16, 16)
    model = ModalityForcingModel(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a random (not zero-initialised) network, so outputs vary
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return ModalityForcingPipeline(model)


def test_pipeline_modes_shapes_and_letterbox(pipe):
    out = pipe(prompt=["a red sphere", "a blue box"], mode="joint", num_inference_steps=2)
    assert out.image.shape == (2, 16, 16, 3) and out.image.dtype == np.uint8
    assert out.depth.shape == (2, 16, 16) and out.uncertainty is None
    photo = np.random.default_rng(0).integers(0, 255, (20, 36, 3), dtype=np.uint8)
    out = pipe(image=photo, mode="image_to_depth", num_inference_steps=2, ensemble_size=3)
    assert out.depth.shape == (1, 20, 36) and out.uncertainty.shape == (1, 20, 36)
    assert np.array_equal(out.image[0], photo)  # the given image comes back untouched
    assert out.depth.mean() == pytest.approx(1.0, rel=0.05)
    depth = np.random.default_rng(1).uniform(1, 5, (24, 12)).astype(np.float32)
    out = pipe(prompt="x", depth=depth, mode="depth_to_image", num_inference_steps=2)
    assert out.image.shape == (1, 24, 12, 3)
    np.testing.assert_allclose(out.depth[0], depth / depth.mean(), rtol=1e-5)
    pil = pipe(prompt="x", mode="marginal", num_inference_steps=2, output_type="pil")
    assert pil.image[0].size == (16, 16) and pil.depth is None


def test_pipeline_reproducible_with_a_generator(pipe):
    a = pipe(prompt="a", num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    b = pipe(prompt="a", num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    c = pipe(prompt="a", num_inference_steps=3, generator=torch.Generator().manual_seed(8))
    assert np.array_equal(a.depth, b.depth) and not np.array_equal(a.depth, c.depth)


def test_pipeline_errors(pipe):
    with pytest.raises(ValueError, match="mode 'image_to_depth' needs `image`"):
        pipe(mode="image_to_depth")
    with pytest.raises(ValueError, match="mode 'depth_to_image' needs `depth`"):
        pipe(prompt="a", mode="depth_to_image")
    with pytest.raises(TypeError, match="`image` must be a PIL image"):
        pipe(image="photo.png", mode="image_to_depth")
    with pytest.raises(ValueError, match=r"must be \[H, W, 3\]"):
        pipe(image=np.zeros((4, 4, 2)), mode="image_to_depth")
    with pytest.raises(ValueError, match="no valid"):
        pipe(depth=np.zeros((8, 8)), mode="depth_to_image")
    with pytest.raises(ValueError, match="unknown mode 'depth'"):
        pipe(mode="depth")
    with pytest.raises(ValueError, match="unknown output_type"):
        pipe(output_type="jpg")


def test_save_and_load_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = ModalityForcingPipeline.from_pretrained(tmp_path / "p", device="cpu")
    assert again.resolution == (16, 16)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = pipe(prompt="a", num_inference_steps=2, generator=g())
    b = again(prompt="a", num_inference_steps=2, generator=g())
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)


def test_a_checkpoints_own_guidance_is_the_pipelines_default(pipe, tmp_path, capsys):
    from modality_forcing.cli import main
    from modality_forcing.training.checkpoint import META, export_checkpoint

    pipe.save_pretrained(tmp_path / "p")
    own = {"guidance": {"depth_to_image": 1.5}, "steps": {"image_to_depth": 1}}
    export_checkpoint(tmp_path / "p", tmp_path / "e", "float32", sampling=own)
    again = ModalityForcingPipeline.from_pretrained(tmp_path / "e", device="cpu")
    assert again.defaults["depth_to_image"].guidance == 1.5
    assert again.defaults["image_to_depth"].steps == 1 and again.defaults["joint"].steps == 25
    assert again.defaults["joint"].guidance == pipe.defaults["joint"].guidance == 3.0
    depth = np.random.default_rng(1).uniform(1, 5, (16, 16)).astype(np.float32)
    run = lambda p, **kw: p(prompt="a red box", depth=depth, mode="depth_to_image",  # noqa: E731
                            num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                            **kw).image  # fmt: skip
    assert np.array_equal(run(again), run(again, guidance_scale=1.5))
    assert not np.array_equal(run(again), run(pipe))  # the format default, 3.0
    again.save_pretrained(tmp_path / "s")  # kept by a round trip
    kept = ModalityForcingPipeline.from_pretrained(tmp_path / "s", device="cpu")
    assert kept.defaults == again.defaults
    meta = json.loads((tmp_path / "e" / META).read_text())
    meta["sampling"]["guidance"]["depth_to_image"] = "high"
    (tmp_path / "e" / META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json' sampling\.guidance: 'depth_to_image' "
                                         r"must be float >= 0, got 'high'"):  # fmt: skip
        ModalityForcingPipeline.from_pretrained(tmp_path / "e", device="cpu")
    with pytest.raises(SystemExit):
        main(["export-checkpoint", str(tmp_path / "p"), "--out", str(tmp_path / "x"),
              "--guidance", "joint"])  # fmt: skip
    assert "--guidance 'joint' is not MODE=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-checkpoint", str(tmp_path / "p"), "--out", str(tmp_path / "x"),
              "--steps", "depth=2"])  # fmt: skip
    assert "sampling.steps: unknown mode 'depth'" in capsys.readouterr().err


def test_replacement_imposes_the_noised_given_at_every_step():
    """Shared-t baseline conditioning: the network sees the given image noised to the current t
    with one noise draw, the depth moves, and the given comes back unchanged."""
    shapes = {IMAGE: (2, 3, 4, 4), DEPTH: (2, 1, 4, 4)}
    image = torch.randn(shapes[IMAGE], generator=torch.Generator().manual_seed(1))
    seen = []

    def fn(x, t, text):
        seen.append((x[IMAGE].clone(), t[IMAGE].clone()))
        return {IMAGE: torch.zeros_like(x[IMAGE]), DEPTH: torch.full_like(x[DEPTH], 0.5)}

    from modality_forcing.bench.common import imposed_by_replacement

    schedule = scheduling_matrix("shared", 4)
    assert torch.equal(schedule[:, 0], schedule[:, 1])  # one shared t
    out = sample(fn, schedule, (IMAGE, DEPTH), shapes, None,
                 generator=torch.Generator().manual_seed(0),
                 before_call=imposed_by_replacement({IMAGE: image}))  # fmt: skip
    noise = torch.randn(shapes[IMAGE], generator=torch.Generator().manual_seed(0))  # first draw
    assert len(seen) == 4
    for x, t in seen:
        tt = t[0].item()
        torch.testing.assert_close(x, (1 - tt) * image + tt * noise)
    torch.testing.assert_close(out[DEPTH], torch.full_like(out[DEPTH], 0.5))  # x0 readout


def test_replacement_with_fresh_noise_draws_anew_at_every_step():
    """The tuned shared-t baseline's variant: the first step uses the sampler's initial draw,
    every later step a new draw from the given generator (so the steps' noises differ)."""
    from modality_forcing.bench.common import imposed_by_replacement

    shapes = {IMAGE: (1, 3, 4, 4), DEPTH: (1, 1, 4, 4)}
    image = torch.zeros(shapes[IMAGE])  # the state is then exactly t * noise
    seen = []

    def fn(x, t, text):
        seen.append(x[IMAGE].clone() / t[IMAGE][0])
        return {IMAGE: torch.zeros_like(x[IMAGE]), DEPTH: torch.zeros_like(x[DEPTH])}

    fresh = torch.Generator().manual_seed(7)
    sample(fn, scheduling_matrix("shared", 3), (IMAGE, DEPTH), shapes, None,
           generator=torch.Generator().manual_seed(0),
           before_call=imposed_by_replacement({IMAGE: image}, fresh))  # fmt: skip
    first = torch.randn(shapes[IMAGE], generator=torch.Generator().manual_seed(0))
    again = torch.Generator().manual_seed(7)
    expected = [first, *(torch.randn(shapes[IMAGE], generator=again) for _ in range(2))]
    assert len(seen) == 3
    for got, want in zip(seen, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["x0", "velocity"])
def test_one_euler_step_reads_out_x0_in_either_parametrisation(kind):
    shapes = {IMAGE: (2, 3, 4, 4), DEPTH: (2, 1, 4, 4)}
    image, target = torch.randn(shapes[IMAGE]), torch.rand(shapes[DEPTH])

    def fn(x, t, text):  # a perfect denoiser for a point-mass depth distribution
        v = (x[DEPTH] - target) / t[DEPTH][:, None, None, None]
        return {DEPTH: target if kind == "x0" else v}

    out = sample(fn, scheduling_matrix("image_to_depth", 1), (IMAGE, DEPTH), shapes, None,
                 given={IMAGE: image}, cfg=SamplerConfig(prediction={DEPTH: kind}))  # fmt: skip
    torch.testing.assert_close(out[DEPTH], target)


def test_pipeline_stretch_frame_fills_the_working_size(pipe):
    photo = np.random.default_rng(0).integers(0, 255, (20, 36, 3), dtype=np.uint8)
    seen = []
    forward = pipe.model.forward

    def spy(xt, t, text):
        seen.append(xt["image"].clone())
        return forward(xt, t, text)

    pipe.model.forward = spy
    try:
        out = pipe(image=photo, mode="image_to_depth", num_inference_steps=1, frame="stretch")
        boxed = pipe(image=photo, mode="image_to_depth", num_inference_steps=1)
    finally:
        del pipe.model.forward
    assert out.depth.shape == boxed.depth.shape == (1, 20, 36)
    stretched, letterboxed = seen[0], seen[1]
    assert (letterboxed[..., 0, :] == -1).all()  # black bars on top of the 16x16 frame
    assert not (stretched[..., 0, :] == -1).all()  # stretched content reaches every row
    with pytest.raises(ValueError, match="unknown frame 'crop'"):
        pipe(image=photo, mode="image_to_depth", frame="crop")


def test_diffusers_style_arguments(pipe, capsys):
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    prompts = ["a red box", "a blue sphere", "a green cone"]
    # batch_size: two inputs at a time, as two calls sharing the generator would give
    parts = pipe(prompt=prompts, mode="joint", num_inference_steps=2, generator=g(), batch_size=2)
    shared = g()
    by_hand = [pipe(prompt=chunk, mode="joint", num_inference_steps=2, generator=shared)
               for chunk in (prompts[:2], prompts[2:])]  # fmt: skip
    assert parts.image.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(parts.image, np.concatenate([o.image for o in by_hand]))
    np.testing.assert_array_equal(parts.depth, np.concatenate([o.depth for o in by_hand]))
    # processing_resolution: another working size; match_input_resolution=False keeps it
    photo = np.random.default_rng(0).integers(0, 256, (24, 48, 3), dtype=np.uint8)
    call = {"image": photo, "mode": "image_to_depth", "num_inference_steps": 1}
    back = pipe(**call, processing_resolution=32)
    kept = pipe(**call, processing_resolution=32, match_input_resolution=False)
    assert back.depth.shape == (1, 24, 48) and kept.depth.shape == (1, 16, 32)  # unpadded
    # ensembling_kwargs picks the reduction; unknown keys are refused
    mean = pipe(**call, ensemble_size=3, generator=g(), ensembling_kwargs={"reduction": "mean"})
    median = pipe(**call, ensemble_size=3, generator=g())
    assert not np.allclose(mean.depth, median.depth)
    with pytest.raises(ValueError, match="unknown ensembling_kwargs"):
        pipe(**call, ensembling_kwargs={"weights": 1})
    # callback_on_step_end sees every step and may replace the state; latents fix the noise
    seen = []

    def zero_depth(p, step, t, kwargs):
        seen.append((step, float(t["depth"][0])))
        return {"latents": {"depth": torch.zeros_like(kwargs["latents"]["depth"])}}

    noise = {"image": torch.randn(1, 3, 16, 16, generator=g()),
             "depth": torch.randn(1, 1, 16, 16, generator=g())}  # fmt: skip
    run = lambda x: pipe(prompt="a box", mode="joint", num_inference_steps=3,  # noqa: E731
                         latents=x, output_type="pt")  # fmt: skip
    a, b = run(noise), run(noise)  # no generator: all the noise was given, none drawn
    torch.testing.assert_close(a.depth, b.depth)
    assert not torch.allclose(run({**noise, "depth": -noise["depth"]}).depth, a.depth)
    pair = {m: torch.cat([x, -x]) for m, x in noise.items()}  # latents split with the batch
    both = pipe(prompt=["a box", "a box"], mode="joint", num_inference_steps=3, latents=pair,
                output_type="pt", batch_size=1)  # fmt: skip
    torch.testing.assert_close(both.depth[:1], a.depth)
    pipe(prompt="a box", mode="joint", num_inference_steps=3, callback_on_step_end=zero_depth)
    assert [s for s, _ in seen] == [0, 1, 2] and seen[-1][1] == 0.0
    with pytest.raises(ValueError, match="latents"):
        pipe(**call, ensemble_size=2, latents=noise)
    # the progress bar is off by default and on when asked
    pipe(prompt="a box", mode="joint", num_inference_steps=2)
    assert "joint" not in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=False)
    pipe(prompt="a box", mode="joint", num_inference_steps=2)
    pipe.set_progress_bar_config(disable=True)
    assert "joint" in capsys.readouterr().err


def test_repaint_resampling_rows_and_renoise():
    from modality_forcing.sampling.sampler import renoise
    from modality_forcing.sampling.schedules import resampled

    base = scheduling_matrix("image_to_depth", 2)
    rows = resampled(base, 2)[:, 1].tolist()
    assert rows == [1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0]
    assert torch.equal(resampled(base, 0), base)
    # re-noising keeps the flow path's marginal: x_t = (1 - t) x0 + t eps at the new level
    g = torch.Generator().manual_seed(0)
    x0, n = 0.7, 200_000
    t_now, t_next = torch.full((n,), 0.3), torch.full((n,), 0.8)
    x = (1 - 0.3) * x0 + 0.3 * torch.randn(n, 1, generator=g)
    up = renoise(x, t_now, t_next, torch.randn(n, 1, generator=g))
    assert abs(float(up.mean()) - (1 - 0.8) * x0) < 0.01 and abs(float(up.std()) - 0.8) < 0.01


def test_sampler_calls_the_network_only_on_falling_rows():
    from modality_forcing.sampling.schedules import resampled

    calls = []

    def fn(x, t, cond):
        calls.append(float(t[DEPTH][0]))
        return {DEPTH: torch.zeros_like(x[DEPTH])}

    schedule = resampled(scheduling_matrix("image_to_depth", 3), 1)
    shapes = {IMAGE: (1, 3, 4, 4), DEPTH: (1, 1, 4, 4)}
    sample(fn, schedule, (IMAGE, DEPTH), shapes, None, given={IMAGE: torch.zeros(1, 3, 4, 4)},
           generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(calls) == 3 * 2  # each of 3 steps taken twice; the 3 jumps back call nothing
