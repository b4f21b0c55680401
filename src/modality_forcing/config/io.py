"""Configs from and to plain data: type coercion and range validation (every error names the
dotted key), dotted overrides, YAML load and save, and the training config with its preset."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .schema import (
    MODEL_PRESETS,
    DataConfig,
    ForcingConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)

T = TypeVar("T")


def model_preset(name: str) -> ModelConfig:
    """Build the `ModelConfig` of a named size preset."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset '{name}'; choose from {sorted(MODEL_PRESETS)}")
    return from_dict(ModelConfig, MODEL_PRESETS[name])


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
        "val_every": _at_least(0),  # 0: no validation
        "val_scenes": _at_least(1),
        "report_to": ((lambda v: v in ("none", "tensorboard")), "must be none or tensorboard"),
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


# The configs shipped in the package (`modality-forcing train --config cpu-s-mf`).
PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the training configs shipped in the package."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: `name` itself if it exists, else the packaged config of that name (with
    or without `.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"config file '{name}' does not exist, and no packaged config has that name "
        f"(packaged: {', '.join(packaged_configs())})"
    )


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config, a file or a packaged config by name (`config_path`), or start
    from defaults when `path` is None.

    Raises:
        FileNotFoundError: neither a file nor a packaged config of that name.
        ValueError: invalid YAML or an invalid value; the message names the key and the file.
    """
    if path is None:
        return resolve_train_config({}, overrides)
    path = config_path(path)
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
