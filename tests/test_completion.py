"""Depth completion (issue 23): known points in every input form, clear refusals, metric scale
from the points, the hint input and its training share, the baselines, CLI and bench."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from modality_forcing import ModalityForcingPipeline
from modality_forcing.config import model_preset, resolve_train_config
from modality_forcing.data.batch import collate
from modality_forcing.data.inputs import InputError
from modality_forcing.data.procedural import SceneConfig, render_split
from modality_forcing.data.sparse_points import sparse_map
from modality_forcing.flow.noise_levels import IMAGE_CLEAN
from modality_forcing.inference.completion import (
    fit_to_points,
    frame_points,
    guided_depth,
    interpolate_points,
    least_squares_to_points,
    residual_interpolation,
)
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.model.denoiser import ModalityForcingModel
from modality_forcing.sampling.config import SamplingConfig
from modality_forcing.training.checkpoint import write_checkpoint
from modality_forcing.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(hint: bool, seed: int = 3, refine: int = 0) -> ModalityForcingModel:
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.resolution, cfg.depth_hint, cfg.refine_width = (16, 16), hint, refine
    model = ModalityForcingModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a random (not zero-initialised) network, so outputs vary
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def scene():
    return render_split("test", 0, 1, SceneConfig(height=24, width=32, shadows=False))[0]


def _points(depth: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).choice(np.flatnonzero(depth > 0), n, replace=False)
    out = np.zeros_like(depth)
    out.flat[idx] = depth.flat[idx]
    return out


@pytest.mark.parametrize(("hint", "post"), [(False, "paste"), (True, "paste"), (True, "fit"),
                                           (True, "residual")])  # fmt: skip
def test_completion_keeps_known_points(scene, hint, post):
    pipe = ModalityForcingPipeline(_model(hint))
    sparse = _points(scene["depth"], 40)
    out = pipe(image=scene["image"], sparse_depth=sparse, mode="depth_completion",
               sampling=SamplingConfig(steps=2, completion_post=post),
               generator=torch.Generator().manual_seed(1))  # fmt: skip
    d, known = out.depth[0], sparse > 0
    assert d.shape == scene["depth"].shape and np.isfinite(d).all() and (d >= 0).all()
    np.testing.assert_allclose(d[known], sparse[known], rtol=1e-5)


@pytest.mark.parametrize("post", ["paste", "fit", "residual"])
def test_scale_is_recovered_exactly_from_the_points(post):
    """A training scene's depth scaled by k gets the same completion, scaled: the points' mean
    fixes the metric scale, with no ground-truth alignment."""
    scene = render_split("train", 3, 1, SceneConfig(height=24, width=32, shadows=False))[0]
    pipe = ModalityForcingPipeline(_model(True))
    sparse = _points(scene["depth"], 60)

    def run(k):
        gen = torch.Generator().manual_seed(5)
        return pipe(image=scene["image"], sparse_depth=sparse * k, mode="depth_completion",
                    sampling=SamplingConfig(steps=2, completion_post=post),
                    generator=gen).depth[0]  # fmt: skip

    base = run(1.0)
    for k in (0.25, 3.0, 40.0):
        np.testing.assert_allclose(run(k), k * base, rtol=1e-4)


def test_the_hint_input_changes_the_prediction_and_starts_at_zero(scene):
    model = _model(True)
    image = torch.from_numpy(scene["image"]).permute(2, 0, 1)[None].float() / 127.5 - 1
    image = torch.nn.functional.interpolate(image, size=(16, 16))
    xt = {IMAGE: image, DEPTH: torch.randn(1, 1, 16, 16)}
    t = {IMAGE: torch.zeros(1), DEPTH: torch.full((1,), 0.7)}
    hint = torch.zeros(1, 2, 16, 16)
    hint[:, 0, ::3, ::3], hint[:, 1, ::3, ::3] = 0.9, 1.0
    with torch.no_grad():
        plain, nothing = model(xt, t, [""]), model(xt, t, [""], hint=torch.zeros_like(hint))
        given = model(xt, t, [""], hint=hint)
        assert torch.equal(plain[DEPTH], nothing[DEPTH])  # nothing known adds exactly nothing
        assert not torch.allclose(plain[DEPTH], given[DEPTH])
        fresh = ModalityForcingModel(model.cfg)  # as built: the hint embedding is zero
        fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "hint" not in k},
                              strict=False)  # fmt: skip
        assert torch.equal(fresh(xt, t, [""], hint=hint)[DEPTH], fresh(xt, t, [""])[DEPTH])
    with pytest.raises(ValueError, match="no input for known depth points"):
        _model(False)(xt, t, [""], hint=hint)


@pytest.mark.parametrize(
    ("sparse", "mask", "message"),
    [
        (np.zeros((24, 32)), None, "no known point"),
        (np.full((24, 32), np.nan), None, "NaN or infinite"),
        (-np.ones((24, 32)), None, "negative depths"),
        (np.ones((12, 32)), None, r"is 32x12 pixels but the image is 32x24"),
        (np.ones((24, 32)), np.ones((24, 31), bool), "the mask has shape"),
        (np.array([[40.0, 3.0, 2.0]]), None, "outside the 32x24 image"),
        (np.array([[4.0, 3.0, -2.0]]), None, "depth <= 0"),
    ],
)
def test_bad_points_get_clear_errors(scene, sparse, mask, message):
    pipe = ModalityForcingPipeline(_model(False))
    with pytest.raises(InputError, match=message):
        pipe(image=scene["image"], sparse_depth=sparse, sparse_mask=mask, mode="depth_completion")


def test_points_in_every_file_form_agree(scene, tmp_path):
    sparse = _points(scene["depth"], 30).astype(np.float32)
    np.save(tmp_path / "m.npy", sparse)
    Image.fromarray(np.round(sparse * 1000).astype(np.uint16)).save(tmp_path / "mm.png")
    np.savez(tmp_path / "p.npz", depth=sparse, mask=sparse > 0)
    rows, cols = np.nonzero(sparse)
    np.save(tmp_path / "xyz.npy", np.stack([cols + 0.5, rows + 0.5, sparse[rows, cols]], 1))
    size = sparse.shape
    ref, known = sparse_map(sparse, None, size)
    for name in ("m.npy", "mm.png", "p.npz", "xyz.npy"):
        d, k = sparse_map(tmp_path / name, None, size)
        assert np.array_equal(k, known), name
        np.testing.assert_allclose(d, ref, atol=6e-4, err_msg=name)  # png: whole millimetres
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="not a sparse depth file"):
        sparse_map(tmp_path / "x.txt", None, size)


def test_framing_keeps_every_point():
    depth = torch.zeros(1, 1, 64, 64)
    depth[0, 0, 5, 7], depth[0, 0, 6, 6], depth[0, 0, 40, 50] = 2.0, 4.0, 9.0
    points, hit, _ = frame_points(depth, depth > 0, (16, 16))
    assert int(hit.sum()) == 2  # two points share one working pixel
    assert points[0, 0, 1, 1] == pytest.approx(3.0) and points[0, 0, 10, 12] == pytest.approx(9.0)


def test_baselines():
    g = torch.Generator().manual_seed(0)
    rel = torch.rand(2, 1, 8, 8, generator=g) + 0.5
    truth = 3.0 * rel + 0.7
    known = torch.rand(2, 1, 8, 8, generator=g) < 0.3
    s, _ = least_squares_to_points(rel.double(), truth.double(), known)
    torch.testing.assert_close(s, torch.full((2,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(fit_to_points(rel, truth * known, known), truth)
    plane = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8) + 1  # linear in x
    corners = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    corners[..., 0, 0] = corners[..., 0, 7] = corners[..., 7, 0] = corners[..., 7, 7] = True
    torch.testing.assert_close(interpolate_points(plane * corners, corners), plane)
    bent = plane + torch.linspace(0, 1, 8).view(1, 1, 8, 1)  # the truth: off by a linear ramp
    torch.testing.assert_close(residual_interpolation(plane, bent * corners, corners), bent)
    model = _model(False)
    image = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    depth = torch.rand(2, 1, 16, 16, generator=g) * 4 + 1
    pts = torch.rand(2, 1, 16, 16, generator=g) < 0.2
    free = guided_depth(model, image, depth, pts, 2, 0.0, torch.Generator().manual_seed(1))
    pulled = guided_depth(model, image, depth, pts, 2, 0.5, torch.Generator().manual_seed(1))
    assert (free > 0).all() and not torch.allclose(free, pulled)

    def error(d):
        return float(((d - depth).abs() / depth)[pts].mean())

    assert error(pulled) < error(free)  # guidance moves the prediction toward the points


def _save(path, model):
    write_checkpoint(path, model.cfg, model.state_dict(), {"stage": "mf"})


def _train_cfg(tmp_path, **extra):
    base = {
        "preset": "tiny", "out_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 2,
        "precision": "fp32", "log_every": 1, "sample_every": 0, "ckpt_every": 100,
        "data": {"height": 16, "width": 16, "shadows": False},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "schedule": "constant", "ema_decay": 0.0},
    }  # fmt: skip
    return resolve_train_config(base, [f"{k}={v}" for k, v in extra.items()])


def test_completion_training_share(tmp_path):
    batch = collate(render_split("train", 0, 8, SceneConfig(height=16, width=16, shadows=False)))
    plain = Trainer(_train_cfg(tmp_path, **{"model.depth_hint": "true"})).prepare(batch, 100)
    cfg = _train_cfg(tmp_path, **{"model.depth_hint": "true", "forcing.p_completion": 1.0})
    fb = Trainer(cfg).prepare(batch, 100)
    # the other draws of the run do not move when completion is switched on
    assert all(torch.equal(fb.t[m], plain.t[m]) for m in fb.t)
    assert torch.equal(fb.noise[DEPTH], plain.noise[DEPTH])
    known = fb.hint[:, 1].bool()
    has = known.flatten(1).any(1)
    assert torch.equal(has, fb.draws.levels.corner == IMAGE_CLEAN) and has.any()
    assert (known <= fb.valid[:, 0]).all()  # points are measured pixels
    for i in torch.nonzero(has).flatten():  # depth normalised by the points' mean
        metric = batch["depth"][i, 0][known[i]]
        torch.testing.assert_close(fb.hint[i, 0][known[i]], fb.x0[DEPTH][i, 0][known[i]])
        assert not torch.allclose(fb.x0[DEPTH][i], plain.x0[DEPTH][i])
        assert metric.numel() >= 1
    with pytest.raises(ValueError, match=r"needs model\.depth_hint"):
        Trainer(_train_cfg(tmp_path, **{"forcing.p_completion": 0.5})).prepare(batch, 0)


def test_a_hint_model_trains_from_a_checkpoint_without_it(tmp_path):
    src = tmp_path / "src"
    source = _model(False, refine=8)
    _save(src, source)
    cfg = _train_cfg(tmp_path, **{"model.depth_hint": "true", "forcing.p_completion": 0.5,
                                  "init_from": str(src), "model.refine_width": 8})  # fmt: skip
    trainer = Trainer(cfg)
    model = trainer.model
    assert model.dit.hint_embed.weight.abs().sum() == 0
    conv = model.refine[DEPTH].net[0].weight  # the refiner's hint inputs: appended, zero
    old = source.refine[DEPTH].net[0].weight
    assert conv.shape[1] == old.shape[1] + 2 and conv[:, -2:].abs().sum() == 0
    torch.testing.assert_close(conv[:, :-2], old)
    x = {IMAGE: torch.rand(1, 3, 16, 16), DEPTH: torch.randn(1, 1, 16, 16)}
    t = {IMAGE: torch.zeros(1), DEPTH: torch.full((1,), 0.5)}
    hint = torch.ones(1, 2, 16, 16)
    with torch.no_grad():  # it computes what its source did, points or not
        torch.testing.assert_close(model.eval()(x, t, [""], hint=hint)[DEPTH],
                                   source(x, t, [""])[DEPTH])  # fmt: skip
    trainer.run()
    assert model.dit.hint_embed.weight.abs().sum() > 0  # it learns from the points
    assert model.refine[DEPTH].net[0].weight[:, -2:].abs().sum() > 0


def test_cli_depth_completion_writes_metric_depth(scene, tmp_path):
    ckpt = tmp_path / "ckpt"
    _save(ckpt, _model(True))
    Image.fromarray(scene["image"]).save(tmp_path / "img.png")
    np.save(tmp_path / "pts.npy", _points(scene["depth"], 25))
    run = [sys.executable, "-m", "modality_forcing", "sample", "--ckpt", str(ckpt),
           "--mode", "depth_completion", "--image", str(tmp_path / "img.png"),
           "--out", str(tmp_path / "out"), "--precision", "fp32"]  # fmt: skip
    done = subprocess.run([*run, "--sparse", str(tmp_path / "pts.npy")], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (meta,) = (tmp_path / "out").glob("*/metadata.json")
    info = json.loads(meta.read_text())
    assert info["depth_space"] == "metric" and info["mode"] == "depth_completion"
    depth = np.load(meta.parent / "depth.npy")
    sparse = np.load(tmp_path / "pts.npy")
    np.testing.assert_allclose(depth[sparse > 0], sparse[sparse > 0], rtol=1e-5)
    bad = subprocess.run(run, capture_output=True, text=True)
    assert bad.returncode != 0 and "needs --image FILE and --sparse FILE" in bad.stderr


def test_bench_completion_tiny(tmp_path):
    ckpt = tmp_path / "ckpt"
    _save(ckpt, _model(True))
    ref = tmp_path / "ref"
    _save(ref, _model(False))
    run = [sys.executable, "-m", "modality_forcing", "bench", "completion", "--budget", "tiny",
           "--ckpt", str(ckpt), "--reference", str(ref), "--out", str(tmp_path / "b"),
           "--patterns", "random:30", "lidar:16", "--precision", "fp32"]  # fmt: skip
    done = subprocess.run(run, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "bench completion: patterns: 100%" in done.stderr
    report = json.loads((tmp_path / "b" / "completion.json").read_text())
    for pattern in ("random:30", "lidar:16"):
        r = report["patterns"][pattern]
        ours = r["methods"]["ours"]
        assert ours["chosen_on_val"] in ours["val"]  # chosen on val, reported on test
        assert list(ours["test"]) == [ours["chosen_on_val"]]
        assert set(r["verdicts"]) == {"(a) image -> depth + LS fit", "(b) guidance + LS fit",
                                      "(a') (a) + residual interpolation",
                                      "(c) interpolation"}  # fmt: skip
        for v in r["verdicts"].values():
            assert v["verdict"] in ("holds", "not resolved", "does not hold")
    assert report["patterns"]["random:30"]["known_pixels_test"]["mean"] == 30
    assert "## lidar:16" in (tmp_path / "b" / "REPORT.md").read_text()
    assert (tmp_path / "b" / "examples_lidar16.png").stat().st_size > 0


def _png16(path, metres):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(metres * 256).astype(np.uint16)).save(path)


def test_eval_kitti_depth_completion_with_its_lidar_scan(scene, tmp_path):
    """`eval --dataset kitti_dc --sparse given` on files written in the devkit's layout."""
    ckpt = tmp_path / "ckpt"
    _save(ckpt, _model(True))
    root = tmp_path / "kitti" / "depth_selection" / "val_selection_cropped"
    rng = np.random.default_rng(0)
    for frame in ("0000000005", "0000000011"):
        gt = scene["depth"] * rng.uniform(2, 6)
        scan = np.where(rng.random(gt.shape) < 0.05, gt, 0)
        stem = "2011_09_26_drive_0002_sync_{}_" + frame + "_image_02.png"
        (root / "image").mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene["image"]).save(root / "image" / stem.format("image"))
        _png16(root / "velodyne_raw" / stem.format("velodyne_raw"), scan)
        _png16(root / "groundtruth_depth" / stem.format("groundtruth_depth"), gt)
    run = [sys.executable, "-m", "modality_forcing", "eval", "--dataset", "kitti_dc",
           "--data-root", str(tmp_path / "kitti"), "--ckpt", str(ckpt), "--sparse", "given",
           "--out", str(tmp_path / "ev"), "--precision", "fp32", "--steps", "2"]  # fmt: skip
    done = subprocess.run(run, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(summary["protocols"]) == {"none", "least_squares"}
    assert summary["protocols"]["none"]["num_scored"] == 2
    bad = subprocess.run([*run[:-6], "--sparse", "lidar:x", "--out", str(tmp_path / "e2")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "unknown point pattern 'lidar:x'" in bad.stderr


def test_completion_predictor_draws_fixed_points(tmp_path):
    from modality_forcing.data.benchmarks import get_benchmark
    from modality_forcing.inference.predict import CompletionPredictor

    ckpt = tmp_path / "ckpt"
    _save(ckpt, _model(True))
    bench = get_benchmark("procedural", None, split="test", num=2, height=32, width=32)
    for spec in ("random:40", "lidar:32"):
        predict = CompletionPredictor(ckpt, spec, precision="fp32")
        sample = bench[1]
        known = predict.known(sample)
        assert np.array_equal(known, predict.known(sample))  # one fixed draw per sample
        assert (known > 0).sum() == 40 if spec == "random:40" else (known > 0).sum() > 40
        np.testing.assert_allclose(known[known > 0], sample["depth"][known > 0])
        np.testing.assert_allclose(predict(sample)[known > 0], known[known > 0], rtol=1e-5)


def test_npz_points_are_refused_from_their_zip_directory(tmp_path):
    from modality_forcing.data.sparse_points import read_sparse

    np.savez_compressed(tmp_path / "p.npz", depth=np.zeros((30, 30)), mask=np.zeros((30, 30)))
    with pytest.raises(InputError, match="once decompressed, above"):
        read_sparse(tmp_path / "p.npz", max_pixels=10)  # 10 float64 values + header
    assert read_sparse(tmp_path / "p.npz", max_pixels=900)[0].shape == (30, 30)
    (tmp_path / "broken.npz").write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        read_sparse(tmp_path / "broken.npz")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read sparse depth"):
        read_sparse(tmp_path / "empty.npy")
