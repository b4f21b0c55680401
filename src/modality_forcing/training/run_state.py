"""The part of the `Trainer` that saves and restores a run: sharded training state through
torch.distributed.checkpoint, single-file inference weights, the SHA-256 manifest, the `latest`
pointer, and a verified resume (nothing is unpickled before every hash matches).

`RunState` is a mixin: the `Trainer` provides `cfg`, `env`, `model`, `optimizer`, `ema`,
`source`, `state`, `precision`, `run_dir`, `ckpt_dir` and `_skips_before`.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from . import distributed as D
from .checkpoint import (
    check_files,
    checkpoint_dir,
    checkpoint_files,
    commit_dir,
    hash_files,
    read_manifest,
    temp_dir_for,
    write_checkpoint,
    write_inference_files,
    write_manifest,
)
from .run_dir import LATEST, METRICS, VAL_LOG, read_latest, trim_metrics, write_latest

TRAIN_STATE, TRAINER_JSON = "train_state", "trainer.json"
LOSS_PLOT = "loss.png"  # refreshed at every checkpoint


@dataclass
class TrainState:
    step: int = 0
    bad_in_a_row: int = 0
    bad_total: int = 0
    data: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # bad samples by reason, all ranks
    seconds: float = 0.0  # training wall time of every session of this run so far


class RunState:
    """Checkpoint writing and resuming of a `Trainer` (see the module docstring)."""

    cfg: Any
    env: D.DistEnv
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any
    source: Any
    state: TrainState
    precision: Any
    run_dir: Path
    ckpt_dir: Path
    _skips_before: Counter[str]
    log: Callable[[str], None]

    def _gather(self, obj: Any) -> list[Any]:
        """`obj` from every rank, in rank order (a collective; [obj] on one process)."""
        if not self.env.enabled:
            return [obj]
        out: list[Any] = [None] * self.env.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def _verified_latest(self) -> Path:
        """The latest checkpoint, once every file matches its manifest and the manifest matches
        the hash in the `latest` pointer (see `checkpoint`): nothing is unpickled before this.
        The ranks split the hashing and all raise the first mismatch found."""
        pointer = self.ckpt_dir / LATEST
        if not pointer.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in '{self.ckpt_dir}'")
        name, digest = read_latest(self.ckpt_dir)
        if not re.fullmatch(r"step_\d+", name) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(
                f"--resume: '{pointer}' names no checkpoint with a manifest hash (written by an "
                "older version?), so its training state cannot be verified; start a new run with "
                f"init_from={self.ckpt_dir / name} instead"
            )
        path = checkpoint_dir(self.ckpt_dir / name)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume: '{pointer}' names '{path}', which does not exist")
        problem = ""
        try:
            files = read_manifest(path, digest)
            check_files(path, files, sorted(files)[self.env.rank :: self.env.world_size])
        except (OSError, ValueError) as err:
            problem = str(err)
        problems = [p for p in self._gather(problem) if p]
        if problems:
            raise ValueError(problems[0])
        return path

    def _resume(self) -> None:
        from torch.distributed.checkpoint import DefaultLoadPlanner, load
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = self._verified_latest()
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd}
        if self.ema is not None:
            state["ema"] = self.ema.shadow
        where = str(path / TRAIN_STATE)
        with _single_process_dcp(self.env):
            load(state, checkpoint_id=where)  # strict; reshards to this world size
        # Parameters that never received a gradient (e.g. the depth stream during T2I, the text
        # stream of the last joint block) have no optimiser state in the checkpoint: keep the
        # freshly initialised (zero) state for those.
        optim = {"optim": optim_sd}
        with _single_process_dcp(self.env):
            load(optim, checkpoint_id=where, planner=DefaultLoadPlanner(allow_partial_load=True))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=optim["optim"])  # fmt: skip
        info = json.loads((path / TRAINER_JSON).read_text())
        if self.ema is not None:
            self.ema.num_updates = info["ema_updates"]
        self.state = TrainState(**info["train_state"])
        self._skips_before = Counter(self.state.skipped)
        if self.env.is_main:  # the steps after the checkpoint are trained (and logged) again
            for log in (METRICS, VAL_LOG):
                trim_metrics(self.run_dir / log, self.state.step)
        self.log(f"resumed from {path} at step {self.state.step}")

    # ----------------------------------------------------------------------------- one step
    def _full_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gather sharded (DTensor) tensors into full CPU tensors, one at a time (a collective
        under FSDP2), so device memory never holds more than one gathered tensor."""
        return {
            k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu()
            for k, v in state.items()
        }

    def save(self) -> Path:
        """Sharded training state from every rank + single-file inference weights from rank 0,
        a manifest of every file's SHA-256 (checked by a resume), then the `latest` pointer."""
        from torch.distributed import barrier
        from torch.distributed.checkpoint import save
        from torch.distributed.checkpoint.state_dict import get_state_dict

        step, name = self.state.step, f"step_{self.state.step:07d}"
        final_path = self.ckpt_dir / name
        tmp = temp_dir_for(final_path) if self.env.is_main else final_path.with_name(name + ".tmp")
        if self.env.enabled:
            barrier()
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        if self.ema is not None:
            state["ema"] = self.ema.shadow
        with _single_process_dcp(self.env):
            save(state, checkpoint_id=str(tmp / TRAIN_STATE))
        # Only the sharded state is in `tmp` yet (DCP's save ends in a collective): every rank
        # hashes a share of it.
        mine = hash_files(tmp, checkpoint_files(tmp)[self.env.rank :: self.env.world_size])
        hashes = {k: v for part in self._gather(mine) for k, v in part.items()}
        weights = self._full_weights(self.ema.shadow if self.ema else self.model.state_dict())
        self.state.data = self.source.state()
        self.state.skipped = self._skip_counts()
        if self.env.is_main:
            meta = {"step": step, "stage": self.cfg.stage, "weights": "ema" if self.ema else "raw",
                    "world_size": self.env.world_size,
                    "precision": self.precision.as_dict()}  # fmt: skip
            write_inference_files(tmp, self.cfg.model, weights, meta)
            info = {"train_state": to_dict(self.state),
                    "ema_updates": self.ema.num_updates if self.ema else 0}  # fmt: skip
            (tmp / TRAINER_JSON).write_text(json.dumps(info))
            rest = [n for n in checkpoint_files(tmp) if n not in hashes]
            digest = write_manifest(tmp, {**hashes, **hash_files(tmp, rest)})
            commit_dir(tmp, final_path)
            self._point_latest_to(name, digest)
            write_checkpoint(self.run_dir / "final", self.cfg.model, weights, meta)
            keep = self.cfg.keep_checkpoints
            for old in sorted(self.ckpt_dir.glob("step_???????"))[:-keep] if keep > 0 else []:
                if old.name != name:
                    shutil.rmtree(old)
            self._plot_losses()
        if self.env.enabled:
            barrier()
        return final_path

    def _plot_losses(self) -> None:
        """Refresh `loss.png` (loss per modality and per t-bin) from the metrics so far; a plot
        that fails is logged, never fatal."""
        try:
            from .curves import plot_training_curves

            plot_training_curves([self.run_dir], self.run_dir / LOSS_PLOT)
        except Exception as err:
            self.log(f"{LOSS_PLOT} not refreshed: {err}")

    def _point_latest_to(self, name: str, manifest_sha256: str) -> None:
        """Atomically point `checkpoints/latest` at `name`, with its manifest's hash: a copy
        outside the checkpoint folder, so swapping or editing that folder alone is detected."""
        write_latest(self.ckpt_dir, name, manifest_sha256)

    def _skip_counts(self) -> dict[str, int]:
        """Samples the data source skipped (or repaired), by reason, over every rank and the
        whole run (a collective)."""
        total = Counter(self._skips_before)
        for counts in self._gather(self.source.skipped()):
            total.update(counts)
        return dict(sorted(total.items()))

    # ----------------------------------------------------------------------------- loop


@contextmanager
def _single_process_dcp(env: D.DistEnv) -> Iterator[None]:
    """DCP warns on every call without a process group; that is the intended use there."""
    with warnings.catch_warnings():
        if not env.enabled:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
