"""The training loop: learning on a fixed batch, exact resume, checkpoints, bad steps, stages."""

import json
import math

import numpy as np
import pytest
import torch

from modality_forcing.config import OptimConfig, resolve_train_config
from modality_forcing.data.batch import collate
from modality_forcing.data.procedural import SceneConfig, render_split
from modality_forcing.modalities import DEPTH, IMAGE
from modality_forcing.training.checkpoint import load_model, read_meta
from modality_forcing.training.loop import Trainer, copy_image_stream_to_depth, train
from modality_forcing.training.optim import lr_factor


def _cfg(tmp_path, name="run", **extra):
    base = {
        "preset": "tiny", "out_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 6,
        "precision": "fp32", "log_every": 2, "sample_every": 0, "ckpt_every": 100,
        "data": {"height": 16, "width": 16, "shadows": False},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "ema_decay": 0.9},
    }  # fmt: skip
    overrides = [f"{k}={v}" for k, v in extra.items()]
    return resolve_train_config(base, overrides)


def test_twenty_steps_on_a_fixed_batch_lower_the_loss(tmp_path):
    cfg = _cfg(tmp_path, **{"optim.warmup_steps": 1, "optim.schedule": "constant"})
    trainer = Trainer(cfg)
    batch = collate(render_split("train", 0, 8, SceneConfig(height=16, width=16, shadows=False)))

    def loss_at_fixed_noise():
        with torch.no_grad():  # same sample indices -> the same noise levels and noise
            out = trainer.compute_loss(batch, start_index=123)
        return out.per_modality[IMAGE].item() + out.per_modality[DEPTH].item()

    before = loss_at_fixed_noise()
    for step in range(20):
        trainer.optimizer.zero_grad()
        out = trainer.compute_loss(batch, start_index=1000 * step)
        out.total.backward()
        trainer.optimizer.step()
    assert loss_at_fixed_noise() < 0.8 * before


def test_resume_is_bit_exact(tmp_path):
    straight = Trainer(_cfg(tmp_path, "a"))
    straight.run()
    first = Trainer(_cfg(tmp_path, "b"))
    first.run(stop_at=3)
    resumed = Trainer(_cfg(tmp_path, "b"), resume=True)
    assert resumed.state.step == 3
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # fp32 on CPU: deterministic, bit-for-bit
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 3, 4, 6]  # step 3: the stop_at log
    bins = lines[0]["loss_t_bins"]  # per-t-bin losses of both modalities are logged
    assert set(bins) == {IMAGE, DEPTH} and len(bins[DEPTH]) == 10
    assert any(v is not None and v > 0 for v in bins[DEPTH])


def test_checkpoint_round_trip_and_no_leftovers(tmp_path):
    cfg = _cfg(tmp_path, **{"max_steps": 2})
    final = train(cfg)
    model = load_model(final)
    trainer_weights = Trainer(cfg, resume=True).ema.shadow  # EMA restored from the sharded state
    for k, v in model.state_dict().items():
        assert torch.equal(v, trainer_weights[k])
    assert read_meta(final)["step"] == 2
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.old"))
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        load_model(tmp_path)


def test_non_finite_losses_are_skipped_then_stop(tmp_path):
    trainer = Trainer(_cfg(tmp_path, **{"max_bad_steps": 3}))
    with torch.no_grad():
        trainer.model.dit.final[IMAGE].linear.bias.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        trainer.run()
    assert trainer.state.bad_total == 3


def test_t2i_then_post_training_copies_the_image_stream(tmp_path):
    stage1 = train(_cfg(tmp_path, "t2i", stage="t2i", max_steps=2))
    assert read_meta(stage1)["stage"] == "t2i"
    trainer = Trainer(_cfg(tmp_path, "mf", init_from=str(stage1)))
    sd = trainer.model.state_dict()
    key = "dit.joint_blocks.0.attn.depth.qkv.weight"
    assert torch.equal(sd[key], sd[key.replace(".depth.", ".image.")])
    assert copy_image_stream_to_depth(trainer.model) > 10
    trainer.run()  # post-training runs from there


