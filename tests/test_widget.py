"""The dock widget in a real napari viewer (under Xvfb), with tiny real training rounds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from conftest import TINY_SETTINGS
from qtpy.QtCore import Qt

from napari_crii import _files, _layers, _widget
from napari_crii._sample_data import make_sample_data
from napari_crii._session import annotated_slices
from training_backend.events import Finished, Progress, Started

ROUND_TIMEOUT_MS = 120_000


class Notes:
    """The notifications the widget showed, by kind."""

    def __init__(self) -> None:
        self.error: list[str] = []
        self.warning: list[str] = []
        self.info: list[str] = []


@pytest.fixture
def notes(monkeypatch) -> Notes:
    found = Notes()
    for module in (_widget, _files):
        for kind in ("error", "warning", "info"):
            if hasattr(module, f"show_{kind}"):
                monkeypatch.setattr(module, f"show_{kind}", getattr(found, kind).append)
    return found


@pytest.fixture
def crii(make_napari_viewer, monkeypatch, tmp_path, notes):
    """A viewer with the phantom sample (image + sparse annotations) and the widget."""
    monkeypatch.setenv("NAPARI_CRII_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = _widget.CriiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.extra_settings = dict(TINY_SETTINGS)
    devices = widget.training_panel.device_combo
    devices.setCurrentIndex(devices.findData("cpu"))
    set_budget(widget, 5, "iterations")
    yield viewer, widget
    widget.process.shutdown()


def set_budget(widget, value: int, unit: str) -> None:
    widget.training_panel.budget_unit.setCurrentText(unit)
    widget.training_panel.budget_spin.setValue(value)


def wait_idle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.process.running, timeout=ROUND_TIMEOUT_MS)


def test_a_round_fills_aligned_prediction_layers_and_suggestions(crii, qtbot, notes, tmp_path):
    viewer, widget = crii
    image, labels = viewer.layers["phantom"], viewer.layers["phantom annotations"]
    assert widget.image_layer is image and widget.labels_layer is labels
    painted = annotated_slices(labels.data)
    extra = painted[0] + 2
    labels.data[extra] = labels.data[painted[0]]  # annotate one more slice by program
    widget._on_annotations_changed()
    viewer.dims.set_current_step(0, 5)
    widget.toggle_background()  # slice 5 holds no structure
    widget._update_summary()
    summary = widget.data_panel.annotated_label.text()
    assert "5 (bg)" in summary
    assert f"({len(painted) + 2} of {image.data.shape[0]})" in summary

    qtbot.mouseClick(widget.training_panel.train_button, Qt.MouseButton.LeftButton)
    assert widget.process.running and not widget.training_panel.train_button.isEnabled()
    wait_idle(qtbot, widget)

    assert not notes.error, notes.error
    for name in (_layers.COARSE, _layers.REFINED, _layers.HARDNESS):
        layer = viewer.layers[name]
        assert layer.data.shape == image.data.shape
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        assert layer.metadata["crii"] == image.metadata["crii"]
    assert viewer.layers[_layers.REFINED].data.any()
    assert viewer.layers[_layers.HARDNESS].colormap.name == "inferno"
    round_dir = widget.session.rounds()[-1]
    assert "--background-slices=5" in (round_dir / "process.log").read_text()
    assert widget.session.last_model == round_dir / "model.pt"
    assert viewer.layers.selection.active is not viewer.layers[_layers.HARDNESS]

    suggestions = widget.suggestions_panel.suggestion_list
    assert suggestions.count() > 0
    item = suggestions.item(suggestions.count() - 1)
    target = item.data(Qt.ItemDataRole.UserRole)
    suggestions.itemClicked.emit(item)
    assert viewer.dims.current_step[0] == target

    exported = tmp_path / "refined.nii.gz"
    assert widget.files.export(exported, _layers.REFINED) and exported.is_file()
    from training_backend.io import read_volume

    assert sorted(read_volume(exported).array.shape) == sorted(image.data.shape)
    assert widget.files.save_model(tmp_path / "saved.pt") and (tmp_path / "saved.pt").is_file()
    assert not widget.files.load_model(tmp_path / "refined.nii.gz")
    assert "Cannot use this model" in notes.error[-1]


def test_stop_ends_the_round_early_with_a_usable_model(crii, qtbot, notes):
    from training_backend.checkpoint import load_checkpoint

    viewer, widget = crii
    set_budget(widget, 60, "seconds")
    progress = []
    widget.process.received.connect(lambda e: isinstance(e, Progress) and progress.append(e))
    widget.process.received.connect(lambda e: progress[:1] == [e] and widget.stop())
    finished = []
    widget.process.received.connect(lambda e: isinstance(e, Finished) and finished.append(e))
    assert widget.train()
    wait_idle(qtbot, widget)
    assert len(finished) == 1 and finished[0].stopped_early and finished[0].reason == "stopped"
    assert not notes.error, notes.error
    model = widget.session.last_model
    assert model is not None and load_checkpoint(model).iteration >= 1
    panel = widget.training_panel
    assert panel.train_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.progress_bar.text().startswith("stopped")
    assert panel.stop_button.text() == "Stop"

    assert widget.files.load_model(model) and "Loaded model.pt" in notes.info[-1]
    refined = viewer.layers[_layers.REFINED]
    refined.data[:] = 0
    assert widget.predict()
    wait_idle(qtbot, widget)
    assert not notes.error, notes.error
    assert refined.data.any() and panel.progress_bar.text() == "prediction done"


def test_a_killed_process_is_reported_and_the_annotations_are_kept(crii, qtbot, notes):
    viewer, widget = crii
    labels = viewer.layers["phantom annotations"]
    before = labels.data.copy()
    set_budget(widget, 60, "seconds")
    widget.process.received.connect(
        lambda e: isinstance(e, Started) and os.kill(widget.process.pid(), signal.SIGKILL)
    )
    assert widget.train()
    wait_idle(qtbot, widget)
    assert len(notes.error) == 1 and "stopped unexpectedly" in notes.error[0]
    assert "Press Train to try again" in notes.error[0]
    np.testing.assert_array_equal(labels.data, before)
    saved = widget.session.annotations_path
    assert saved.is_file() and not list(saved.parent.glob(".*.tmp*"))
    assert widget.training_panel.train_button.isEnabled()


def test_accept_copies_only_the_current_slice_and_undo_restores_it(crii, notes):
    viewer, widget = crii
    image, labels = viewer.layers["phantom"], viewer.layers["phantom annotations"]
    widget.predictions.ensure(image)
    refined = viewer.layers[_layers.REFINED]
    refined.data[:] = 1
    before = labels.data.copy()
    index = next(i for i in range(image.data.shape[0]) if not before[i].any())
    viewer.dims.set_current_step(0, index)
    assert widget.current_slice() == index

    assert widget.accept_slice()
    assert (labels.data[index] == 1).all()
    others = np.ones(labels.data.shape[0], bool)
    others[index] = False
    np.testing.assert_array_equal(labels.data[others], before[others])

    widget.undo()
    np.testing.assert_array_equal(labels.data, before)
    assert not notes.error


def test_training_without_an_annotated_slice_is_refused(crii, notes):
    viewer, widget = crii
    empty = widget.new_annotations()
    assert empty.data.shape == viewer.layers["phantom"].data.shape
    np.testing.assert_allclose(empty.scale, viewer.layers["phantom"].scale)
    assert widget.labels_layer is empty
    assert not widget.train()
    assert not widget.process.running
    assert len(notes.error) == 1 and "No annotated slice" in notes.error[0]


def test_annotations_of_another_shape_are_refused(crii, notes):
    viewer, widget = crii
    viewer.add_labels(np.zeros((10, 20, 20), np.uint8), name="other")
    widget.data_panel.labels_combo.setCurrentText("other")
    assert not widget.train()
    assert not widget.process.running
    assert len(notes.error) == 1 and "(10, 20, 20)" in notes.error[0]


def test_the_class_border_choice_reaches_the_training_command(crii, tmp_path):
    _, widget = crii
    panel = widget.training_panel
    settings = panel.settings()  # automatic by default, as the backend's defaults
    assert settings["predict.prior_class_split"] == 1.0
    assert settings["predict.prior_class_max_contrast"] == 1.5
    panel.class_border_combo.setCurrentIndex(panel.class_border_combo.findData("annotations"))
    request = widget._request(widget.ensure_session(), tmp_path, tmp_path / "labels.nii.gz")
    assert "predict.prior_class_split=1.0" in request.arguments()
    assert "predict.prior_class_max_contrast=null" in request.arguments()
    panel.class_border_combo.setCurrentIndex(panel.class_border_combo.findData("network"))
    assert panel.settings()["predict.prior_class_split"] == 0.0
    panel.class_border_combo.setCurrentIndex(panel.class_border_combo.findData("automatic"))
    panel.method_combo.setCurrentText("supervised")  # no shape prior: nothing to split by
    assert not panel.class_border_combo.isEnabled()
    assert panel.settings()["predict.prior_class_split"] == 0.0


def test_autosave_writes_the_annotations_only_when_they_changed(crii):
    from training_backend.io import read_volume

    viewer, widget = crii
    labels = viewer.layers["phantom annotations"]
    assert not widget.autosave()
    labels.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
    assert widget.autosave()
    saved = read_volume(widget.session.annotations_path).array
    np.testing.assert_array_equal(saved, labels.data)
    assert Path(widget.session.folder).parent == Path(os.environ["NAPARI_CRII_HOME"]) / "sessions"
    assert not widget.autosave()


def test_a_device_that_vanished_is_reported_and_nothing_is_lost(crii, qtbot, notes):
    viewer, widget = crii
    before = viewer.layers["phantom annotations"].data.copy()
    devices = widget.training_panel.device_combo
    devices.addItem("CUDA: a card that was unplugged", "cuda")
    devices.setCurrentIndex(devices.findData("cuda"))
    assert widget.train()
    qtbot.waitUntil(lambda: not widget.process.running, timeout=ROUND_TIMEOUT_MS)
    assert any("no CUDA GPU is available" in message for message in notes.error)
    np.testing.assert_array_equal(viewer.layers["phantom annotations"].data, before)
    assert widget.training_panel.train_button.isEnabled()


def test_devices_are_probed_in_a_child_process(crii, qtbot):
    _, widget = crii
    devices = widget.training_panel.device_combo
    assert devices.findData("auto") == 0 and devices.findData("cpu") == 1
    probe = widget.training_panel.device_probe
    qtbot.waitUntil(lambda: probe.state() == probe.ProcessState.NotRunning, timeout=60_000)
    assert probe.exitCode() == 0 and probe.arguments()[-1] == "devices"


def test_after_a_killed_round_the_next_one_works_and_its_notes_are_shown(crii, qtbot, notes):
    viewer, widget = crii
    viewer.layers["phantom"].data[0, :2, :2] = np.nan  # four voxels the rounds must mention
    killed: list[int] = []

    def kill_first(event) -> None:
        if isinstance(event, Started) and not killed:
            killed.append(widget.process.pid())
            os.kill(killed[0], signal.SIGKILL)

    widget.process.received.connect(kill_first)
    assert widget.train()
    wait_idle(qtbot, widget)
    assert len(notes.error) == 1 and "stopped unexpectedly" in notes.error[0]
    assert widget.train()
    wait_idle(qtbot, widget)
    assert len(notes.error) == 1 and len(killed) == 1
    assert any("4 voxels are NaN or Inf" in w for w in notes.warning), notes.warning
    assert widget.session.last_model is not None and widget.session.last_model.is_file()


def test_a_restarted_widget_offers_and_restores_the_last_session(crii, notes):
    viewer, widget = crii
    labels = viewer.layers["phantom annotations"]
    labels.data_setitem((np.array([1]), np.array([2]), np.array([3])), 2)
    assert widget.autosave()
    assert not widget.data_panel.restore_button.isEnabled()  # its own session is not "earlier"
    # napari killed and started again: a new widget on the same image
    again = _widget.CriiWidget(viewer)
    try:
        assert any("earlier session" in m for m in notes.info), notes.info
        assert again.data_panel.restore_button.isEnabled()
        restored = again.restore_session()
        assert restored is not None and again.labels_layer is restored
        np.testing.assert_array_equal(restored.data, labels.data)
        np.testing.assert_allclose(restored.scale, viewer.layers["phantom"].scale)
        assert again.session.folder == widget.session.folder
        assert not again.data_panel.restore_button.isEnabled()
    finally:
        again.process.shutdown()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-1, "negative value -1"), (300, "label value 300")],
    ids=["negative", "many"],
)
def test_bad_label_values_end_the_round_with_a_clear_error(crii, qtbot, notes, value, fragment):
    viewer, widget = crii
    labels = viewer.layers["phantom annotations"]
    data = labels.data.astype(np.int32)
    data[tuple(np.argwhere(data > 0)[0])] = value
    labels.data = data
    widget.train()
    wait_idle(qtbot, widget)
    assert len(notes.error) == 1 and fragment in notes.error[0], notes.error
    assert widget.training_panel.train_button.isEnabled()
