"""Dataclass configs for every part of the project, size presets, and YAML load/save with overrides.

Configs are plain data: the model, trainer and CLI read them; nothing here imports the model.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .modalities import DEPTH, IMAGE

T = TypeVar("T")


@dataclass
class TextConfig:
    """Text encoder. `kind`: `small` (trainable, for procedural captions) or `hf` (transformers)."""

    kind: str = "small"
    dim: int = 256  # width of the text tokens handed to the DiT (after projection)
    max_length: int = 64  # tokens per caption, padding included (procedural captions: <= 60)
    num_layers: int = 2  # `small` only
    num_heads: int = 4  # `small` only
    vocab_size: int = 512  # `small` only: word-level vocabulary, hashed beyond the base words
    pretrained: str | None = None  # `hf`: local directory of a transformers encoder
    hidden_layers: tuple[int, ...] = (-1,)  # `hf`: hidden states concatenated along channels
    trainable: bool = True  # `hf` encoders are normally frozen (False)
    chat_template: bool = False  # `hf`: wrap prompts in the tokenizer's chat template (Qwen3)
    dtype: str | None = None  # `hf`: load dtype of the backbone, e.g. "bfloat16"


@dataclass
class CodecConfig:
    """Image codec. `pixel`: RGB pixel patches. `vae`: a diffusers autoencoder from a directory."""

    kind: str = "pixel"
    pretrained: str | None = None
    subfolder: str | None = None


@dataclass
class BackboneConfig:
    """A diffusers T2I backbone post-trained with the depth stream (family flux2, flux or sd3).

    Frozen parts (text encoders, VAE, the trunk under LoRA) are reloaded from `pretrained` whenever
    the model is built, so checkpoints hold only the trained tensors.
    """

    pretrained: str | None = None  # local diffusers pipeline directory (or a transformer dir)
    subfolder: str | None = "transformer"  # transformer subfolder of `pretrained`
    text_encoder: str = "pipeline"  # `pipeline`: the backbone's own encoders | `small`: model.text
    text_max_length: int | None = None  # None: the pipeline's default (FLUX 512, SD3 T5 256)
    vae_subfolder: str | None = "vae"  # None: use `model.codec` instead (e.g. pixel in tests)
    dtype: str | None = None  # load dtype of the frozen parts (encoders, VAE, trunk under LoRA)
    lora_rank: int = 0  # 0 = full fine-tuning of the trunk; > 0 = LoRA (peft) on the trunk
    lora_alpha: float | None = None  # None = lora_rank (scale 1)
    lora_targets: tuple[str, ...] = ()  # module-name suffixes; () = every attention/MLP linear
    depth_weights: str = "copy"  # dual-stream blocks: `copy` (own, init from image) | `shared`
    depth_decoder_layers: int = 2  # depth-only blocks after the trunk, before the fp32 head
    guidance: float = 3.5  # guidance-embedding value for guidance-distilled backbones


@dataclass
class ModelConfig:
    """Native MM-DiT: shared trunk blocks, then `decoder_layers` own blocks per modality."""

    family: str = "native"  # `native` MM-DiT; adapted diffusers backbones register more
    hidden_size: int = 256
    num_layers: int = 6  # joint blocks: per-stream weights (text, image, depth), joint attention
    num_single_layers: int = 0  # then shared-weight blocks with per-token (per-modality) adaLN
    num_heads: int = 4
    patch_size: int = 4  # in codec-latent pixels (for `pixel`, image pixels)
    mlp_ratio: float = 4.0
    decoder_layers: int = 1
    modalities: tuple[str, ...] = (IMAGE, DEPTH)
    rope_theta: float = 100.0
    cross_modality_time: bool = False  # gated mixing of the other modality's timestep embedding
    depth_t_min: float = 0.05  # clamp in v = (x_t - x0_hat) / max(t, t_min)
    depth_prediction: str = "x0"  # what the depth head predicts: `x0` | `velocity`
    image_prediction: str = "velocity"  # what the image head predicts: `velocity` | `x0`
    text_pooled: bool = False  # the caption's mean token, through an MLP, added to every adaLN
    refine_width: int = 0  # > 0: a light conv refinement of each prediction (`PixelRefiner`)
    resolution: tuple[int, int] | None = None  # (H, W) trained at; set by the trainer
    text: TextConfig = field(default_factory=TextConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # families other than native


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Tests: a few thousand parameters, runs in milliseconds.
    "tiny": dict(
        hidden_size=32, num_layers=2, num_heads=2, patch_size=4, decoder_layers=1,
        text=dict(dim=32, num_layers=1, num_heads=2, max_length=16),
    ),
    # CPU: trains in minutes (cpu-s) to an hour (cpu-m) on 2 cores at 32x32 / 64x64. Mostly
    # shared-weight single blocks: the same FLOPs per token as per-stream blocks at a third of
    # the parameters, so the shipped demo checkpoint stays small.
    "cpu-s": dict(
        hidden_size=256, num_layers=1, num_single_layers=5, num_heads=4, patch_size=4,
        decoder_layers=1, text=dict(dim=256, num_layers=2, num_heads=4),
    ),
    "cpu-m": dict(
        hidden_size=384, num_layers=2, num_single_layers=6, num_heads=6, patch_size=4,
        decoder_layers=2, text=dict(dim=384, num_layers=2, num_heads=6),
    ),
    # The paper's from-scratch scale range. DiT parameters (`modality-forcing presets`): ~371M,
    # ~1.0B, ~3.3B. FLUX-like layout: a few per-stream joint blocks, then shared single blocks.
    "mf-370m": dict(
        hidden_size=1024, num_layers=2, num_single_layers=9, num_heads=16, patch_size=2,
        decoder_layers=2, text=dict(dim=1024, num_layers=4, num_heads=16, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
    "mf-1b": dict(
        hidden_size=1536, num_layers=3, num_single_layers=10, num_heads=24, patch_size=2,
        decoder_layers=2, text=dict(dim=1536, num_layers=4, num_heads=24, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
    "mf-3b": dict(
        hidden_size=2304, num_layers=4, num_single_layers=18, num_heads=36, patch_size=2,
        decoder_layers=2, text=dict(dim=2304, num_layers=4, num_heads=36, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
}  # fmt: skip


def model_preset(name: str) -> ModelConfig:
    """Build the `ModelConfig` of a named size preset."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset '{name}'; choose from {sorted(MODEL_PRESETS)}")
    return from_dict(ModelConfig, MODEL_PRESETS[name])


