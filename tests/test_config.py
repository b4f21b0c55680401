"""Config presets, YAML round trips and dotted overrides."""

import pytest

from modality_forcing.config import (
    TrainConfig,
    load_train_config,
    model_preset,
    resolve_train_config,
    save_yaml,
)


def test_preset_then_overrides(tmp_path):
    cfg = resolve_train_config({"preset": "tiny", "model": {"num_layers": 3}}, ["optim.lr=0.01"])
    assert cfg.model.hidden_size == model_preset("tiny").hidden_size
    assert cfg.model.num_layers == 3 and cfg.optim.lr == 0.01
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_train_config(tmp_path / "c.yaml")
    assert again == cfg and isinstance(again.optim.betas, tuple)


def test_bad_configs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        resolve_train_config({"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        resolve_train_config({"preset": "huge"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"key\.sub=value"):
        resolve_train_config({}, ["no_equals"])
    assert TrainConfig().stage == "mf"


def test_packaged_configs_load_by_name_and_by_file(tmp_path, monkeypatch):
    from modality_forcing.config import config_path, packaged_configs

    assert {"cpu-s-t2i", "cpu-s-mf", "flagship-t2i", "flagship-mf", "tiny"} <= set(
        packaged_configs()
    )
    monkeypatch.chdir(tmp_path)  # away from the source checkout: only the package has them
    by_name = load_train_config("cpu-s-mf", ["max_steps=7"])
    assert by_name.stage == "mf" and by_name.max_steps == 7
    assert load_train_config("cpu-s-mf.yaml") == load_train_config(config_path("cpu-s-mf"))
    (tmp_path / "cpu-s-mf.yaml").write_text("stage: t2i\n")  # a local file wins over the name
    assert load_train_config("cpu-s-mf.yaml").stage == "t2i"
    with pytest.raises(FileNotFoundError, match=r"no packaged config.*packaged: .*cpu-s-mf"):
        load_train_config("cpu-s-xl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_train_config("somewhere/cpu-s-mf.yaml")  # a path is a path, never a name
