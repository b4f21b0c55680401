"""Dataclass configs for every part of the project (`schema.py`: the records and the size
presets) and their plain-data form (`io.py`: validation, overrides, YAML load and save)."""

from .io import (
    apply_overrides,
    config_path,
    from_dict,
    load_train_config,
    model_preset,
    packaged_configs,
    read_yaml_mapping,
    resolve_train_config,
    save_yaml,
    to_dict,
    validate,
)
from .schema import (
    MODEL_PRESETS,
    BackboneConfig,
    CodecConfig,
    DataConfig,
    ForcingConfig,
    LossConfig,
    MixtureEntry,
    ModelConfig,
    OptimConfig,
    TextConfig,
    TrainConfig,
)

__all__ = [
    "MODEL_PRESETS", "BackboneConfig", "CodecConfig", "DataConfig", "ForcingConfig",
    "LossConfig", "MixtureEntry", "ModelConfig", "OptimConfig", "TextConfig", "TrainConfig",
    "apply_overrides", "config_path", "from_dict", "load_train_config", "model_preset",
    "packaged_configs", "read_yaml_mapping", "resolve_train_config", "save_yaml", "to_dict",
    "validate",
]  # fmt: skip
