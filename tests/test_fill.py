"""Missing-pixel fill strategies for sparse depth: valid pixels follow the plain flow path exactly,
missing ones get what each strategy says, they never receive gradient, and sparse-only batches
train."""

import json

import numpy as np
import pytest
import torch

from modality_forcing.config import resolve_train_config
from modality_forcing.data.batch import collate
from modality_forcing.data.procedural import SceneConfig, render_split
from modality_forcing.data.sparsify import apply_sparsifier
from modality_forcing.flow.fill import FILLS, fill_missing, nearest_fill
from modality_forcing.flow.loss import flow_loss
from modality_forcing.flow.path import interpolate
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.training.loop import Trainer


def _case(seed=0, b=4, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, h, w, generator=g) * 1.5
    valid = torch.rand(b, 1, h, w, generator=g) > 0.6
    valid[:, :, 0, 0] = True
    x0 = torch.where(valid, x0, torch.ones_like(x0))  # normalize_depth's neutral fill
    noise = torch.randn(b, 1, h, w, generator=g)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])[:b]
    return x0, noise, t, valid


@pytest.mark.parametrize("strategy", sorted(FILLS))
def test_valid_pixels_follow_the_plain_path(strategy):
    x0, noise, t, valid = _case()
    plain = interpolate(x0, noise, t)
    x0_f, xt = fill_missing(x0, noise, t, valid, strategy)
    assert torch.equal(x0_f[valid], x0[valid]) and torch.equal(xt[valid], plain[valid])
    assert torch.equal(xt[0], plain[0]) and torch.equal(x0_f[0], x0[0])  # t = 0: a given, as is


def test_invalid_pixels_per_strategy():
    x0, noise, t, valid = _case()
    missing = ~valid
    _, xt = fill_missing(x0, noise, t, valid, "neutral")
    expected = (1 - t.view(-1, 1, 1, 1)) * 1.0 + t.view(-1, 1, 1, 1) * noise
    assert torch.allclose(xt[missing], expected.expand_as(xt)[missing])
    _, xt = fill_missing(x0, noise, t, valid, "noise")
    noised = missing & (t > 0).view(-1, 1, 1, 1)
    assert torch.equal(xt[noised], noise[noised])  # as if t = 1 there
    x0_f, xt = fill_missing(x0, noise, t, valid, "nearest")
    assert torch.equal(xt, interpolate(x0_f, noise, t))
    assert not torch.equal(x0_f[1][missing[1]], x0[1][missing[1]])  # filled, not neutral


def test_nearest_fill_takes_the_closest_valid_value():
    x = torch.tensor([[[[5.0, 1.0, 1.0, 1.0, 9.0]]]])
    valid = torch.tensor([[[[True, False, False, False, True]]]])
    assert nearest_fill(x, valid)[0, 0, 0, :2].tolist() == [5.0, 5.0]
    assert nearest_fill(x, valid)[0, 0, 0, 3:].tolist() == [9.0, 9.0]
    none = torch.zeros_like(valid)
    assert torch.equal(nearest_fill(x, none), x)  # no valid pixel: unchanged (neutral)


def test_unknown_fill_is_rejected():
    x0, noise, t, valid = _case()
    with pytest.raises(ValueError, match=r"unknown depth fill 'zero'; choose from \["):
        fill_missing(x0, noise, t, valid, "zero")


def _cfg(tmp_path, fill, **extra):
    base = {
        "preset": "tiny", "out_dir": str(tmp_path / f"run-{fill}"), "batch_size": 4,
        "max_steps": 3, "precision": "fp32", "log_every": 1, "sample_every": 0,
        "ckpt_every": 100, "data": {"height": 16, "width": 16, "shadows": False,
                                    "depth_fill": fill},
        "optim": {"lr": 2e-3, "warmup_steps": 1, "schedule": "constant", "ema_decay": 0.0},
    }  # fmt: skip
    return resolve_train_config(base, [f"{k}={v}" for k, v in extra.items()])


def _sparse_batch(n=8, spec="random:0.05"):
    samples = render_split("train", 0, n, SceneConfig(height=16, width=16, shadows=False))
    rngs = [np.random.default_rng(i) for i in range(n)]
    return collate([apply_sparsifier(s, spec, g) for s, g in zip(samples, rngs, strict=True)])


@pytest.mark.parametrize("fill", sorted(FILLS))
def test_invalid_pixels_get_no_gradient(tmp_path, fill):
    trainer = Trainer(_cfg(tmp_path, fill))
    batch = _sparse_batch(4)
    p = trainer.prepare(batch, start_index=5)
    pred = trainer.engine(p.xt, p.t, p.captions)
    pred[DEPTH].retain_grad()
    with torch.no_grad():  # garbage where nothing was measured must not leak into the loss
        pred[DEPTH][~p.valid] = float("nan")
    out = flow_loss(pred, p.x0, p.noise, p.t, p.active, trainer.cfg.loss, {DEPTH: p.valid})
    assert torch.isfinite(out.total)
    out.total.backward()
    grad = pred[DEPTH].grad
    assert (grad[~p.valid] == 0).all() and torch.isfinite(grad).all()
    assert grad[p.valid].abs().sum() > 0
    params = [q.grad for q in trainer.model.parameters() if q.grad is not None]
    assert params and all(torch.isfinite(g).all() for g in params)


@pytest.mark.parametrize("fill", sorted(FILLS))
def test_sparse_only_batch_lowers_the_valid_pixel_loss(tmp_path, fill):
    trainer = Trainer(_cfg(tmp_path, fill))
    batch = _sparse_batch(8)
    assert batch["valid_mask"].float().mean() < 0.06

    def depth_loss():
        with torch.no_grad():  # same indices -> same noise levels and noise
            return trainer.compute_loss(batch, start_index=321).per_modality[DEPTH].item()

    before = depth_loss()
    for step in range(20):
        trainer.optimizer.zero_grad()
        trainer.compute_loss(batch, start_index=1000 * step).total.backward()
        trainer.optimizer.step()
    assert depth_loss() < 0.8 * before


def test_a_mixture_of_only_sparse_members_trains(tmp_path):
    mixture = [{"name": "procedural", "weight": 1, "sparsify": "lidar:32"},
               {"name": "procedural", "weight": 1, "sparsify": "random:0.05"}]  # fmt: skip
    cfg = _cfg(tmp_path, "noise", **{"data.source": "mixture", "data.mixture": json.dumps(mixture)})
    trainer = Trainer(cfg)
    trainer.run()
    lines = [
        json.loads(x) for x in (tmp_path / "run-noise" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(r["bad_steps"] == 0 for r in lines)
    assert all(r["loss"][DEPTH] > 0 and r["loss"][IMAGE] > 0 for r in lines)
