"""The dock widget's layout: four group boxes that own their controls, and the loss curve.

Panels know nothing of napari layers or sessions (the Training panel shows the progress events
it is given and asks a child process which devices exist); :class:`napari_crii._widget.CriiWidget`
composes them and connects their controls to its behaviour. Small Qt helpers close the module.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QPointF, QProcess, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from training_backend.config import METHODS, CriiConfig, PredictConfig
from training_backend.events import Progress

LOSS_LABELS = {"lambda_intra": "λ intra-patch", "lambda_inter": "λ inter-patch"}

CLASS_BORDERS: dict[str, tuple[str, tuple[float, float | None]]] = {
    "automatic": (
        "automatic (annotations where classes look alike)",
        (1.0, PredictConfig().prior_class_max_contrast),
    ),
    "annotations": ("from the annotations", (1.0, None)),
    "network": ("from the network", (0.0, None)),
}
"""Class-border choices: key -> (text, (``predict.prior_class_split``,
``predict.prior_class_max_contrast``))."""


def class_border_of(settings: PredictConfig) -> str:
    """The choice of :data:`CLASS_BORDERS` that ``settings`` are."""
    if settings.prior_class_split <= 0.0:
        return "network"
    return "annotations" if settings.prior_class_max_contrast is None else "automatic"


class LossCurve(QWidget):
    """A tiny polyline of the total loss (log scale), drawn with QPainter."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(48)
        self.setToolTip("total training loss (log scale)")

    def sizeHint(self) -> QSize:
        return QSize(220, 56)

    def clear(self) -> None:
        self.values = []
        self.update()

    def add(self, value: float) -> None:
        if math.isfinite(value) and value > 0:
            self.values.append(value)
            self.update()

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(0, 0, 0, 40))
        if len(self.values) >= 2:
            logs = np.log10(np.asarray(self.values[-400:]))
            low, high = float(logs.min()), float(logs.max())
            span = high - low or 1.0
            width, height = self.width() - 6, self.height() - 6
            points = [
                QPointF(3 + width * i / (len(logs) - 1), 3 + height * (high - v) / span)
                for i, v in enumerate(logs)
            ]
            painter.setPen(QPen(QColor(255, 170, 40), 1.5))
            painter.drawPolyline(QPolygonF(points))
        painter.end()