@dataclass
class ForcingConfig:
    """Per-sample noise-level policy (the "forcing"). Probabilities of the four corners sum to 1."""

    policy: str = "corners"
    # Defaults measured by `bench depth` (docs/depth_quality.md): half the samples learn
    # image -> depth, half of those from pure-noise depth (the one-step readout).
    p_image_clean: float = 0.5  # t_image = 0: learn image -> depth
    p_depth_clean: float = 0.2  # t_depth = 0: learn depth -> image
    p_both_noised: float = 0.3  # independent shifted logit-normal t's
    p_depth_absent: float = 0.0  # t_depth = 1 and no depth loss: plain T2I sample
    shift_mu: float = 1.1  # logit-normal mean; > 0 favours noisier t
    shift_sigma: float = 1.0
    depth_shift_mu: float | None = None  # logit-normal mean of t_depth (None: shift_mu)
    # Image-clean samples whose depth starts from pure noise (t_depth = 1): the one-step x0
    # readout that few-step image -> depth sampling starts from (`docs/depth_quality.md`).
    p_depth_readout: float = 0.5


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {IMAGE: 1.0, DEPTH: 1.0})
    num_t_bins: int = 10  # per-t-bin loss logging
    # x0 error of masked modalities: `l1` | `mse` (l1 won on val: docs/depth_quality.md)
    depth_loss: str = "l1"
    distill_weight: float = 0.0  # self-distillation toward the frozen T2I model (image stream)
    # Weight of object pixels in the image loss, relative to floor/walls/sky (batches with an
    # `object_mask`, i.e. the procedural world); objects cover ~8% of a 32x32 frame
    object_weight: float = 1.0


