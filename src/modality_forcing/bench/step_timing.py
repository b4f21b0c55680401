"""One training step as the benches time it: the step itself (`TrainStep`: forward, loss,
backward, AdamW), its time, its peak memory and where its time goes (a profile by op group)."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig, TrainConfig
from ..modalities import DEPTH
from ..precision import PrecisionChoice
from ..training.optim import build_optimizer
from ..training.step import forcing_loss


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings must not stop before it is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def mean_square(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """A stand-in loss on a model's prediction(s): their mean square (the peer race's)."""
    outs = out.values() if isinstance(out, dict) else [out]
    return sum(o.float().square().mean() for o in outs)  # type: ignore[return-value]


@dataclass
class TrainStep:
    """A full training step (forward, loss, backward, the trainer's AdamW) of `model`: `loss` maps
    what `forward` returns to the scalar to backpropagate. Call it to run one step."""

    model: nn.Module
    forward: Callable[[], Any]
    autocast: Callable[[], AbstractContextManager]
    loss: Callable[[Any], torch.Tensor] = mean_square
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = build_optimizer(self.model, OptimConfig(lr=1e-5))

    def __call__(self) -> None:
        with self.autocast():
            loss = self.loss(self.forward())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def static_bytes(self) -> int:
        """Bytes that live across steps: parameters and optimiser state."""
        state = [t for s in self.optimizer.state.values() for t in s.values()
                 if isinstance(t, torch.Tensor)]  # fmt: skip
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *state])


def training_captions(batch: int) -> list[str]:
    """The captions of the first `batch` procedural training scenes: a batch's text as the
    trainer sees it (the text encoder pads every caption to the batch's longest, ~50 tokens
    against a mean of ~28), without rendering the scenes."""
    from ..data.procedural import SceneConfig
    from ..data.scene_graph import caption_scene, sample_scene
    from ..data.splits import split_seeds

    cfg = SceneConfig()
    return [caption_scene(sample_scene(int(s), cfg)) for s in split_seeds("train", batch, 0)]


def train_step_fn(model: nn.Module, modalities: tuple[str, ...], batch: int,
                  resolution: tuple[int, int], choice: PrecisionChoice) -> TrainStep:  # fmt: skip
    """The trainer's own forcing step (`training.step.forcing_loss`: draws, flow path, loss) of
    stage t2i (image only) or mf, on a synthetic batch with procedural training captions."""
    device = next(model.parameters()).device
    h, w = resolution
    data = {
        "image": torch.rand(batch, 3, h, w, device=device) * 2 - 1,
        "depth": torch.rand(batch, 1, h, w, device=device) + 0.5,
        "valid_mask": torch.ones(batch, 1, h, w, dtype=torch.bool, device=device),
        "caption": training_captions(batch),
    }
    cfg = TrainConfig(model=model.cfg, stage="mf" if DEPTH in modalities else "t2i")
    return TrainStep(model, lambda: forcing_loss(model, data, cfg).total, choice.autocast,
                     loss=lambda total: total)  # fmt: skip


def time_train_step(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of `step` (median of `steps` after two warm-up calls)."""
    times = []
    for i in range(steps + 2):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _malloc_in_use() -> Callable[[], int] | None:
    """Bytes the C allocator has handed out now (glibc `mallinfo2`), or None where unavailable."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def used() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return used


def step_peak_memory_mb(step: TrainStep, device: torch.device) -> float | None:
    """Peak memory of one training step: parameters and optimiser state plus the step's own
    high-water mark (activations, gradients, temporaries), so two models in one process are
    told apart. CUDA: the allocator's peak. CPU: malloc'd bytes sampled every ~0.5 ms while the
    step runs (the peak lasts far longer); None where the C library cannot say."""
    sync(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return (step.static_bytes() + torch.cuda.max_memory_allocated(device) - base) / 2**20
    used = _malloc_in_use()
    if used is None:
        return None
    base, peak, done = used(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used())
            time.sleep(5e-4)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    return (step.static_bytes() + max(peak[0] - base, 0)) / 2**20


# Where a step's time goes, by the operators' names in the PyTorch profiler (self time).
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm",
            "aten::_addmm_activation")  # fmt: skip
OP_GROUPS = ("gemm", "attention kernel", "fused elementwise (compiled)", "optimizer", "other")


def op_group(name: str) -> str:
    """The `OP_GROUPS` entry of a profiler event name."""
    if name in GEMM_OPS:
        return "gemm"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention kernel"
    if name.startswith(("## Call CompiledFxGraph", "graph_")) or "cpp_fused" in name:
        return "fused elementwise (compiled)"  # inductor's generated kernels
    if "adam" in name.lower() or name.startswith("Optimizer."):
        return "optimizer"
    return "other"


def profile_step(step: Callable[[], None], device: torch.device, steps: int = 2) -> dict[str, Any]:
    """Self time per `OP_GROUPS` entry over `steps` profiled steps (after one warm-up step):
    seconds per step and fraction of the profiled total."""
    from torch.profiler import ProfilerActivity, profile

    step()
    sync(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    seconds = dict.fromkeys(OP_GROUPS, 0.0)
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        seconds[op_group(event.key)] += us / 1e6 / steps
    total = sum(seconds.values())
    return {"seconds_per_step": seconds, "fraction": {k: v / total for k, v in seconds.items()}}
