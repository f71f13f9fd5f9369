import pickle

import numpy as np
import pytest
import torch

from training_backend.checkpoint import (
    FORMAT_NAME,
    CheckpointData,
    load_checkpoint,
    save_checkpoint,
)
from training_backend.config import CriiConfig
from training_backend.errors import CheckpointError
from training_backend.inference import load_model, predict_volume
from training_backend.model import build_model


def small_checkpoint(path, num_classes=3):
    config = CriiConfig()
    config.model.num_classes = num_classes
    config.model.base_width = 8
    config.model.levels = 3
    torch.manual_seed(0)
    model = build_model(config.model)
    save_checkpoint(
        path, CheckpointData(config=config, model_state=model.state_dict(), iteration=7, axis=0)
    )
    return model.eval(), config


def test_round_trip_gives_identical_predictions(tmp_path):
    model, config = small_checkpoint(tmp_path / "m.pt")
    volume = np.random.default_rng(0).normal(size=(6, 20, 24)).astype(np.float32)
    before = predict_volume(model, volume, 0, 1, torch.device("cpu"), loss_config=config.loss)
    loaded, data = load_model(tmp_path / "m.pt", torch.device("cpu"))
    after = predict_volume(loaded, volume, 0, 1, torch.device("cpu"), loss_config=config.loss)
    assert data.iteration == 7 and data.axis == 0 and data.num_classes == 3
    np.testing.assert_array_equal(before.refined, after.refined)
    np.testing.assert_array_equal(before.probabilities, after.probabilities)


def test_no_temporary_file_is_left(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_other_class_count_is_refused(tmp_path):
    small_checkpoint(tmp_path / "m.pt", num_classes=3)
    with pytest.raises(CheckpointError, match=r"segments 3 classes .* the data has 2"):
        load_checkpoint(tmp_path / "m.pt", num_classes=2)


def test_other_format_version_is_refused(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_a_version_1_file_without_the_predict_section_loads_with_its_defaults(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["format_version"] == 4
    payload["format_version"] = 1
    del payload["config"]["predict"]
    torch.save(payload, tmp_path / "old.pt")
    data = load_checkpoint(tmp_path / "old.pt")
    assert data.config.predict.prior_blend == CriiConfig().predict.prior_blend
    assert data.iteration == 7


def test_a_file_from_before_the_aligned_prior_keeps_the_unaligned_one(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    assert load_checkpoint(tmp_path / "m.pt").config.loss.prior_align is True
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = 2
    del payload["config"]["loss"]["prior_align"]
    torch.save(payload, tmp_path / "old.pt")
    data = load_checkpoint(tmp_path / "old.pt")
    assert data.config.loss.prior_align is False  # what it was trained with
    assert data.config.loss.prior_extrapolate == CriiConfig().loss.prior_extrapolate


def test_a_file_from_before_the_contrast_limit_keeps_its_class_split(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    assert load_checkpoint(tmp_path / "m.pt").config.predict.prior_class_max_contrast == 1.5
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = 3
    del payload["config"]["predict"]["prior_class_max_contrast"]
    payload["config"]["predict"]["prior_class_split"] = 1.0  # chosen: between all classes
    torch.save(payload, tmp_path / "split.pt")
    predict = load_checkpoint(tmp_path / "split.pt").config.predict
    assert predict.prior_class_split == 1.0 and predict.prior_class_max_contrast is None
    del payload["config"]["predict"]["prior_class_split"]  # from before the class split
    torch.save(payload, tmp_path / "older.pt")
    assert load_checkpoint(tmp_path / "older.pt").config.predict.prior_class_split == 0.0
    del payload["config"]["predict"]
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "oldest.pt")
    assert load_checkpoint(tmp_path / "oldest.pt").config.predict.prior_class_split == 0.0


@pytest.mark.parametrize(
    "content", [b"", b"not a model at all", b"PK\x03\x04garbage"], ids=["empty", "text", "zip"]
)
def test_files_that_are_not_models_are_refused(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a napari-crii model"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_foreign_torch_file_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=f"no '{FORMAT_NAME}' tag"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")


class _Payload:
    """Unpickling this would create a file: a model file must never run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as stream:
        pickle.dump({"format": FORMAT_NAME, "x": _Payload(marker)}, stream)
    torch.save({"format": FORMAT_NAME, "x": _Payload(marker)}, tmp_path / "evil2.pt")
    marker.unlink(missing_ok=True)  # torch.save itself does not call __reduce__'s target
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_stored_config_out_of_range_is_refused(tmp_path):
    small_checkpoint(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["train"]["learning_rate"] = -5.0
    torch.save(payload, tmp_path / "bad_config.pt")
    with pytest.raises(CheckpointError, match="stored configuration is invalid"):
        load_checkpoint(tmp_path / "bad_config.pt")
