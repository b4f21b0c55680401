"""Checkpoints: safetensors weights + YAML config (no pickled classes), atomic crash-safe commits,
and the SHA-256 manifest that a training resume checks before it loads anything.

Layout of a checkpoint directory:
    model.safetensors  weights for inference (the EMA weights when training used EMA)
    config.yaml        the resolved `ModelConfig`
    meta.json          step, stage, and what the weights are
    train_state/       (training checkpoints) raw weights, optimiser and EMA state: a
                       torch.distributed.checkpoint (DCP) folder, reshardable to any world size
    trainer.json       (training checkpoints) step, bad-step and skip counts, data position
    manifest.json      (training checkpoints) size + SHA-256 of every other file
A directory is assembled as `X.tmp`, fsynced, and renamed into place. Replacing `X` moves it to
`X.old` first; a crash between the two renames leaves `X.old`, which every reader here falls back
to (`checkpoint_dir`) and the next commit of `X` removes.

Trust: inference loads (`load_model`) read safetensors, YAML and JSON only. A resume also reads
`train_state/.metadata`, which DCP unpickles, so a resume could run code planted in the folder.
The trainer therefore checks every file against `manifest.json`, and the manifest against the
SHA-256 recorded in the run's `checkpoints/latest` pointer, before it loads anything. That catches
a truncated or corrupted file and an edited or swapped state file; it cannot stop someone able to
rewrite every file of the run folder (pointer included). Only resume runs you trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..backbones import build_model
from ..config import ModelConfig, from_dict, read_yaml_mapping, save_yaml
from ..model.denoiser import ModalityForcingModel
from ..sampling.config import checked_sampling

WEIGHTS, CONFIG, META, MANIFEST = "model.safetensors", "config.yaml", "meta.json", "manifest.json"
WEIGHTS_INDEX = "model.safetensors.index.json"  # sharded weights (`write_inference_files`)
MANIFEST_FORMAT = "modality-forcing-manifest/1"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def write_inference_files(
    path: Path, model_cfg: ModelConfig, weights: dict[str, torch.Tensor], meta: dict[str, Any],
    max_shard_bytes: int | None = None,
) -> None:  # fmt: skip
    """Weights (safetensors), config (YAML) and meta (JSON) into an existing directory.

    With `max_shard_bytes`, weights larger than that are split into `model-0000k-of-0000n.
    safetensors` files of at most that size each (a tensor larger than it gets a file of its
    own) plus `model.safetensors.index.json` mapping every tensor to its file, as transformers
    and diffusers shard checkpoints; `read_checkpoint_weights` reads either layout.
    """
    weights = _contiguous(weights)
    total = sum(t.numel() * t.element_size() for t in weights.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(weights, str(path / WEIGHTS))
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, tensor in weights.items():
            nbytes = tensor.numel() * tensor.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = tensor
            size += nbytes
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for name, shard in zip(names, shards, strict=True):
            save_file(shard, str(path / name))
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: n for n, shard in zip(names, shards, strict=True)
                                for k in shard}}  # fmt: skip
        (path / WEIGHTS_INDEX).write_text(json.dumps(index, indent=1))
    save_yaml(portable_paths(model_cfg, path), path / CONFIG)
    (path / META).write_text(json.dumps(meta, indent=2))


# --------------------------------------------------------------------------------------------
# base models (frozen codec, text encoder, backbone): never stored as absolute local paths
# --------------------------------------------------------------------------------------------

BASE_MODELS = ("codec", "text", "backbone")  # ModelConfig parts with a `pretrained` folder
_HUB_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")


def portable_paths(cfg: ModelConfig, where: Path) -> ModelConfig:
    """`cfg` with its base-model folders as a checkpoint in `where` stores them: a Hugging Face
    cache snapshot as its Hub id ("org/name"), another existing folder relative to `where`,
    anything else (a Hub id, a path that does not exist here) as it is."""
    parts = {}
    for part in BASE_MODELS:
        sub = getattr(cfg, part)
        value = sub.pretrained
        if value and Path(value).is_absolute() and Path(value).exists():
            cached = _HUB_CACHE.search(Path(value).as_posix())
            value = (f"{cached[1]}/{cached[2]}" if cached
                     else os.path.relpath(value, Path(where).resolve()))  # fmt: skip
        parts[part] = dataclasses.replace(sub, pretrained=value)
    return dataclasses.replace(cfg, **parts)


def resolve_base_models(
    cfg: ModelConfig, where: Path, overrides: dict[str, str] | None = None,
    resolve: Callable[[str], str] | None = None,
) -> ModelConfig:  # fmt: skip
    """`cfg` with its base-model folders made usable here: `overrides` ({part: folder or Hub id},
    parts in `BASE_MODELS`) first, a relative path against the checkpoint folder `where`, a Hub
    id through `resolve` (e.g. a snapshot download) when no such local folder exists."""
    unknown = sorted(set(overrides or {}) - set(BASE_MODELS))
    if unknown:
        raise ValueError(f"unknown base model(s) {unknown}; choose from {list(BASE_MODELS)}")
    parts = {}
    for part in BASE_MODELS:
        sub = getattr(cfg, part)
        value = (overrides or {}).get(part, sub.pretrained)
        if value and not Path(value).is_absolute():
            local = Path(where) / value
            if local.exists():
                value = str(local.resolve())
            elif resolve is not None and not Path(value).exists():
                value = resolve(value)
        parts[part] = dataclasses.replace(sub, pretrained=value)
    return dataclasses.replace(cfg, **parts)


# --------------------------------------------------------------------------------------------
# crash-safe directory commits
# --------------------------------------------------------------------------------------------


def temp_dir_for(path: str | Path) -> Path:
    """A fresh temporary sibling directory to assemble `path` in."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk (directories: POSIX only)."""
    flags = os.O_RDONLY
    if path.is_dir():
        if not hasattr(os, "O_DIRECTORY"):
            return  # Windows cannot open a directory to fsync it
        flags |= os.O_DIRECTORY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_dir(tmp: Path, path: str | Path) -> Path:
    """Rename a finished temporary directory into place, replacing an existing one.

    Every file and directory of `tmp` is fsynced first, and the parent after each rename, so a
    power loss leaves either the old or the new directory. A crash between the two renames
    leaves only `path.old`; readers fall back to it (`checkpoint_dir`) and this removes it.
    """
    path = Path(path)
    old = path.with_name(path.name + ".old")
    for item in sorted(tmp.rglob("*"), reverse=True):  # contents before their directories
        fsync_path(item)
    fsync_path(tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
        fsync_path(path.parent)
    os.rename(tmp, path)
    fsync_path(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def checkpoint_dir(path: str | Path) -> Path:
    """`path`, or `path.old` when a crash inside `commit_dir` left only that behind."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / CONFIG).is_file():
        return old
    return path


def write_checkpoint(
    path: str | Path, model_cfg: ModelConfig, weights: dict[str, torch.Tensor],
    meta: dict[str, Any], max_shard_bytes: int | None = None,
) -> Path:  # fmt: skip
    """Write an inference checkpoint directory atomically (temp dir + rename), replacing one;
    `max_shard_bytes` as in `write_inference_files`."""
    tmp = temp_dir_for(path)
    write_inference_files(tmp, model_cfg, weights, meta, max_shard_bytes)
    return commit_dir(tmp, path)


def has_weights(path: str | Path) -> bool:
    """Whether a directory holds checkpoint weights (one file or a shard index)."""
    path = checkpoint_dir(path)
    return (path / WEIGHTS).is_file() or (path / WEIGHTS_INDEX).is_file()


# --------------------------------------------------------------------------------------------
# manifest: size + SHA-256 of every file a resume reads
# --------------------------------------------------------------------------------------------


def sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_files(path: Path) -> list[str]:
    """Relative POSIX names of every file under checkpoint `path` except the manifest, sorted."""
    names = (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return sorted(n for n in names if n != MANIFEST)


def hash_files(path: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """{name: {size, sha256}} of the files `names` under `path` (ranks can split the list)."""
    return {n: {"size": (path / n).stat().st_size, "sha256": sha256_file(path / n)} for n in names}


def write_manifest(path: Path, files: dict[str, dict[str, Any]]) -> str:
    """Write `manifest.json` (from `hash_files`) into `path`; returns the manifest's SHA-256."""
    text = json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True)
    (path / MANIFEST).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def _untrusted(file: Path, why: str) -> ValueError:
    return ValueError(
        f"checkpoint file '{file}' {why}: the training state may have been tampered with or "
        "corrupted; refusing to load it (only resume runs you trust)"
    )


def read_manifest(path: Path, sha256: str) -> dict[str, dict[str, Any]]:
    """The manifest of checkpoint `path` after checking it hashes to `sha256` and lists exactly
    the files on disk. Reads JSON only; no file content is loaded.

    Raises:
        ValueError: naming the manifest or the file that does not match.
    """
    file = path / MANIFEST
    if not file.is_file():
        raise _untrusted(file, "is missing")
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _untrusted(file, "does not match the SHA-256 in the run's checkpoints/latest")
    files = json.loads(data).get("files")
    if not isinstance(files, dict):
        raise _untrusted(file, "lists no files")
    differ = sorted(set(files) ^ set(checkpoint_files(path)))
    if differ:
        name = differ[0]
        raise _untrusted(path / name, "is missing" if name in files else "is not in the manifest")
    return files


def check_files(path: Path, files: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Check the size, then the SHA-256, of each of `names` against the manifest `files`.

    Raises:
        ValueError: naming the first file that does not match.
    """
    for name in names:
        want, file = files[name], path / name
        if file.stat().st_size != want["size"]:
            raise _untrusted(file, f"has {file.stat().st_size} bytes, not {want['size']}")
        if sha256_file(file) != want["sha256"]:
            raise _untrusted(file, "does not match its SHA-256 in the manifest")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def read_model_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of a checkpoint directory.

    Raises:
        FileNotFoundError: `path` has no config.yaml.
        ValueError: config.yaml is not valid YAML, not a mapping, or holds invalid values.
    """
    file = checkpoint_dir(path) / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"'{path}' is not a checkpoint directory (no {CONFIG})")
    data = read_yaml_mapping(file, "checkpoint config")
    try:
        return from_dict(ModelConfig, data)
    except ValueError as err:
        raise ValueError(f"{err} (checkpoint config '{file}')") from None


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file as {name: tensor}; ValueError naming the file when it is unreadable."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"'{file}' is not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None


def read_checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint directory's weights: `model.safetensors`, or the shards its
    `model.safetensors.index.json` lists (every listed tensor must be found in its file)."""
    path = checkpoint_dir(path)
    if (path / WEIGHTS).is_file():
        return read_weights(path / WEIGHTS)
    if not (path / WEIGHTS_INDEX).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' has no {WEIGHTS} (nor {WEIGHTS_INDEX})")
    try:
        weight_map = json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"'{path / WEIGHTS_INDEX}' is not a weight index: {err}") from None
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(set(weight_map.values())):
        if Path(file).name != file:
            raise ValueError(
                f"'{path / WEIGHTS_INDEX}' names a file outside the checkpoint: {file}"
            )
        weights.update(read_weights(path / file))
    missing = sorted(set(weight_map) - set(weights))
    if missing:
        raise ValueError(
            f"'{path}': shards lack {len(missing)} indexed tensors, e.g. {missing[:3]}"
        )
    return weights


def load_model(
    path: str | Path, device: str | torch.device = "cpu", strict: bool = True,
    base_models: dict[str, str] | None = None, resolve: Callable[[str], str] | None = None,
) -> ModalityForcingModel:  # fmt: skip
    """Build the model from `config.yaml` and load its weights (one file or shards; eval mode).
    `base_models` and `resolve`: where the frozen base models are (`resolve_base_models`)."""
    path = checkpoint_dir(path)
    cfg = resolve_base_models(read_model_config(path), path, base_models, resolve)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(read_checkpoint_weights(path), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint '{path}' does not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()


def read_meta(path: str | Path) -> dict[str, Any]:
    file = checkpoint_dir(path) / META
    return json.loads(file.read_text()) if file.is_file() else {}


def read_sampling(path: str | Path) -> dict[str, dict[str, Any]]:
    """The per-mode sampling defaults a checkpoint carries in meta.json, or {}."""
    where = f"'{checkpoint_dir(path) / META}' sampling"
    return checked_sampling(read_meta(path).get("sampling") or {}, where)


def export_checkpoint(
    src: str | Path, out: str | Path, dtype: str = "bfloat16", max_shard_mb: float | None = None,
    sampling: dict[str, dict[str, Any]] | None = None,
) -> Path:  # fmt: skip
    """Copy a checkpoint's inference weights (cast to `dtype`) + config, without training state.

    bf16 halves the size of a shipped checkpoint; loading casts back to the model's float32.
    `max_shard_mb` splits the weights into files of at most that many MiB (e.g. 16, to carry a
    checkpoint back from a machine that returns files of limited size). `sampling` ({"guidance":
    {mode: scale}, "steps": {mode: n}}, chosen on val: scripts/tune_sampling.py) is stored in
    meta.json as the checkpoint's own defaults, which `ModalityForcingPipeline` uses.
    """
    cfg = read_model_config(src)
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype) or not target.is_floating_point:
        raise ValueError(f"unknown dtype '{dtype}'; choose from ['bfloat16', 'float16', 'float32']")
    if max_shard_mb is not None and max_shard_mb <= 0:
        raise ValueError(f"max_shard_mb must be > 0, got {max_shard_mb}")
    weights = read_checkpoint_weights(src)
    weights = {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}
    meta = {**read_meta(src), "exported_from": str(src), "dtype": dtype}
    if sampling:
        meta["sampling"] = {**meta.get("sampling", {}), **checked_sampling(sampling, "sampling")}
    shard = None if max_shard_mb is None else int(max_shard_mb * 2**20)
    return write_checkpoint(out, cfg, weights, meta, max_shard_bytes=shard)
