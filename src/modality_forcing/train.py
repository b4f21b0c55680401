"""The one training loop: T2I pre-training (stage `t2i`) and Modality Forcing post-training (`mf`).

Per step: encode the batch into clean per-modality grids, draw per-sample noise levels with the
forcing policy, build x_t on the flow path, predict, and take the masked per-modality loss. AdamW
with warmup + cosine, grad clipping and accumulation, EMA, bf16 autocast; JSONL metrics, sample
grids and atomic checkpoints that resume exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .checkpoint import load_model, read_meta, read_training_state, write_checkpoint
from .config import TrainConfig, save_yaml, to_dict
from .data.stream import training_batches
from .flow.loss import LossOutput, flow_loss
from .flow.noise_levels import CORNER_NAMES, NoiseLevels, sample_noise_levels
from .flow.path import interpolate
from .modalities import DEPTH, IMAGE
from .model.denoiser import ModalityForcingModel
from .model.factory import build_model
from .model.mmdit import count_parameters
from .model.text import drop_captions
from .optim import EMA, build_optimizer, lr_factor
from .train_preview import write_preview_grid

LATEST = "latest"


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    if cfg.precision not in ("bf16", "fp32"):
        raise ValueError(f"unknown precision '{cfg.precision}'; choose from ['bf16', 'fp32']")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def copy_image_stream_to_depth(model: ModalityForcingModel) -> int:
    """Initialise every depth-stream tensor from its image-stream twin where shapes match.

    Used when post-training starts from a T2I checkpoint whose depth stream never trained.
    Returns the number of tensors copied.
    """
    state = model.state_dict()
    copied = 0
    for key in state:
        parts = key.split(".")
        if DEPTH not in parts or "embed" in parts or "modality_embed" in parts:
            continue  # depth's patch embedding has its own input width: keep its fresh init
        twin = ".".join(IMAGE if p == DEPTH else p for p in parts)
        if twin in state and state[twin].shape == state[key].shape and "final" not in parts:
            state[key] = state[twin].clone()
            copied += 1
    model.load_state_dict(state)
    return copied


@dataclass
class TrainState:
    step: int = 0
    bad_in_a_row: int = 0
    bad_total: int = 0
    t_bins: dict[str, list[list[float]]] = field(default_factory=dict)


def _stage_policy(cfg: TrainConfig) -> tuple[str, ...]:
    if cfg.stage not in ("t2i", "mf"):
        raise ValueError(f"unknown stage '{cfg.stage}'; choose from ['mf', 't2i']")
    return (IMAGE,) if cfg.stage == "t2i" else tuple(cfg.model.modalities)


class Trainer:
    """Holds the model, optimiser, EMA and RNG of one run; `run()` is the loop."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.device = pick_device()
        self.run_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.run_dir / "config.yaml")
        torch.manual_seed(cfg.seed)
        cfg.model.resolution = (cfg.data.height, cfg.data.width)
        self.model = build_model(cfg.model).to(self.device)
        self.modalities = _stage_policy(cfg)
        if cfg.stage == "t2i":
            cfg.forcing.policy = "t2i"
        self.teacher: ModalityForcingModel | None = None
        if cfg.init_from and not resume:
            self._init_from(cfg.init_from)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.ema = EMA(self.model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState()
        if resume:
            self._resume()

    # ----------------------------------------------------------------------------- setup
    def _init_from(self, path: str) -> None:
        src = load_model(path, self.device)
        missing, _ = self.model.load_state_dict(src.state_dict(), strict=False)
        if missing:
            raise ValueError(f"init_from '{path}' lacks {len(missing)} tensors, e.g. {missing[:3]}")
        if read_meta(path).get("stage") == "t2i" and self.cfg.stage == "mf":
            n = copy_image_stream_to_depth(self.model)
            tqdm.write(f"initialised {n} depth-stream tensors from the image stream of {path}")
        if self.cfg.loss.distill_weight > 0:
            self.teacher = src.requires_grad_(False).eval()

    def _resume(self) -> None:
        pointer = self.ckpt_dir / LATEST
        if not pointer.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in '{self.ckpt_dir}'")
        path = self.ckpt_dir / pointer.read_text().strip()
        st = read_training_state(path)
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])
        self.generator.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.state = TrainState(**st["train_state"])
        tqdm.write(f"resumed from {path} at step {self.state.step}")

    # ----------------------------------------------------------------------------- one step
    def _noise_levels(self, batch_size: int) -> NoiseLevels:
        return sample_noise_levels(self.cfg.forcing, batch_size, self.generator)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[LossOutput, NoiseLevels]:
        """Forward pass and loss for one micro-batch."""
        x0, valid = self.model.encode_batch(_to(batch, self.device))
        x0 = {m: x0[m] for m in self.modalities}
        b = x0[IMAGE].shape[0]
        levels = self._noise_levels(b)
        t = {m: levels.t[m].to(self.device) for m in self.modalities}
        noise = {
            m: torch.randn(x.shape, generator=self.generator).to(self.device) for m, x in x0.items()
        }
        xt = {m: interpolate(x0[m], noise[m], t[m]) for m in self.modalities}
        depth_present = levels.depth_present.to(self.device)
        active = {m: t[m] > 0 for m in self.modalities}
        if DEPTH in active:
            active[DEPTH] &= depth_present
        captions = drop_captions(batch["caption"], self.cfg.caption_dropout, self.generator)
        with autocast(self.cfg, self.device):
            pred = self.model(xt, t, captions)
            teacher_v = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_v = self.teacher({IMAGE: xt[IMAGE]}, {IMAGE: t[IMAGE]}, captions)[IMAGE]
        out = flow_loss(
            pred, x0, noise, t, active, self.cfg.loss,
            valid_mask={DEPTH: valid}, teacher_v=teacher_v,
            distill_weight_t=t.get(DEPTH),
        )  # fmt: skip
        return out, levels

    def _accumulate_bins(self, out: LossOutput) -> None:
        for m, (sums, counts) in out.t_bins.items():
            acc = self.state.t_bins.setdefault(m, [[0.0] * len(sums), [0.0] * len(sums)])
            for i in range(len(sums)):
                acc[0][i] += float(sums[i])
                acc[1][i] += float(counts[i])

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        step = self.state.step
        weights = self.ema.shadow if self.ema is not None else self.model.state_dict()
        training_state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "train_state": to_dict(self.state),
        }
        meta = {"step": step, "stage": self.cfg.stage, "weights": "ema" if self.ema else "raw"}
        name = f"step_{step:07d}"
        path = write_checkpoint(self.ckpt_dir / name, self.cfg.model, weights, meta, training_state)
        pointer = self.ckpt_dir / (LATEST + ".tmp")
        pointer.write_text(name)
        pointer.replace(self.ckpt_dir / LATEST)
        write_checkpoint(self.run_dir / "final", self.cfg.model, weights, meta)
        for old in sorted(self.ckpt_dir.glob("step_*"))[:-2]:  # keep the last two
            if old.name != name and old.is_dir():
                import shutil

                shutil.rmtree(old)
        return path

    # ----------------------------------------------------------------------------- loop
    def run(self, stop_at: int | None = None) -> Path:
        """Train until `max_steps` (or `stop_at`, a step to stop after: tests, preemption)."""
        cfg = self.cfg
        tqdm.write(
            f"model: {count_parameters(self.model) / 1e6:.2f}M parameters "
            f"({count_parameters(self.model.dit) / 1e6:.2f}M in the DiT); stage {cfg.stage}; "
            f"device {self.device}; precision {cfg.precision}"
        )
        start = self.state.step
        batches = training_batches(cfg.data, cfg.batch_size, start * cfg.grad_accum)
        log_file = (self.run_dir / "metrics.jsonl").open("a")
        t_start, last_log = time.time(), time.time()
        bar = tqdm(
            total=cfg.max_steps, initial=start, desc=f"train[{cfg.stage}]", dynamic_ncols=True
        )
        window: dict[str, list[float]] = {}
        last = min(cfg.max_steps, stop_at if stop_at is not None else cfg.max_steps)
        while self.state.step < last:
            step = self.state.step
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.optim.lr * lr_factor(step, cfg.optim, cfg.max_steps)
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            finite = True
            for _ in range(cfg.grad_accum):
                out, levels = self.compute_loss(next(batches))
                if not torch.isfinite(out.total):
                    finite = False
                    break
                (out.total / cfg.grad_accum).backward()
                self._accumulate_bins(out)
                for m, v in out.per_modality.items():
                    window.setdefault(m, []).append(float(v.detach()))
            self.state.step += 1
            if not finite:
                self._bad_step(step)
                continue
            self.state.bad_in_a_row = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            bar.update(1)
            if self.state.step % cfg.log_every == 0 or self.state.step == cfg.max_steps:
                now = time.time()
                record = self._log_record(window, grad_norm, levels, now - last_log, t_start)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix({k: f"{v:.4f}" for k, v in record["loss"].items()})
                window, last_log = {}, now
            timed_out = (
                cfg.max_minutes is not None and (time.time() - t_start) > 60 * cfg.max_minutes
            )
            done = self.state.step == last or timed_out
            if self.state.step % cfg.ckpt_every == 0 or done:
                self.save()
            if cfg.sample_every and self.state.step % cfg.sample_every == 0:
                self.preview()
            if timed_out:
                tqdm.write(f"stopping at step {self.state.step}: max_minutes reached")
                break
        bar.close()
        log_file.close()
        return self.run_dir / "final"

    def _bad_step(self, step: int) -> None:
        self.state.bad_in_a_row += 1
        self.state.bad_total += 1
        self.optimizer.zero_grad(set_to_none=True)
        tqdm.write(f"step {step}: non-finite loss, step skipped ({self.state.bad_total} so far)")
        if self.state.bad_in_a_row >= self.cfg.max_bad_steps:
            raise RuntimeError(
                f"{self.state.bad_in_a_row} non-finite losses in a row (last at step {step}); "
                "lower optim.lr, check the data, or use precision=fp32"
            )

    def _log_record(
        self, window: dict[str, list[float]], grad_norm: torch.Tensor, levels: NoiseLevels,
        dt: float, t_start: float,
    ) -> dict[str, Any]:  # fmt: skip
        steps = max(1, len(next(iter(window.values()), [])) // self.cfg.grad_accum)
        bins = {
            m: [s / c if c else None for s, c in zip(*acc, strict=True)]
            for m, acc in self.state.t_bins.items()
        }
        self.state.t_bins = {}
        corners = torch.bincount(levels.corner, minlength=len(CORNER_NAMES)).tolist()
        return {
            "step": self.state.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": {m: sum(v) / len(v) for m, v in window.items()},
            "loss_t_bins": bins,
            "grad_norm": float(grad_norm),
            "samples_per_s": steps * self.cfg.batch_size * self.cfg.grad_accum / max(dt, 1e-9),
            "elapsed_s": time.time() - t_start,
            "corners_last_batch": dict(zip(CORNER_NAMES, corners, strict=True)),
            "bad_steps": self.state.bad_total,
        }

    def preview(self) -> Path | None:
        """Sample grid from the EMA weights (or raw), written as PNG."""
        if self.ema is None:
            return write_preview_grid(self.model, self.cfg, self.run_dir, self.state.step)
        raw = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.shadow)
        try:
            return write_preview_grid(self.model, self.cfg, self.run_dir, self.state.step)
        finally:
            self.model.load_state_dict(raw)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run training to `cfg.max_steps` (or `max_minutes`); returns the final checkpoint dir."""
    if not math.isfinite(cfg.optim.lr) or cfg.optim.lr <= 0:
        raise ValueError(f"optim.lr must be a positive number, got {cfg.optim.lr}")
    return Trainer(cfg, resume=resume).run()
