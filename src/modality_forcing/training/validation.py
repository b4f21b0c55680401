"""What a run shows while it trains, beyond its loss: image -> depth on procedural val scenes
every `val_every` steps (AbsRel, delta1 and the skill over the mean-depth-map prior, the
numbers the flagship is chosen by), and scalars for TensorBoard (`report_to: tensorboard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..metrics.scenes import FidelityScenes, depth_scores, load_fidelity_scenes
from ..sampling.generate import generate

VAL_METRICS = ("abs_rel", "delta1", "skill", "object_skill")


class Validator:
    """Image -> depth of a model on `num` procedural val scenes at `size`, 1 Euler step (the
    readout the recipe trains for), seeded: the same inputs and noise at every call."""

    def __init__(self, num: int, size: tuple[int, int], chunk: int = 32) -> None:
        self.num, self.size, self.chunk = num, size, chunk
        self._scenes: FidelityScenes | None = None  # rendered on first use

    @property
    def scenes(self) -> FidelityScenes:
        if self._scenes is None:
            self._scenes = load_fidelity_scenes("val", self.num, self.size, prior_scenes=128)
        return self._scenes

    @torch.no_grad()
    def __call__(self, model: Any, autocast_dtype: torch.dtype | None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(0)
        try:
            depths = [
                generate(model, "image_to_depth", [""] * len(part), *self.size, image=part,
                         num_steps=1, generator=g, autocast_dtype=autocast_dtype).depth
                for part in self.scenes.images.split(self.chunk)
            ]  # fmt: skip
        finally:
            model.train(was_training)
        scores = depth_scores(torch.cat(depths)[:, 0].double().cpu(), self.scenes)
        return {k: scores[k] for k in VAL_METRICS}


class Reporter:
    """Scalars to TensorBoard (`kind="tensorboard"`, under `run_dir/tensorboard`) or nowhere."""

    def __init__(self, kind: str, run_dir: Path) -> None:
        self.writer = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "report_to: tensorboard needs the tensorboard package: pip install "
                    "'modality-forcing[tensorboard]'"
                ) from err
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        elif kind != "none":
            raise ValueError(f"unknown report_to '{kind}'; choose from ['none', 'tensorboard']")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """A log record's scalars, named for TensorBoard (loss/<modality>, lr, grad_norm, ...)."""
    out = {f"loss/{m}": float(v) for m, v in summary.get("loss", {}).items()}
    for key in ("lr", "grad_norm", "samples_per_s"):
        if summary.get(key) is not None:
            out[key] = float(summary[key])
    return out