def test_sparse_only_batches_train(tmp_path):
    cfg = _cfg(tmp_path, **{"data.sparsify": "random:0.05", "data.sparse_fraction": 1.0})
    trainer = Trainer(cfg)
    trainer.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(x)["bad_steps"] == 0 for x in lines)
    from PIL import Image

    with Image.open(tmp_path / "run" / "loss.png") as plot:  # refreshed at each checkpoint
        assert plot.size[0] > 500


def test_a_failing_loss_plot_does_not_stop_training(tmp_path, monkeypatch, capsys):
    from modality_forcing.training import curves

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(curves, "plot_training_curves", broken)
    final = train(_cfg(tmp_path, "noplot", max_steps=2))
    assert final.is_dir() and not (tmp_path / "noplot" / "loss.png").exists()
    assert "loss.png not refreshed: no display" in capsys.readouterr().out


def test_keep_checkpoints_zero_keeps_every_checkpoint(tmp_path):
    train(_cfg(tmp_path, "all", **{"max_steps": 4, "ckpt_every": 1, "keep_checkpoints": 0}))
    train(_cfg(tmp_path, "two", **{"max_steps": 4, "ckpt_every": 1}))
    names = lambda run: sorted(p.name for p in (tmp_path / run / "checkpoints").glob("step_*"))  # noqa: E731
    assert names("all") == [f"step_{i:07d}" for i in (1, 2, 3, 4)]
    assert names("two") == ["step_0000003", "step_0000004"]


def test_velocity_parametrised_depth_trains_and_samples(tmp_path):
    from modality_forcing.inference.pipeline import ModalityForcingPipeline

    cfg = _cfg(tmp_path, **{"max_steps": 2, "model.depth_prediction": "velocity"})
    trainer = Trainer(cfg)
    batch = collate(render_split("train", 0, 4, SceneConfig(height=16, width=16, shadows=False)))
    out = trainer.compute_loss(batch, start_index=0)
    assert torch.isfinite(out.total) and out.per_modality[DEPTH] > 0
    pipe = ModalityForcingPipeline.from_pretrained(train(cfg))
    assert pipe.model.cfg.depth_prediction == "velocity"
    depth = pipe(image=(batch["image"][:1] + 1) / 2, mode="image_to_depth",
                 num_inference_steps=2).depth  # fmt: skip
    assert depth.shape == (1, 16, 16) and torch.isfinite(torch.as_tensor(depth)).all()


def test_optimizer_is_fused_on_plain_tensors_and_matches_the_default_update():
    from modality_forcing.config import OptimConfig
    from modality_forcing.training.optim import build_optimizer, can_fuse

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(models[0], OptimConfig(lr=1e-2))
    assert fused.defaults["fused"] is True
    weight, *vectors = models[1].parameters()  # the Linear weight decays, the rest does not
    reference = torch.optim.AdamW(  # PyTorch's default (foreach) implementation
        [{"params": [weight], "weight_decay": fused.param_groups[0]["weight_decay"]},
         {"params": vectors, "weight_decay": 0.0}], lr=1e-2, betas=fused.defaults["betas"],
    )  # fmt: skip
    assert not reference.defaults["fused"]
    for _ in range(3):
        x = torch.randn(4, 8)
        for m, opt in zip(models, (fused, reference), strict=True):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not can_fuse([torch.zeros(2, dtype=torch.long)])  # integer tensors: default path


