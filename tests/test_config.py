import pytest

from training_backend.config import CriiConfig
from training_backend.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    config = CriiConfig().validate()
    assert CriiConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "section, key, value, fragment",
    [
        ("train", "method", "magic", "train.method must be one of"),
        ("train", "device", "tpu", "train.device"),
        ("train", "learning_rate", -1.0, "train.learning_rate must be between"),
        ("train", "learning_rate", float("nan"), "finite number"),
        ("train", "batch_size", 0, "train.batch_size must be between"),
        ("train", "crop_size", 100, "multiple of 16"),
        ("train", "iterations", 2.5, "must be an integer"),
        ("train", "seed", True, "must be an integer"),
        ("model", "levels", 9, "model.levels"),
        ("model", "num_classes", 1, "model.num_classes"),
        ("loss", "margin", 2.0, "loss.margin"),
        ("loss", "teacher", "oracle", "loss.teacher"),
    ],
)
def test_out_of_range_values_are_named(section, key, value, fragment):
    data = CriiConfig().to_dict()
    data[section][key] = value
    with pytest.raises(ConfigError, match=fragment):
        CriiConfig.from_dict(data)


def test_no_budget_is_an_error():
    data = CriiConfig().to_dict()
    data["train"].update(iterations=None, seconds=None)
    with pytest.raises(ConfigError, match="give a budget"):
        CriiConfig.from_dict(data)


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid:"):
        CriiConfig.from_dict({"train": {"learning_rat": 0.1}})
    with pytest.raises(ConfigError, match="unknown config sections"):
        CriiConfig.from_dict({"optimiser": {}})


def test_context_and_channels_must_agree():
    data = CriiConfig().to_dict()
    data["train"]["context"] = 2
    with pytest.raises(ConfigError, match="in_channels"):
        CriiConfig.from_dict(data)
    data["model"]["in_channels"] = 5
    assert CriiConfig.from_dict(data).model.in_channels == 5
