"""Checkpoints: safetensors weights + YAML config (no pickled classes), and a training-state file.

Layout of a checkpoint directory:
    model.safetensors      weights for inference (the EMA weights when training used EMA)
    config.yaml            the resolved `ModelConfig`
    meta.json              step, stage, and what the weights are
    training_state.pt      (training checkpoints only) raw weights, optimiser, scheduler, RNG,
                           data position: plain tensors and dicts, loaded with weights_only=True
Directories are written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig, from_dict, save_yaml
from .model.denoiser import ModalityForcingModel
from .model.factory import build_model

WEIGHTS, CONFIG, META, STATE = "model.safetensors", "config.yaml", "meta.json", "training_state.pt"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def write_inference_files(
    path: Path, model_cfg: ModelConfig, weights: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Weights (safetensors), config (YAML) and meta (JSON) into an existing directory."""
    save_file(_contiguous(weights), str(path / WEIGHTS))
    save_yaml(model_cfg, path / CONFIG)
    (path / META).write_text(json.dumps(meta, indent=2))


def temp_dir_for(path: str | Path) -> Path:
    """A fresh temporary sibling directory to assemble `path` in."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, path: str | Path) -> Path:
    """Rename a finished temporary directory into place, replacing an existing one."""
    path = Path(path)
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


def write_checkpoint(
    path: str | Path,
    model_cfg: ModelConfig,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temp dir + rename). Replaces an existing one."""
    tmp = temp_dir_for(path)
    write_inference_files(tmp, model_cfg, weights, meta)
    if training_state is not None:
        torch.save(training_state, tmp / STATE)
    return commit_dir(tmp, path)


def read_model_config(path: str | Path) -> ModelConfig:
    import yaml

    file = Path(path) / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"'{path}' is not a checkpoint directory (no {CONFIG})")
    return from_dict(ModelConfig, yaml.safe_load(file.read_text()))


def load_model(
    path: str | Path, device: str | torch.device = "cpu", strict: bool = True
) -> ModalityForcingModel:
    """Build the model from `config.yaml` and load `model.safetensors` (eval mode)."""
    path = Path(path)
    cfg = read_model_config(path)
    model = build_model(cfg)
    if not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' has no {WEIGHTS}")
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS)), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint '{path}' does not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()


def read_meta(path: str | Path) -> dict[str, Any]:
    file = Path(path) / META
    return json.loads(file.read_text()) if file.is_file() else {}


def read_training_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / STATE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' has no {STATE}; cannot resume from it")
    return torch.load(file, map_location="cpu", weights_only=True)


def export_checkpoint(src: str | Path, out: str | Path, dtype: str = "bfloat16") -> Path:
    """Copy a checkpoint's inference weights (cast to `dtype`) + config, without training state.

    bf16 halves the size of a shipped checkpoint; loading casts back to the model's float32.
    """
    src = Path(src)
    cfg = read_model_config(src)
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype) or not target.is_floating_point:
        raise ValueError(f"unknown dtype '{dtype}'; choose from ['bfloat16', 'float16', 'float32']")
    weights = load_file(str(src / WEIGHTS))
    weights = {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}
    meta = {**read_meta(src), "exported_from": str(src), "dtype": dtype}
    return write_checkpoint(out, cfg, weights, meta)
