"""Optimiser, learning-rate schedule and EMA of weights for the training loop."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, embeddings vectors and gates (ndim < 2).

    Uses the fused (single-kernel) implementation where it applies: 3.5x faster than the
    `foreach` one for the 47M parameters of cpu-m on 2 CPU cores (34 vs 119 ms per step).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = True if can_fuse(decay + no_decay) else None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Fused AdamW takes plain (not FSDP2-sharded DTensor) floating tensors on one CPU or CUDA
    device type; anything else keeps PyTorch's default implementation."""
    from torch.distributed.tensor import DTensor

    devices = {p.device.type for p in params}
    return (
        len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(p.is_floating_point() and not isinstance(p, DTensor) for p in params)
    )


SCHEDULES = ("constant", "cosine", "wsd")


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Linear warmup, then: cosine decay to `min_lr_ratio` at `max_steps`; or constant; or `wsd`
    (warmup-stable-decay): constant, then a linear cool-down to `min_lr_ratio` over the last
    `decay_steps` steps before `max_steps`."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule '{cfg.schedule}'; choose from {list(SCHEDULES)}")
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        left = max_steps - step  # steps still to take, this one included
        if cfg.decay_steps <= 0 or left > cfg.decay_steps:
            return 1.0
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * max(0, left - 1) / cfg.decay_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of trainable weights, kept in float32.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) so early, random weights fade quickly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}  # type: ignore[union-attr]