@dataclass
class MixtureEntry:
    """One member of `data.source: mixture` (readers in `data/training_sets/`)."""

    name: str = "procedural"  # training-set reader: hypersim | vkitti2 | kitti_depth | points | ...
    root: str | None = None  # dataset root (unused by `procedural`)
    weight: float = 1.0  # sampling weight, relative to the other members
    kind: str | None = None  # `dense` | `sparse`; None: the reader's own (sparse when sparsified)
    sparsify: str | None = None  # sparse-depth simulator for this member, e.g. "lidar:32"
    options: dict[str, Any] = field(default_factory=dict)  # reader keywords, e.g. {raw_root: ...}
    # Random crop after the sparsifier, before the resize to the training size: each side keeps
    # a fraction drawn from U(crop, 1), at a uniform position (1: no crop). Moves the rows a
    # sensor covers around the frame (a LiDAR only sees a band; `docs/sparse_depth.md`).
    # None: `SPARSE_CROP` for a sparse member, no crop for a dense one (the best on val).
    crop: float | None = None


@dataclass
class DataConfig:
    """Where training batches come from: the procedural world on the fly, or webdataset shards."""

    source: str = "procedural"  # `procedural` | `shards` | `mixture`
    shards: list[str] = field(default_factory=list)  # paths or brace patterns for `shards`
    height: int = 32
    width: int = 32
    # e.g. "lidar:32"; applied on the fly to procedural depth, without the random crop that a
    # sparse `mixture` member gets (`MixtureEntry.crop`)
    sparsify: str | None = None
    sparse_fraction: float = 0.0  # fraction of each batch sparsified (the rest stays dense)
    num_workers: int = 0
    shadows: bool = True
    num_scenes: int | None = None  # `procedural`: cycle through the first N training scenes
    mixture: list[MixtureEntry] = field(default_factory=list)  # members of `source: mixture`
    depth_fill: str = "neutral"  # noisy depth at missing pixels: neutral | noise | nearest


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"  # `cosine` | `constant` | `wsd` (constant, then a linear cool-down)
    min_lr_ratio: float = 0.1
    decay_steps: int = 0  # `wsd`: the cool-down's length, ending at `max_steps`
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA


@dataclass
class TrainConfig:
    """Everything a training run needs; saved resolved into the run directory."""

    stage: str = "mf"  # `t2i` (image + captions only) | `mf` (Modality Forcing post-training)
    preset: str | None = "cpu-s"  # model preset applied before `model` overrides
    model: ModelConfig = field(default_factory=ModelConfig)
    forcing: ForcingConfig = field(default_factory=ForcingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init_from: str | None = None  # checkpoint dir to initialise weights from (e.g. stage 1)
    out_dir: str = "runs/default"
    batch_size: int = 64  # global batch per optimiser step = world_size x grad_accum x micro-batch
    grad_accum: int = 1
    parallel: str = "none"  # `none` | `ddp` | `fsdp2` (under torchrun)
    activation_checkpointing: bool = False  # recompute each block in the backward pass
    compile: bool = False  # torch.compile each block (minutes of compile time, ~2x on CPU)
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (after a checkpoint) past this much training time,
    # counted over all sessions of a resumed run
    # `auto`: bf16 autocast only where the device computes it natively, else fp32 (decided and
    # logged once per run: `precision.resolve_precision`); `bf16` | `fp32` force it.
    precision: str = "auto"
    device: str | None = None  # None: the rank's CUDA device under torchrun, else cuda > mps > cpu
    caption_dropout: float = 0.1
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 500
    ckpt_every_minutes: float | None = None  # also checkpoint after this much wall time
    max_bad_steps: int = 10  # consecutive non-finite losses before stopping
    keep_checkpoints: int = 2  # resumable checkpoints kept (0: keep all, e.g. for curves)


# ---------------------------------------------------------------------------------------------
# validation: types in `_coerce`, ranges in `_RANGES`; every error names the dotted key
# ---------------------------------------------------------------------------------------------

Rule = tuple[Callable[[Any], bool], str]


def _at_least(low: int) -> Rule:
    return (lambda v: v >= low), f"must be >= {low}"


_UNIT: Rule = (lambda v: 0 <= v <= 1), "must be in [0, 1]"
_POSITIVE: Rule = (lambda v: v > 0), "must be > 0"
_STEPS = ("batch_size", "grad_accum", "max_steps", "log_every", "ckpt_every", "max_bad_steps")
_PROBABILITIES = ("p_image_clean", "p_depth_clean", "p_both_noised", "p_depth_absent",
                  "p_depth_readout")  # fmt: skip

# Range rules per config class and field (None values of optional fields are not checked).
_RANGES: dict[type, dict[str, Rule]] = {
    TrainConfig: {
        **{name: _at_least(1) for name in _STEPS},
        "sample_every": _at_least(0),  # 0: no preview grids
        "keep_checkpoints": _at_least(0),  # 0: keep all
        "caption_dropout": _UNIT,
        "max_minutes": _POSITIVE,
        "ckpt_every_minutes": _POSITIVE,
        "precision": ((lambda v: v in ("auto", "bf16", "fp32")), "must be auto, bf16 or fp32"),
    },
    DataConfig: {
        **{name: _at_least(1) for name in ("height", "width")},  # num_scenes: the source checks
        "sparse_fraction": _UNIT,
        "num_workers": _at_least(0),
    },
    ForcingConfig: {**{name: _UNIT for name in _PROBABILITIES}, "shift_sigma": _at_least(0)},
    LossConfig: {
        "num_t_bins": _at_least(1),
        "distill_weight": _at_least(0),
        "object_weight": _POSITIVE,
    },
    ModelConfig: {
        **{
            f"{m}_prediction": ((lambda v: v in ("x0", "velocity")), "must be x0 or velocity")
            for m in ("image", "depth")
        },
        "refine_width": _at_least(0),
    },
    OptimConfig: {
        "lr": ((lambda v: 0 < v < math.inf), "must be a finite number > 0"),
        "warmup_steps": _at_least(0),
        "decay_steps": _at_least(0),
        "min_lr_ratio": _UNIT,
        "grad_clip": _POSITIVE,
        "ema_decay": ((lambda v: 0 <= v < 1), "must be in [0, 1) (0 disables EMA)"),
    },
}  # mixture weights: checked by `Mixture`, which names the member


def _where(key: str) -> str:
    return f"config key '{key}'" if key else "config"


def _bad(key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{_where(key)}: expected {expected}, got {value!r}")


def _join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else name


def _holds(rule: Rule, value: Any) -> bool:
    try:
        return bool(rule[0](value))
    except TypeError:  # e.g. a string set in code where a number belongs
        return False


def validate(cfg: Any, key: str = "") -> None:
    """Range-check a config dataclass and the ones nested in it (`from_dict` checks the types).

    Raises:
        ValueError: naming the dotted key, e.g. `config key 'log_every': must be >= 1, got 0`.
    """
    rules = _RANGES.get(type(cfg), {})
    for f in dataclasses.fields(cfg):
        value, dotted = getattr(cfg, f.name), _join(key, f.name)
        rule = rules.get(f.name)
        if rule is not None and value is not None and not _holds(rule, value):
            raise ValueError(f"{_where(dotted)}: {rule[1]}, got {value!r}")
        if dataclasses.is_dataclass(value):
            validate(value, dotted)
        for i, item in enumerate(value if isinstance(value, list) else []):
            if dataclasses.is_dataclass(item):
                validate(item, _join(dotted, i))


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    """bool / int / float / str from YAML or CLI values; anything else raises (no guessing)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _bad(key, "true or false", value)
    number = not isinstance(value, bool)  # YAML `true` is an int to Python, not to a config
    if tp is int:
        if number and isinstance(value, int):
            return value
        if number and isinstance(value, float) and value.is_integer():  # 3.0 is 3; 2.9 is not
            return int(value)
        if isinstance(value, str):
            try:
                return _coerce_scalar(int, float(value) if "." in value else int(value), key)
            except ValueError:
                pass
        raise _bad(key, "an integer", value)
    if tp is float:
        if number and isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _bad(key, "a number", value)
    if tp is str and not isinstance(value, str):
        raise _bad(key, "a string", value)
    return value


def _coerce(tp: Any, value: Any, key: str = "") -> Any:
    """Convert a YAML/CLI value to the annotated field type, checking it on the way.

    Raises:
        ValueError: the value does not fit the type, naming the dotted `key`.
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key) if len(args) == 1 else value
    if origin in (tuple, list) and not isinstance(value, list | tuple):
        raise _bad(key, "a list", value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise _bad(key, f"a list of {len(args)} items", value)
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, _join(key, i)) for i, (a, v) in pairs)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return [_coerce(arg, v, _join(key, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(key, "a mapping", value)
        _, arg = typing.get_args(tp)
        return {k: _coerce(arg, v, _join(key, str(k))) for k, v in value.items()}
    if tp is Any:
        return value
    return _coerce_scalar(tp, value, key)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, YAML, dotted overrides
# ---------------------------------------------------------------------------------------------


def from_dict(cls: type[T], data: dict[str, Any] | None, key: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, checking types and ranges.

    The one entry point from YAML/CLI data to configs. `key` is the dotted position of `data`
    in the whole config, used in error messages.

    Raises:
        ValueError: unknown keys (with the valid names), a value of the wrong type or out of
            range, or `data` not a mapping; the message names the dotted key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _bad(key, "a mapping" if key else "a mapping at the top level", data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        dotted = [_join(key, str(name)) for name in unknown]
        raise ValueError(f"unknown field(s) {dotted} for {cls.__name__}; choose from {names}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            default = getattr(cls(), name)  # merge onto the default so partial dicts work
            value = {**to_dict(default), **value}
        kwargs[name] = _coerce(hints[name], value, _join(key, name))
    cfg = cls(**kwargs)
    validate(cfg, key)
    return cfg


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of builtins (tuples become lists), safe for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override '{item}': the value is not valid YAML ({err})") from None
        nested: dict[str, Any] = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        data = _deep_merge(data, nested)
    return data


def resolve_train_config(data: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Dict (from YAML) + overrides -> `TrainConfig`, with the model preset applied underneath."""
    if not isinstance(data, dict):
        raise _bad("", "a mapping at the top level", data)
    data = apply_overrides(data, overrides or [])
    preset = data.get("preset", TrainConfig.preset)
    if preset:
        if not isinstance(data.get("model") or {}, dict):
            raise _bad("model", "a mapping", data["model"])
        model = to_dict(model_preset(str(preset)))
        data = {**data, "model": _deep_merge(model, data.get("model") or {})}
    return from_dict(TrainConfig, data)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}).

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid YAML (naming the file and line) or not a mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{what} '{path}' is not valid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{what} '{path}' must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config (or start from defaults when `path` is None).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: invalid YAML or an invalid value; the message names the key and the file.
    """
    if path is None:
        return resolve_train_config({}, overrides)
    data = read_yaml_mapping(path)
    try:
        return resolve_train_config(data, overrides)
    except ValueError as err:
        extra = " with the --set overrides" if overrides else ""
        raise ValueError(f"{err} (config file '{path}'{extra})") from None


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass (or dict) as YAML atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    tmp.replace(path)