def test_checkpoints_by_wall_time_and_training_time_adds_up_over_a_resume(tmp_path):
    # a checkpoint is due after every step (1e-6 minutes), whatever ckpt_every says
    cfg = _cfg(tmp_path, "t", ckpt_every_minutes=1e-6, keep_checkpoints=0)
    Trainer(cfg).run(stop_at=3)
    names = sorted(p.name for p in (tmp_path / "t" / "checkpoints").glob("step_*"))
    assert names == [f"step_{k:07d}" for k in (1, 2, 3)]
    first = json.loads(
        (tmp_path / "t" / "checkpoints" / "step_0000003" / "trainer.json").read_text()
    )
    resumed = Trainer(_cfg(tmp_path, "t", ckpt_every_minutes=1e-6, keep_checkpoints=0), resume=True)
    assert resumed.state.seconds == first["train_state"]["seconds"] > 0
    resumed.run()
    log = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in log]
    assert elapsed == sorted(elapsed) and elapsed[-1] > first["train_state"]["seconds"]
    # `max_minutes` counts the earlier sessions too: 90% of the six steps' training time is
    # already spent, so the resumed run stops after one step (counting only its own session's
    # time, it would train several more).
    budget = 0.9 * resumed.state.seconds / 60
    spent = Trainer(_cfg(tmp_path, "t", max_steps=20, max_minutes=budget), resume=True)
    spent.run()
    assert spent.state.step == 7


def test_export_in_shards_loads_back_identically(tmp_path):
    from modality_forcing.training.checkpoint import export_checkpoint

    final = train(_cfg(tmp_path, "e", max_steps=2))
    whole = export_checkpoint(final, tmp_path / "whole", dtype="float32")
    shards = export_checkpoint(final, tmp_path / "shards", dtype="float32", max_shard_mb=0.05)
    files = sorted(p.name for p in shards.glob("model-*.safetensors"))
    assert len(files) > 2 and not (shards / "model.safetensors").exists()
    assert all((shards / f).stat().st_size <= 0.05 * 2**20 + 2**14 for f in files)  # + header
    a, b = load_model(whole).state_dict(), load_model(shards).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (shards / files[0]).unlink()
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(shards)


def test_worker_processes_render_exactly_the_batches_of_the_main_process(tmp_path):
    from modality_forcing.data.stream import PrefetchedSource, ProceduralSource

    cfg = _cfg(tmp_path, "w", **{"data.num_workers": 2}).data
    inline = ProceduralSource(cfg, global_batch=4, micro_batch=2)
    ahead = PrefetchedSource(cfg, global_batch=4, micro_batch=2, grad_accum=2)
    try:
        for step, micro in [(0, 0), (0, 1), (1, 0), (5, 1), (2, 0)]:  # a jump, then back
            a, b = inline.get(step, micro), ahead.get(step, micro)
            assert a["caption"] == b["caption"]
            assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
                       for k in ("image", "depth", "valid_mask"))  # fmt: skip
    finally:
        ahead.close()


def test_wsd_schedule_holds_then_cools_down_linearly():
    cfg = OptimConfig(schedule="wsd", warmup_steps=2, decay_steps=4, min_lr_ratio=0.0)
    factors = [lr_factor(step, cfg, max_steps=10) for step in range(10)]
    assert factors == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    held = OptimConfig(schedule="wsd", warmup_steps=0, decay_steps=0)  # no cool-down: constant
    assert {lr_factor(step, held, max_steps=5) for step in range(5)} == {1.0}
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_factor(0, OptimConfig(schedule="linear"), max_steps=5)


def test_object_weight_weighs_the_object_pixels_of_procedural_batches(tmp_path):
    samples = render_split("train", 0, 4, SceneConfig(height=16, width=16, shadows=False))
    batch = collate(samples)
    objects = batch["object_mask"]
    assert objects.shape == (4, 1, 16, 16) and objects.any()
    inst = torch.from_numpy(np.stack([s["instance"] for s in samples]))[:, None]
    assert torch.equal(objects, inst >= 5)  # floor 1, walls 2-4, sky 0 are not objects
    plain = Trainer(_cfg(tmp_path, "plain")).prepare(batch, 0)
    trainer = Trainer(_cfg(tmp_path, "weighted", **{"loss.object_weight": 6}))
    weighted = trainer.prepare(batch, 0)
    assert plain.weight == {}
    w = weighted.weight[IMAGE]
    assert torch.equal(w, torch.where(objects, 6.0, 1.0))
    with torch.no_grad():
        a, b = trainer.loss(plain).per_modality, trainer.loss(weighted).per_modality
    assert a[DEPTH].item() == b[DEPTH].item() and a[IMAGE].item() != b[IMAGE].item()


