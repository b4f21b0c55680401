"""torch.distributed glue for the one training loop: process group, DDP / FSDP2 wrapping, helpers.

Launch with `torchrun --nproc_per_node N -m modality_forcing train ...` (any number of nodes):
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK and the trainer picks them up. NCCL on CUDA, gloo on
CPU. Without torchrun everything here degrades to a single process.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..precision import pick_device

STRATEGIES = ("none", "ddp", "fsdp2")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes (or stay single-process).

    `device`: None picks this rank's CUDA device when CUDA is available, else
    `precision.pick_device` (mps > cpu); a CUDA device given without an index gets the rank's.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    cuda = chosen.type == "cuda"
    if cuda:
        chosen = torch.device("cuda", local if chosen.index is None else chosen.index)
        torch.cuda.set_device(chosen)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=chosen)


def shutdown(finished: bool = True) -> None:
    """Leave the process group before the process exits. A rank that finished waits for the
    others first: one that exits while another still runs collectives (a preview, a save) can
    abort in gloo's teardown ("terminate called without an active exception"). A rank that
    failed leaves at once (a barrier would wait for ranks that may never arrive)."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    # A finished trainer's wrapped model (DDP / FSDP, its gloo work) can outlive the call in a
    # reference cycle and hold the group until the interpreter is torn down, where freeing it
    # can abort the same way: free it now, while the group and the interpreter are whole.
    gc.collect()
    dist.destroy_process_group()


def check_same_config(config: dict[str, Any], env: DistEnv) -> None:
    """Fail fast, on every rank, when ranks were launched with different configs."""
    if not env.enabled:
        return
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    digests: list[str | None] = [None] * env.world_size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        raise ValueError(
            f"ranks disagree on the training config (ranks {bad} differ from rank 0); launch every "
            "rank with the same --config and --set overrides"
        )


def all_reduce_sum(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; identity on one process)."""
    if not env.enabled:
        return x
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def wrap_model(
    model: nn.Module,
    strategy: str,
    env: DistEnv,
    blocks: list[nn.Module],
    bf16: bool,
    fp32_units: list[nn.Module] | None = None,
) -> nn.Module:
    """Wrap for data parallelism. Returns the module to call forward on.

    `ddp`: replicated weights, all-reduced gradients. `fsdp2`: every block then the root sharded
    with `fully_shard`; with `bf16`, parameters are cast to bf16 for compute while the sharded
    fp32 parameters stay the optimiser's master weights and gradients reduce in fp32.
    `fp32_units` (e.g. the depth head) are sharded on their own and always compute in fp32.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown parallel strategy '{strategy}'; choose from {list(STRATEGIES)}")
    if strategy == "none" or not env.enabled:
        return model
    if strategy == "ddp":
        ids = [env.device.index] if env.device.type == "cuda" else None
        # Some parameters legitimately get no gradient in a step (the depth stream during T2I,
        # the text stream of the last joint block), so DDP must look for unused ones.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=True
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32
    )
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    for unit in fp32_units or []:
        fully_shard(unit, mp_policy=fp32)
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def no_grad_sync(engine: nn.Module, strategy: str, sync: bool) -> AbstractContextManager[Any]:
    """Skip gradient synchronisation on all but the last micro-step of an accumulation."""
    if sync:
        return nullcontext()
    if isinstance(engine, nn.parallel.DistributedDataParallel):
        return engine.no_sync()
    if strategy == "fsdp2" and hasattr(engine, "set_requires_gradient_sync"):
        engine.set_requires_gradient_sync(False)
        return _ResyncOnExit(engine)
    return nullcontext()


class _ResyncOnExit(AbstractContextManager[None]):
    def __init__(self, engine: nn.Module) -> None:
        self.engine = engine

    def __exit__(self, *exc: object) -> None:
        self.engine.set_requires_gradient_sync(True)  # type: ignore[operator]
