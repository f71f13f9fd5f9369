import pytest

from training_backend.config import AUGMENTATIONS, CriiConfig, PredictConfig
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
        ("train", "augment", "rotate", "train.augment must be one of"),
        ("train", "augment", None, "train.augment must be one of"),
        ("predict", "prior_blend", 1.5, "predict.prior_blend must be between"),
        ("predict", "prior_blend", -0.1, "predict.prior_blend must be between"),
        ("predict", "prior_blend", "half", "predict.prior_blend must be a finite number"),
        ("predict", "prior_blend", True, "predict.prior_blend must be a finite number"),
        ("predict", "prior_class_split", 1.5, "predict.prior_class_split must be between"),
        ("predict", "prior_class_split", -0.5, "predict.prior_class_split must be between"),
        ("predict", "prior_class_max_contrast", -1.0, "predict.prior_class_max_contrast must be"),
        ("predict", "prior_class_max_contrast", "high", "predict.prior_class_max_contrast must"),
        ("loss", "use_prior", 1, "loss.use_prior must be true or false"),
        ("loss", "use_prior", "yes", "loss.use_prior must be true or false"),
        ("loss", "prior_align", "no", "loss.prior_align must be true or false"),
        ("train", "mixed_precision", 0, "train.mixed_precision must be true or false"),
        ("train", "mixed_precision", None, "train.mixed_precision must be true or false"),
        ("predict", "keep_annotated_components", "false", "predict.keep_annotated_components"),
        ("predict", "keep_annotated_components", 1, "predict.keep_annotated_components"),
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


def test_new_settings_have_valid_defaults():
    config = CriiConfig()
    assert config.train.augment in AUGMENTATIONS
    assert config.predict == PredictConfig()
    assert 0.0 <= config.predict.prior_blend <= 1.0
    assert isinstance(config.predict.keep_annotated_components, bool)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_predict_and_augment_settings_round_trip(augment):
    config = CriiConfig()
    config.train.augment = augment
    config.train.mixed_precision = False
    config.loss.use_prior = False
    config.predict.prior_blend = 0.75
    config.predict.prior_class_split = 0.5
    config.predict.prior_class_max_contrast = None
    config.predict.keep_annotated_components = False
    data = config.validate().to_dict()
    assert data["predict"] == {
        "prior_blend": 0.75,
        "prior_class_split": 0.5,
        "prior_class_max_contrast": None,
        "keep_annotated_components": False,
    }
    assert data["train"]["augment"] == augment
    back = CriiConfig.from_dict(data)
    assert back == config
    assert back.train.augment == augment and back.predict.prior_blend == 0.75
    assert back.predict.keep_annotated_components is False


@pytest.mark.parametrize("blend", [0, 0.0, 1, 1.0])
def test_prior_blend_takes_both_ends(blend):
    data = CriiConfig().to_dict()
    data["predict"]["prior_blend"] = blend
    assert CriiConfig.from_dict(data).predict.prior_blend == blend


def test_an_old_config_without_the_new_settings_loads_with_defaults():
    data = CriiConfig().to_dict()
    del data["predict"]
    del data["train"]["augment"]
    config = CriiConfig.from_dict(data)
    assert config.predict == PredictConfig()
    assert config.train.augment == CriiConfig().train.augment
    data["predict"] = None  # an empty section in a settings file
    assert CriiConfig.from_dict(data).predict == PredictConfig()


def test_unknown_predict_settings_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown predict settings.*prior_blend"):
        CriiConfig.from_dict({"predict": {"blend": 0.5}})