def test_forcing_step_functions_put_a_batch_on_the_flow_path(tmp_path):
    from modality_forcing.flow.path import interpolate
    from modality_forcing.training.step import forcing_batch, forcing_loss, stage_plan

    cfg = _cfg(tmp_path, **{"data.depth_fill": "noise"})
    trainer = Trainer(cfg)
    batch = collate(render_split("train", 0, 8, SceneConfig(height=16, width=16, shadows=False)))
    batch["valid_mask"][:, :, :4] = False  # a band the sensor missed
    fb = forcing_batch(trainer.model, batch, 40, cfg)
    assert set(fb.path) == {IMAGE, DEPTH}
    for m, p in fb.path.items():
        plain = interpolate(p.x0, p.noise, p.t)
        keep = fb.valid.expand_as(plain) if m == DEPTH else torch.ones_like(plain, dtype=bool)
        assert torch.equal(p.xt[keep], plain[keep])  # the path, where data exists
        assert torch.equal(fb.active[m] & (p.t == 0), torch.zeros_like(fb.active[m]))
    noised = (fb.path[DEPTH].t > 0)[:, None, None, None] & ~fb.valid
    assert noised.any()  # the `noise` fill: x_t is the noise where nothing was measured
    assert torch.equal(fb.path[DEPTH].xt[noised], fb.path[DEPTH].noise[noised])
    with torch.no_grad():  # the trainer's loss is this function's, draw for draw
        a = forcing_loss(trainer.model, batch, cfg, start_index=40)
        b = trainer.compute_loss(batch, start_index=40)
    assert a.total.item() == b.total.item()
    t2i = _cfg(tmp_path, "t2i", stage="t2i")
    plan = stage_plan(t2i)
    assert plan.modalities == (IMAGE,) and plan.forcing.policy == "t2i"
    assert t2i.forcing.policy == "corners"  # the stage's plan leaves the config as it was
    fb = forcing_batch(Trainer(t2i).model, batch, 0, t2i)
    assert set(fb.path) == {IMAGE} and fb.active[IMAGE].all()


