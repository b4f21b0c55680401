"""The one training loop: T2I pre-training (stage `t2i`) and Modality Forcing post-training (`mf`),
single-process or under torchrun with DDP or FSDP2, on CPU or CUDA.

Per step: encode each micro-batch into clean per-modality grids, draw per-sample noise levels with
the forcing policy, build x_t on the flow path, predict, and take the masked per-modality loss,
normalised over the global batch. AdamW with warmup + cosine, grad clipping, accumulation to a
global batch independent of the world size, EMA, bf16 autocast; JSONL metrics, sample grids and
atomic checkpoints (sharded training state via torch.distributed.checkpoint) that resume exactly,
also on another world size, once every file matches the SHA-256 manifest saved with it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..backbones import build_model
from ..config import TrainConfig, save_yaml, to_dict, validate
from ..data.stream import make_source, sample_start
from ..flow.loss import LossOutput
from ..flow.noise_levels import CORNER_NAMES
from ..modalities import DEPTH, IMAGE, get_modality
from ..model.mmdit import count_parameters, transformer_blocks
from ..precision import PrecisionChoice, resolve_precision
from . import distributed as D
from .checkpoint import (
    load_model,
    read_meta,
)
from .optim import EMA, build_optimizer, lr_factor
from .run_dir import METRICS, VAL_LOG
from .run_state import RunState, TrainState
from .step import ForcingBatch, batch_loss, forcing_batch, stage_plan
from .validation import Reporter, Validator, summary_scalars


def copy_image_stream_to_depth(model: torch.nn.Module) -> int:
    """Initialise every depth-stream tensor from its image-stream twin where shapes match.

    Used when post-training starts from a T2I checkpoint whose depth stream never trained; the
    depth patch embedding, modality id and head keep their fresh init. Returns tensors copied.
    """
    state = model.state_dict()
    copied = 0
    for key in state:
        parts = key.split(".")
        if DEPTH not in parts or {"embed", "modality_embed", "final"} & set(parts):
            continue
        twin = ".".join(IMAGE if p == DEPTH else p for p in parts)
        if twin in state and state[twin].shape == state[key].shape:
            state[key] = state[twin].clone()
            copied += 1
    model.load_state_dict(state)
    return copied


def with_added_inputs(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:  # fmt: skip
    """`src` weights for a model (`dst`) whose refiner convolutions take more input channels
    (appended last, e.g. the depth hint): the extra input channels are zero, so the grown model
    computes what the source did until it learns to use them. Returns (weights, grown keys)."""
    out, grown = dict(src), []
    for key, w in src.items():
        target = dst.get(key)
        if (target is not None and key.startswith("refine.") and w.dim() == 4
                and target.shape[0] == w.shape[0] and target.shape[2:] == w.shape[2:]
                and target.shape[1] > w.shape[1]):  # fmt: skip
            pad = w.new_zeros(w.shape[0], target.shape[1] - w.shape[1], *w.shape[2:])
            out[key] = torch.cat([w, pad], 1)
            grown.append(key)
    return out, grown


class Trainer(RunState):
    """Holds the model, optimiser, EMA and data source of one run; `run()` is the loop."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        validate(cfg)  # also configs built in code: no ZeroDivisionError from log_every=0
        self.cfg = cfg
        self.env = D.init_distributed(cfg.device)
        self.device = self.env.device
        self.precision = self._resolve_precision()
        self.plan = stage_plan(cfg)
        self.modalities = self.plan.modalities
        cfg.model.resolution = (cfg.data.height, cfg.data.width)
        D.check_same_config(to_dict(cfg), self.env)
        per_step = self.env.world_size * cfg.grad_accum
        if cfg.batch_size % per_step:
            raise ValueError(
                f"batch_size {cfg.batch_size} (global) must be divisible by world_size x "
                f"grad_accum = {self.env.world_size} x {cfg.grad_accum}"
            )
        self.micro_batch = cfg.batch_size // per_step
        self.run_dir, self.ckpt_dir = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoints"
        if self.env.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            # as trained: with the stage's forcing (t2i: image only), cfg itself untouched
            save_yaml(dataclasses.replace(cfg, forcing=self.plan.forcing),
                      self.run_dir / "config.yaml")  # fmt: skip
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_model(cfg.model).to(self.device)
        if cfg.activation_checkpointing:
            self.model.dit.activation_checkpointing = True
        self.teacher: torch.nn.Module | None = None
        if cfg.loss.distill_weight > 0 and cfg.model.image_prediction != "velocity":
            raise ValueError(
                "config key 'loss.distill_weight': distillation matches image "
                "velocities, so it needs model.image_prediction 'velocity', got "
                f"'{cfg.model.image_prediction}'"
            )
        if cfg.init_from and not resume:
            self._init_from(cfg.init_from)
        if cfg.loss.distill_weight > 0 and hasattr(self.model, "teacher_forward"):
            self.teacher = self.model.teacher_forward  # adapted backbone: its own original
        self.engine = D.wrap_model(self.model, cfg.parallel, self.env, self._blocks(),
                                   self.precision.precision == "bf16",
                                   self._fp32_units())  # fmt: skip
        if cfg.compile:
            for block in self._blocks():  # static shapes: trunk and decoders differ in length
                block.compile(dynamic=False)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.ema = EMA(self.model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.state = TrainState()
        self._skips_before = Counter[str]()  # skip counts of the run before this process
        if resume:
            self._resume()
        self.source = make_source(cfg.data, cfg.batch_size, self.micro_batch, self.env.rank,
                                  self.env.world_size, cfg.seed, self.state.data,
                                  cfg.grad_accum)  # fmt: skip
        self.validator: Validator | None = None  # val scenes rendered on first use
        self.reporter = Reporter(cfg.report_to if self.env.is_main else "none", self.run_dir)

    def _resolve_precision(self) -> PrecisionChoice:
        """The precision policy's choice for this run; bf16 only if every rank chose it."""
        choice = resolve_precision(self.cfg.precision, self.device)
        votes = torch.tensor([float(choice.precision == "bf16")], device=self.device)
        if self.env.enabled and D.all_reduce_sum(votes, self.env)[0] not in (
            0,
            self.env.world_size,
        ):
            choice = PrecisionChoice("fp32", str(self.device), "auto: ranks disagreed on bf16")
        return choice

    def _blocks(self) -> list[torch.nn.Module]:
        return transformer_blocks(self.model.dit)

    def _fp32_units(self) -> list[torch.nn.Module]:
        """Heads that must compute in fp32 (the depth head and its pixel refiner) even under
        FSDP2's bf16 policy."""
        units = []
        for heads in (getattr(self.model.dit, "final", {}), getattr(self.model, "refine", {})):
            units += [heads[m] for m in heads if get_modality(m).fp32_head]
        return units

    def log(self, text: str) -> None:
        if self.env.is_main:
            tqdm.write(text)

    # ----------------------------------------------------------------------------- setup
    def _init_from(self, path: str) -> None:
        src = load_model(path, self.device)
        # Inputs a run adds to its source start at zero (the depth-hint embedding, the hint
        # channels of the pixel refiner's first convolution): allowed.
        weights, grown = with_added_inputs(src.state_dict(), self.model.state_dict())
        missing, _ = self.model.load_state_dict(weights, strict=False)
        added = [k for k in missing if k.endswith("hint_embed.weight")] + grown
        missing = [k for k in missing if k not in added]
        if missing:
            raise ValueError(f"init_from '{path}' lacks {len(missing)} tensors, e.g. {missing[:3]}")
        if added:
            self.log(f"new zero-initialised inputs not in {path}: {added}")
        if read_meta(path).get("stage") == "t2i" and self.cfg.stage == "mf":
            n = copy_image_stream_to_depth(self.model)
            self.log(f"initialised {n} depth-stream tensors from the image stream of {path}")
        if self.cfg.loss.distill_weight > 0:
            self.teacher = src.requires_grad_(False).eval()

    def prepare(self, batch: dict[str, Any], start_index: int) -> ForcingBatch:
        """A micro-batch on the flow path, on this rank's device (`step.forcing_batch`)."""
        return forcing_batch(self.model, batch, start_index, self.cfg, self.plan, self.device)

    def loss(
        self, p: ForcingBatch, normalizer: dict[str, torch.Tensor] | None = None
    ) -> LossOutput:
        """Forward pass + loss of a prepared micro-batch, under the run's precision."""
        with self.precision.autocast():
            return batch_loss(self.engine, p, self.cfg, self.teacher, normalizer)

    def compute_loss(self, batch: dict[str, Any], start_index: int = 0) -> LossOutput:
        """Loss of one batch on its own (tests, diagnostics)."""
        return self.loss(self.prepare(batch, start_index))

    def train_step(self) -> dict[str, Any] | None:
        """One optimiser step over the global batch; None when the loss was not finite."""
        step, cfg = self.state.step, self.cfg
        micro = [
            self.prepare(self.source.get(step, m), sample_start(
                step, m, cfg.batch_size, self.micro_batch, self.env.rank, self.env.world_size))
            for m in range(cfg.grad_accum)
        ]  # fmt: skip
        counts = torch.stack([sum(p.active[m].sum() for p in micro) for m in self.modalities])
        counts = D.all_reduce_sum(counts.float(), self.env)
        normalizer = dict(zip(self.modalities, counts, strict=True))
        sums = torch.zeros(len(self.modalities), device=self.device)
        nb = cfg.loss.num_t_bins
        bins = torch.zeros(len(self.modalities), 2, nb)  # per modality: loss sums, counts
        finite = True
        for i, p in enumerate(micro):
            with D.no_grad_sync(self.engine, cfg.parallel, sync=i == len(micro) - 1):
                out = self.loss(p, normalizer)
                finite &= bool(torch.isfinite(out.total))
                # DDP/FSDP average gradients over ranks; scaling by the world size turns that
                # average back into the sum the global normaliser expects.
                (out.total * self.env.world_size).backward()
            sums += torch.stack([out.per_modality[m].detach() for m in self.modalities])
            bins += torch.stack([torch.stack(out.t_bins[m]) for m in self.modalities])
        finite = bool(D.all_reduce_sum(torch.tensor([float(not finite)]), self.env)[0] == 0)
        if not finite:
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        losses = D.all_reduce_sum(sums, self.env)
        bins = D.all_reduce_sum(bins.to(self.device), self.env).cpu()
        corners = torch.bincount(torch.cat([p.draws.levels.corner for p in micro]),
                                 minlength=len(CORNER_NAMES))  # fmt: skip
        return {
            "loss": {m: float(v) for m, v in zip(self.modalities, losses, strict=True)},
            "grad_norm": float(grad_norm),
            "corners": dict(zip(CORNER_NAMES, corners.tolist(), strict=True)),
            "t_bins": dict(zip(self.modalities, bins, strict=True)),
        }

    # ----------------------------------------------------------------------------- checkpoints
    def run(self, stop_at: int | None = None) -> Path:
        """Train until `max_steps` (or `stop_at`, a step to stop after: tests, preemption)."""
        cfg = self.cfg
        self.log(
            f"model: {count_parameters(self.model) / 1e6:.2f}M parameters "
            f"({count_parameters(self.model.dit) / 1e6:.2f}M in the DiT); stage {cfg.stage}; "
            f"device {self.device}; precision {self.precision.precision} "
            f"({self.precision.reason}); parallel {cfg.parallel} x "
            f"{self.env.world_size}; global batch {cfg.batch_size} = {self.env.world_size} ranks "
            f"x {cfg.grad_accum} micro x {self.micro_batch}"
        )
        last = min(cfg.max_steps, stop_at if stop_at is not None else cfg.max_steps)
        log_file = (self.run_dir / METRICS).open("a") if self.env.is_main else None
        t_start = last_log = last_ckpt = time.time()
        seconds_before = self.state.seconds  # earlier sessions of a resumed run
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, desc=f"train[{cfg.stage}]",
                   dynamic_ncols=True, disable=not self.env.is_main)  # fmt: skip
        window: list[dict[str, Any]] = []
        while self.state.step < last:
            step = self.state.step
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.optim.lr * lr_factor(step, cfg.optim, cfg.max_steps)
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            record = self.train_step()
            self.state.step += 1
            if record is None:
                self._bad_step(step)
                continue
            self.state.bad_in_a_row = 0
            window.append(record)
            bar.update(1)
            if self.state.step % cfg.log_every == 0 or self.state.step == last:
                now = time.time()
                summary = self._summarise(window, now - last_log, seconds_before + now - t_start)
                if log_file is not None:
                    log_file.write(json.dumps(summary) + "\n")
                    log_file.flush()
                    self.reporter.scalars(self.state.step, summary_scalars(summary))
                bar.set_postfix({k: f"{v:.4f}" for k, v in summary["loss"].items()})
                window, last_log = [], now
            timed_out, ckpt_due = self._clock(t_start - seconds_before, last_ckpt)
            if self.state.step % cfg.ckpt_every == 0 or self.state.step == last or ckpt_due:
                self.state.seconds = seconds_before + time.time() - t_start
                self.save()
                last_ckpt = time.time()
            sharded = self.env.enabled and cfg.parallel == "fsdp2"  # all ranks must take part
            due = cfg.sample_every and self.state.step % cfg.sample_every == 0
            if due and (self.env.is_main or sharded):
                self.preview()
            if (
                cfg.val_every
                and self.state.step % cfg.val_every == 0
                and (self.env.is_main or sharded)
            ):
                self.validate()
            if timed_out:
                self.log(f"stopping at step {self.state.step}: max_minutes reached")
                break
        bar.close()
        if hasattr(self.source, "close"):  # worker processes that render ahead
            self.source.close()
        if log_file is not None:
            log_file.close()
        self.reporter.close()
        return self.run_dir / "final"

    def _clock(self, t_start: float, last_ckpt: float) -> tuple[bool, bool]:
        """(past `max_minutes`, a checkpoint due by `ckpt_every_minutes`), decided together by
        all ranks so a clock read a moment apart can never send one rank alone into a save.
        `t_start` is when training would have begun had it never been interrupted: the budget
        counts the training time of a resumed run's earlier sessions."""
        cfg, now = self.cfg, time.time()
        if cfg.max_minutes is None and cfg.ckpt_every_minutes is None:
            return False, False
        flags = torch.tensor([
            float(cfg.max_minutes is not None and now - t_start > 60 * cfg.max_minutes),
            float(cfg.ckpt_every_minutes is not None
                  and now - last_ckpt > 60 * cfg.ckpt_every_minutes),
        ], device=self.device)  # fmt: skip
        if self.env.enabled:
            flags = D.all_reduce_sum(flags, self.env)
        timed_out, due = bool(flags[0] > 0), bool(flags[1] > 0)
        return timed_out, due or timed_out

    def _bad_step(self, step: int) -> None:
        self.state.bad_in_a_row += 1
        self.state.bad_total += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log(f"step {step}: non-finite loss, step skipped ({self.state.bad_total} so far)")
        if self.state.bad_in_a_row >= self.cfg.max_bad_steps:
            raise RuntimeError(
                f"{self.state.bad_in_a_row} non-finite losses in a row (last at step {step}); "
                "lower optim.lr, check the data, or use precision=fp32"
            )

    def _summarise(self, window: list[dict[str, Any]], dt: float, elapsed: float) -> dict[str, Any]:
        names = window[-1]["loss"].keys()
        bins = {m: sum(r["t_bins"][m] for r in window) for m in names}  # [2, num_bins] each
        return {
            "step": self.state.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": {m: sum(r["loss"][m] for r in window) / len(window) for m in names},
            "grad_norm": sum(r["grad_norm"] for r in window) / len(window),
            # Mean loss of the samples whose t fell in each of num_t_bins equal bins of [0, 1].
            "loss_t_bins": {
                m: [float(s / c) if c > 0 else None for s, c in zip(*bins[m], strict=True)]
                for m in names
            },
            "samples_per_s": len(window) * self.cfg.batch_size / max(dt, 1e-9),
            "elapsed_s": elapsed,
            "corners_last_step": window[-1]["corners"],
            "bad_steps": self.state.bad_total,
            "skipped": self._skip_counts(),  # a collective: every rank summarises
        }

    @contextmanager
    def _eval_weights(self) -> Iterator[None]:
        """The weights previews and validation look at: EMA where it is whole on this rank,
        else the live ones (FSDP2: the root unit gathered; block units gather themselves)."""
        if self.env.enabled and hasattr(self.model, "unshard"):
            self.model.unshard()
            try:
                yield
            finally:
                self.model.reshard()
            return
        if self.ema is None or self.env.enabled:  # sharded EMA: the live weights
            yield
            return
        raw = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.shadow)
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    def preview(self) -> Path | None:
        """Sample grid from the EMA weights (or raw), written as PNG."""
        from .preview import write_preview_grid

        with self._eval_weights():
            return write_preview_grid(self.model, self.cfg, self.run_dir, self.state.step,
                                      self.env.is_main)  # fmt: skip

    def validate(self) -> dict[str, float] | None:
        """Image -> depth on the val scenes (`Validator`) with the EMA weights; the scores go to
        val.jsonl, the log and the reporter. None in stage t2i (no depth yet)."""
        if DEPTH not in self.modalities:
            return None
        if self.validator is None:
            self.validator = Validator(self.cfg.val_scenes, (self.cfg.data.height,
                                                             self.cfg.data.width))  # fmt: skip
        with self._eval_weights():
            scores = self.validator(self.model, self.precision.autocast_dtype)
        if self.env.is_main:
            record = {"step": self.state.step, **scores}
            with (self.run_dir / VAL_LOG).open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.reporter.scalars(self.state.step, {f"val/{k}": v for k, v in scores.items()})
            self.log(f"val step {self.state.step}: image->depth AbsRel {scores['abs_rel']:.4f}, "
                     f"delta1 {scores['delta1']:.3f}, skill {scores['skill']:.3f} "
                     f"({self.cfg.val_scenes} val scenes)")  # fmt: skip
        return scores


def train(cfg: TrainConfig, resume: bool = False, stop_at: int | None = None) -> Path:
    """Run training to `cfg.max_steps` (or `max_minutes`); returns the final checkpoint dir."""
    if not math.isfinite(cfg.optim.lr) or cfg.optim.lr <= 0:
        raise ValueError(f"optim.lr must be a positive number, got {cfg.optim.lr}")
    finished = False
    try:
        final = Trainer(cfg, resume=resume).run(stop_at=stop_at)
        finished = True
        return final
    finally:
        D.shutdown(finished)
