"""What the training benches share: one `Budget` (the compute of one training run) and the
training config it implies. Each suite extends `Budget` with what it scores (scene counts,
checkpoints per curve, sampling steps) and adds its recipe's changes to `train_config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Budget:
    """Compute per training run: exactly `steps` x `batch` samples of `preset` at `size`."""

    preset: str
    size: tuple[int, int]
    steps: int
    batch: int
    precision: str = "auto"  # training and inference (`precision.resolve_precision`)
    device: str | None = None  # training runs (None: cuda > mps > cpu); scoring runs on the CPU
    lr: float = 4e-4
    warmup: int = 50

    def train_config(
        self, run_dir: str | Path, seed: int = 0, log_points: int = 20, **fields: Any
    ) -> dict[str, Any]:
        """A training config (a dict for `resolve_train_config`) of one run under this budget:
        stage `mf`, no sample grids, `log_points` log lines; `fields` add or replace keys."""
        height, width = self.size
        return {
            "preset": self.preset, "stage": "mf", "out_dir": str(run_dir),
            "batch_size": self.batch, "max_steps": self.steps, "precision": self.precision,
            "device": self.device, "seed": seed, "sample_every": 0,
            "log_every": max(1, self.steps // log_points),
            "data": {"height": height, "width": width},
            "optim": {"lr": self.lr, "warmup_steps": min(self.warmup, self.steps)},
            **fields,
        }  # fmt: skip

    def compute(self) -> Budget:
        """Just the compute of this (suite-specific) budget, to build another suite's from."""
        return Budget(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Budget)})