def test_validation_every_n_steps_scores_image_to_depth_and_resumes_cleanly(tmp_path, capsys):
    cfg = _cfg(tmp_path, "val", max_steps=4, val_every=2, val_scenes=3, ckpt_every=2)
    first = Trainer(cfg)
    first.run(stop_at=3)
    records = [json.loads(x) for x in (tmp_path / "val" / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    r = records[0]
    assert 0 < r["abs_rel"] < 10 and 0 <= r["delta1"] <= 1
    assert r["skill"] < 1 and math.isfinite(r["object_skill"])  # near 0 for an untrained model
    assert "val step 2: image->depth AbsRel" in capsys.readouterr().out
    again = Trainer(_cfg(tmp_path, "val", max_steps=4, val_every=2, val_scenes=3, ckpt_every=2),
                    resume=True)  # fmt: skip
    again.run()
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "val" / "val.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4]  # resumed from step 2: no step logged twice
    # the validator is deterministic: the same weights score the same
    assert again.validate() == again.validate()


def test_t2i_stage_skips_validation_and_report_to_is_checked(tmp_path):
    t2i = Trainer(_cfg(tmp_path, "t2i", stage="t2i", max_steps=2, val_every=1, val_scenes=2))
    t2i.run()
    assert not (tmp_path / "t2i" / "val.jsonl").exists() and t2i.validate() is None
    with pytest.raises(ValueError, match=r"report_to.*none or tensorboard"):
        _cfg(tmp_path, "bad", report_to="wandb")


def test_report_to_tensorboard_writes_loss_and_val_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_cfg(tmp_path, "tb", max_steps=4, val_every=2, val_scenes=2, report_to="tensorboard"))
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/image", "loss/depth", "lr", "val/abs_rel", "val/skill"} <= tags
    assert [e.step for e in events.Scalars("val/abs_rel")] == [2, 4]


def test_a_stopped_bench_run_resumes_and_another_config_starts_afresh(tmp_path, monkeypatch):
    from modality_forcing.bench.runs import STARTED_JSON, seconds_before_resume, train_cached
    from modality_forcing.config import to_dict

    base = to_dict(_cfg(tmp_path, "bench"))
    # a benchmark started this run (its marker), then the sitting ended after step 3's
    # checkpoint (stop_at saves one)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / STARTED_JSON).write_text(json.dumps({"config": base}))
    Trainer(_cfg(tmp_path, "bench")).run(stop_at=3)
    seconds = json.loads(
        (tmp_path / "bench" / "checkpoints" / "step_0000003" / "trainer.json").read_text()
    )["train_state"]["seconds"]
    record = train_cached(base)
    assert record["steps"] == 6 and record["train_seconds"] > seconds > 0
    log = [json.loads(x) for x in (tmp_path / "bench" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3, 4, 6]  # resumed at 3, not trained again from 1
    assert train_cached(base) == record  # finished: reused as it is
    later = {**base, "ckpt_every_minutes": 10.0}  # when it checkpoints: still the same run
    assert train_cached(later) == record
    # another config in the same folder (here: another seed) is a different run: from scratch,
    # and should it stop before its first checkpoint, the first run's is not resumed either
    other = {**base, "seed": 1, "max_steps": 2}
    (tmp_path / "bench" / "bench_run.json").unlink()
    assert train_cached(other)["steps"] == 2
    (tmp_path / "bench" / "bench_run.json").unlink()

    def killed(*args, **kwargs):  # the sitting ends before the new run's first checkpoint
        raise KeyboardInterrupt

    third = to_dict(_cfg(tmp_path, "bench", seed=2))
    monkeypatch.setattr("modality_forcing.training.loop.train", killed)
    with pytest.raises(KeyboardInterrupt):
        train_cached(third)
    assert seconds_before_resume(tmp_path / "bench", third) is None  # not the other seed's


def test_another_benchmarks_finished_run_is_reused_only_when_it_trained_the_same(
    tmp_path, monkeypatch
):
    """`ckpt_every` leaves the weights bit-identical, so a run another benchmark finished with
    another checkpoint cadence is reused from its folder; a run that trained differently is
    not, and a missing folder is an error naming it."""
    from safetensors.torch import load_file

    from modality_forcing.bench.runs import train_cached
    from modality_forcing.config import to_dict

    def config(name: str, **extra) -> dict:
        return to_dict(_cfg(tmp_path / name, "run", max_steps=4, **extra))

    often = train_cached(config("paper", ckpt_every=2))
    rarely = train_cached(config("alone", ckpt_every=4))
    weights = [load_file(f"{r['final']}/model.safetensors") for r in (often, rarely)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    def trained(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr("modality_forcing.training.loop.train", trained)
    found = train_cached(config("depth", ckpt_every=4), reuse=[tmp_path / "paper"])
    assert found["final"] == often["final"] and found["reused_from"] == str(
        tmp_path / "paper" / "run"
    )
    with pytest.raises(AssertionError, match="trained"):  # another learning rate: trained anew
        train_cached(config("depth", **{"optim.lr": 1e-3}), reuse=[tmp_path / "paper"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_cached(config("depth"), reuse=[tmp_path / "nowhere"])