class DataPanel(QGroupBox):
    """Image and annotations layer choice, the annotated-slice summary, background, restore."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Data", parent)
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.new_labels_button = QPushButton("New")
        self.new_labels_button.setToolTip("an empty annotations layer that fits the image")
        row = QHBoxLayout()
        row.addWidget(self.labels_combo, 1)
        row.addWidget(self.new_labels_button)
        self.axis_label = QLabel()
        self.annotated_label = QLabel()
        self.annotated_label.setWordWrap(True)
        self.background_button = QPushButton()
        self.background_button.setToolTip(
            "the current slice holds no structure: train on it as all background"
        )
        self.show_background_marked(False)
        form.addRow("Image", self.image_combo)
        form.addRow("Annotations", row)
        form.addRow("Slice axis", self.axis_label)
        form.addRow("Annotated", self.annotated_label)
        form.addRow(self.background_button)
        self.restore_button = QPushButton("Restore last session")
        self.restore_button.setToolTip(
            "add the annotations last saved for this image (after napari closed or crashed)"
        )
        form.addRow(self.restore_button)

    def set_layer_choices(self, images: list[str], labels: list[str]) -> None:
        set_choices(self.image_combo, images)
        set_choices(self.labels_combo, labels)

    def show_slice_count(self, count: int | None) -> None:
        """``count`` slices along the slider axis; None: no image is chosen."""
        text = "choose an image" if count is None else f"0 (the slider), {count} slices"
        self.axis_label.setText(text)

    def show_background_marked(self, marked: bool) -> None:
        text = "Unmark background slice" if marked else "Mark current slice as background"
        self.background_button.setText(text)


class TrainingPanel(QGroupBox):
    """Method, device, budget and advanced settings; Train / Stop; progress and losses."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        form = QFormLayout(self)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.device_combo = QComboBox()
        self._fill_devices()
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, 10_000_000)
        self.budget_spin.setValue(60)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["seconds", "iterations"])
        budget = QHBoxLayout()
        budget.addWidget(self.budget_spin, 1)
        budget.addWidget(self.budget_unit)
        self.continue_check = QCheckBox("continue from last model")
        self.continue_check.setChecked(True)
        form.addRow("Method", self.method_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Budget", budget)
        form.addRow(self.continue_check)
        form.addRow(self._advanced())
        self.method_combo.currentTextChanged.connect(self._method_changed)
        self._method_changed(self.method_combo.currentText())
        self.train_button = QPushButton("Train from current labels")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.stop_button)
        form.addRow(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("idle")
        self.progress_bar.setTextVisible(True)
        self.losses_label = QLabel()
        self.losses_label.setWordWrap(True)
        self.loss_curve = LossCurve()
        form.addRow(self.progress_bar)
        form.addRow(self.losses_label)
        form.addRow(self.loss_curve)

    def _advanced(self) -> QCollapsible:
        defaults = CriiConfig()
        self.advanced = QCollapsible("Advanced")
        inner = QWidget()
        form = QFormLayout(inner)
        self.learning_rate_spin = float_spin(defaults.train.learning_rate, 1e-6, 1.0, 5)
        self.loss_spins = {
            name: float_spin(getattr(defaults.loss, name), 0.0, 100.0, 3)
            for name in ("lambda_intra", "lambda_inter", "lambda_cr_max")
        }
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(defaults.train.seed)
        self.class_border_combo = QComboBox()
        for key, (text, _) in CLASS_BORDERS.items():
            self.class_border_combo.addItem(text, key)
        self.class_border_combo.setCurrentIndex(
            self.class_border_combo.findData(class_border_of(defaults.predict))
        )
        self.class_border_combo.setToolTip(
            "Where the border between two touching classes is drawn between the annotated "
            "slices. automatic: by the painted outlines, carried between the slices, for "
            "classes that look alike in the image (the head and body of the hippocampus), "
            "by the network for classes the image tells apart (a lesion in an organ). "
            "annotations: always by the outlines; a class seen only between annotated slices "
            "would be erased there. network: never by the outlines. crii only (it acts in "
            "crii's late average with the shape prior); applies to models trained after."
        )
        form.addRow("Learning rate", self.learning_rate_spin)
        for name, spin in self.loss_spins.items():
            form.addRow(LOSS_LABELS.get(name, "λ consistency (max)"), spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Class borders", self.class_border_combo)
        self.advanced.addWidget(inner)
        self.advanced.collapse(animate=False)
        return self.advanced

    def _method_changed(self, method: str) -> None:
        """The class borders come with crii's shape prior: the baselines do not use it."""
        self.class_border_combo.setEnabled(method == "crii")

    def _fill_devices(self) -> None:
        """Offer auto and CPU at once; ask a child process for the GPUs (napari itself never
        imports torch nor starts CUDA) and add them when it answers."""
        self.device_combo.clear()
        for name, description in (("auto", "auto (GPU if present)"), ("cpu", "CPU")):
            self.device_combo.addItem(description, name)
        self.device_probe = QProcess(self)
        self.device_probe.finished.connect(self._add_probed_devices)
        self.device_probe.start(sys.executable, ["-m", "training_backend", "devices"])

    def _add_probed_devices(self) -> None:
        output = bytes(self.device_probe.readAllStandardOutput()).decode(errors="replace")
        try:
            found = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return  # no answer: auto and CPU stay; a missing device is reported by training
        for device in found:
            if self.device_combo.findData(device.get("name")) < 0:
                self.device_combo.addItem(str(device.get("description")), device.get("name"))

    def device(self) -> str:
        """The device to train on; one that vanished since is refused by the training process
        with a message that names it."""
        return str(self.device_combo.currentData() or "auto")

    def budget(self) -> tuple[float | None, int | None]:
        """``(seconds, iterations)``: one of them is set, by the budget unit."""
        if self.budget_unit.currentText() == "iterations":
            return None, self.budget_spin.value()
        return float(self.budget_spin.value()), None

    def settings(self) -> dict[str, object]:
        """The advanced settings as ``SECTION.KEY`` values (the seed travels on its own)."""
        settings: dict[str, object] = {"train.learning_rate": self.learning_rate_spin.value()}
        for name, spin in self.loss_spins.items():
            settings[f"loss.{name}"] = spin.value()
        border = str(self.class_border_combo.currentData())
        if not self.class_border_combo.isEnabled():
            border = "network"
        split, max_contrast = CLASS_BORDERS[border][1]
        settings["predict.prior_class_split"] = split
        settings["predict.prior_class_max_contrast"] = max_contrast
        return settings

    def set_progress(self, text: str, fraction: float | None = None) -> None:
        """Update the progress bar without its immediate repaint (QProgressBar.setValue paints
        at once, ~15 ms in a napari window): the repaint joins the next frame instead."""
        bar = self.progress_bar
        bar.setUpdatesEnabled(False)
        if fraction is not None:
            bar.setValue(int(1000 * min(max(fraction, 0.0), 1.0)))
        bar.setFormat(text)
        bar.setUpdatesEnabled(True)

    def show_progress(self, event: Progress) -> None:
        """Iteration, time left and the latest losses of a training step."""
        if event.total_iterations:
            fraction = event.iteration / event.total_iterations
        elif event.eta_seconds is not None:
            fraction = event.seconds / max(event.seconds + event.eta_seconds, 1e-9)
        else:
            fraction = 0.0
        text = f"iteration {event.iteration}"
        if event.total_iterations:
            text += f"/{event.total_iterations}"
        if event.eta_seconds is not None:
            text += f" · {event.eta_seconds:.0f} s left"
        self.set_progress(text, fraction)
        losses = " · ".join(f"{name} {value:.3g}" for name, value in event.losses.items())
        self.losses_label.setText(losses)

    def clear_progress(self, text: str) -> None:
        """A new job: empty loss curve and losses, the bar at zero."""
        self.loss_curve.clear()
        self.losses_label.setText("")
        self.set_progress(text, 0.0)


class SuggestionsPanel(QGroupBox):
    """The slices where the model is least sure; choosing one emits ``slice_chosen``."""

    slice_chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Annotate next", parent)
        layout = QVBoxLayout(self)
        self.suggestion_list = QListWidget()
        self.suggestion_list.setMaximumHeight(110)
        self.suggestion_list.setToolTip("slices where the model is least sure: click to go there")
        layout.addWidget(self.suggestion_list)
        self.suggestion_list.itemClicked.connect(self._choose)
        self.suggestion_list.itemActivated.connect(self._choose)

    def show_suggestions(self, slices: list[int], scores: list[float]) -> None:
        self.suggestion_list.clear()
        for index, score in zip(slices, scores, strict=False):
            item = QListWidgetItem(f"slice {index}    uncertainty {score:.3f}")
            item.setData(Qt.ItemDataRole.UserRole, int(index))
            self.suggestion_list.addItem(item)

    def _choose(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        if index is not None:
            self.slice_chosen.emit(int(index))


class ReviewPanel(QGroupBox):
    """Accept / Undo on the current slice, exports, model files and Predict."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Review and export", parent)
        layout = QVBoxLayout(self)
        self.accept_button = QPushButton("Accept prediction on this slice")
        self.accept_button.setToolTip(
            "copy the refined prediction of the current slice into the annotations, to correct"
        )
        self.undo_button = QPushButton("Undo")
        row = QHBoxLayout()
        row.addWidget(self.accept_button, 1)
        row.addWidget(self.undo_button)
        layout.addLayout(row)
        self.export_refined_button = QPushButton("Export prediction…")
        self.export_labels_button = QPushButton("Export annotations…")
        self.save_model_button = QPushButton("Save model…")
        self.load_model_button = QPushButton("Load model…")
        self.predict_button = QPushButton("Predict with model")
        for pair in (
            (self.export_refined_button, self.export_labels_button),
            (self.save_model_button, self.load_model_button),
        ):
            row = QHBoxLayout()
            for button in pair:
                row.addWidget(button)
            layout.addLayout(row)
        layout.addWidget(self.predict_button)


def float_spin(value: float, low: float, high: float, decimals: int) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setSingleStep(10 ** (-decimals + 1) if decimals > 3 else 0.05)
    spin.setValue(value)
    return spin


def set_choices(combo: QComboBox, names: list[str]) -> None:
    """Replace the items, keeping the current choice when it still exists."""
    current = combo.currentText()
    if [combo.itemText(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def single_shot(parent: QObject, msec: int, slot: Any) -> QTimer:
    """A stopped one-shot timer that calls ``slot`` ``msec`` after each ``start()``."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.timeout.connect(slot)
    return timer
