"""The CRII-Net dock widget: annotate, train in a child process, review, accept, export.

Only the main thread touches layers. Training runs in a child process
(:mod:`napari_crii._training_process`); its events arrive as Qt signals. Files live in a
per-image session folder (:mod:`napari_crii._session`); prediction layers are managed by
:mod:`napari_crii._layers`. Every problem a person can act on becomes a napari notification.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QPointF, QProcess, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
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

from napari_crii import _layers
from napari_crii._session import Session, annotated_slices, describe_annotated
from napari_crii._training_process import (
    ProcessOutcome,
    TrainingProcess,
    TrainingRequest,
    predict_arguments,
)
from training_backend.config import METHODS, CriiConfig
from training_backend.errors import CriiError
from training_backend.events import (
    Checkpoint,
    Event,
    Finished,
    Notice,
    Prediction,
    Preview,
    Progress,
    Started,
    Suggestions,
)

AUTOSAVE_MS = 120_000
PREVIEW_MIN_INTERVAL_MS = 250
PROGRESS_INTERVAL_MS = 200
LOG_EVERY = 1
FORCE_STOP = "Force stop"
SUMMARY_DELAY_MS = 300
PREVIEW_SECONDS = 1.0
LOSS_LABELS = {"lambda_intra": "λ intra-patch", "lambda_inter": "λ inter-patch"}


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


class CriiWidget(QWidget):
    """Dock widget: layers, settings, Train / Stop, progress, suggestions, accept, export."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: Session | None = None
        self._session_image: Layer | None = None
        self.process = TrainingProcess(self)
        self.predictions = _layers.PredictionLayers(napari_viewer)
        self.extra_settings: dict[str, object] = {}
        """More ``--set SECTION.KEY=VALUE`` settings for every round (tests, benchmarks)."""
        self._watched: Labels | None = None
        self._dirty = False
        self._job = "idle"
        self._pending_preview: Preview | None = None
        self._pending_progress: Progress | None = None
        self._last_preview_at = 0.0
        self._offered: set[int] = set()
        self._earlier: dict[int, Session | None] = {}
        """The earlier session found for each image layer (looked for once per layer)."""
        self._build()
        self._connect()
        self._refresh_layer_choices()

    # ------------------------------------------------------------------- layout

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(self._data_box())
        layout.addWidget(self._training_box())
        layout.addWidget(self._suggestions_box())
        layout.addWidget(self._review_box())
        layout.addStretch(1)

    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data")
        form = QFormLayout(box)
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
        self.background_button = QPushButton("Mark current slice as background")
        self.background_button.setToolTip(
            "the current slice holds no structure: train on it as all background"
        )
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
        return box

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
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
        return box

    def _advanced(self) -> QCollapsible:
        defaults = CriiConfig()
        self.advanced = QCollapsible("Advanced")
        inner = QWidget()
        form = QFormLayout(inner)
        self.learning_rate_spin = _float_spin(defaults.train.learning_rate, 1e-6, 1.0, 5)
        self.loss_spins = {
            name: _float_spin(getattr(defaults.loss, name), 0.0, 100.0, 3)
            for name in ("lambda_intra", "lambda_inter", "lambda_cr_max")
        }
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(defaults.train.seed)
        form.addRow("Learning rate", self.learning_rate_spin)
        for name, spin in self.loss_spins.items():
            form.addRow(LOSS_LABELS.get(name, "λ consistency (max)"), spin)
        form.addRow("Seed", self.seed_spin)
        self.advanced.addWidget(inner)
        self.advanced.collapse(animate=False)
        return self.advanced

    def _suggestions_box(self) -> QGroupBox:
        box = QGroupBox("Annotate next")
        layout = QVBoxLayout(box)
        self.suggestion_list = QListWidget()
        self.suggestion_list.setMaximumHeight(110)
        self.suggestion_list.setToolTip("slices where the model is least sure: click to go there")
        layout.addWidget(self.suggestion_list)
        return box

    def _review_box(self) -> QGroupBox:
        box = QGroupBox("Review and export")
        layout = QVBoxLayout(box)
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
        return box

    def _fill_devices(self) -> None:
        """Offer auto and CPU at once; ask a child process for the GPUs (napari itself never
        imports torch nor starts CUDA) and add them when it answers."""
        self.device_combo.clear()
        for name, description in (("auto", "auto (GPU if present)"), ("cpu", "CPU")):
            self.device_combo.addItem(description, name)
        self._device_probe = QProcess(self)
        self._device_probe.finished.connect(self._add_probed_devices)
        self._device_probe.start(sys.executable, ["-m", "training_backend", "devices"])

    def _add_probed_devices(self) -> None:
        output = bytes(self._device_probe.readAllStandardOutput()).decode(errors="replace")
        try:
            found = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return  # no answer: auto and CPU stay; a missing device is reported by training
        for device in found:
            if self.device_combo.findData(device.get("name")) < 0:
                self.device_combo.addItem(str(device.get("description")), device.get("name"))

    # -------------------------------------------------------------- connections

    def _connect(self) -> None:
        layers = self.viewer.layers.events
        for emitter in (layers.inserted, layers.removed, layers.moved):
            emitter.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.image_combo.currentIndexChanged.connect(self._on_layers_chosen)
        self.labels_combo.currentIndexChanged.connect(self._on_layers_chosen)
        self.new_labels_button.clicked.connect(self.new_annotations)
        self.background_button.clicked.connect(self.toggle_background)
        self.restore_button.clicked.connect(self.restore_session)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.suggestion_list.itemClicked.connect(self._go_to_suggestion)
        self.suggestion_list.itemActivated.connect(self._go_to_suggestion)
        self.accept_button.clicked.connect(self.accept_slice)
        self.undo_button.clicked.connect(self.undo)
        self.export_refined_button.clicked.connect(lambda: self._ask_export(_layers.REFINED))
        self.export_labels_button.clicked.connect(lambda: self._ask_export(None))
        self.save_model_button.clicked.connect(self._ask_save_model)
        self.load_model_button.clicked.connect(self._ask_load_model)
        self.predict_button.clicked.connect(self.predict)
        self.process.received.connect(self._on_event)
        self.process.ended.connect(self._on_ended)
        self._summary_timer = _single_shot(self, SUMMARY_DELAY_MS, self._update_summary)
        self._preview_timer = _single_shot(self, PREVIEW_MIN_INTERVAL_MS, self._apply_preview)
        self._progress_timer = _single_shot(self, PROGRESS_INTERVAL_MS, self._show_progress)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()
        self._update_buttons()

    # ------------------------------------------------------------------- layers

    @property
    def image_layer(self) -> Image | None:
        return self._layer(self.image_combo.currentText(), Image)

    @property
    def labels_layer(self) -> Labels | None:
        return self._layer(self.labels_combo.currentText(), Labels)

    def _layer(self, name: str, kind: type) -> Any:
        if name and name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            return self.viewer.layers[name]
        return None

    def _refresh_layer_choices(self, event: Any = None) -> None:
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_choices)
        images = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer.name not in _layers.PREDICTION_NAMES
        ]
        labels = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.name not in _layers.PREDICTION_NAMES
        ]
        _set_choices(self.image_combo, images)
        _set_choices(self.labels_combo, labels)
        self._on_layers_chosen()

    def _on_layers_chosen(self, *args: Any) -> None:
        labels = self.labels_layer
        if labels is not self._watched:
            if self._watched is not None:
                self._watched.events.paint.disconnect(self._on_annotations_changed)
                self._watched.events.data.disconnect(self._on_annotations_changed)
            if labels is not None:
                labels.events.paint.connect(self._on_annotations_changed)
                labels.events.data.connect(self._on_annotations_changed)
            self._watched = labels
        image = self.image_layer
        if image is None:
            self.axis_label.setText("choose an image")
        else:
            count = image.data.shape[0] if image.ndim == 3 else 0
            self.axis_label.setText(f"0 (the slider), {count} slices")
        self._offer_restore()
        self._update_summary()

    def _previous_session(self) -> Session | None:
        image = self.image_layer
        if image is None or image.ndim != 3:
            return None
        if id(image) not in self._earlier:
            self._earlier[id(image)] = Session.previous(image.name, image.data.shape)
        found = self._earlier[id(image)]
        current = self._current_session()
        if found is None or (current is not None and found.folder == current.folder):
            return None
        return found

    def _offer_restore(self) -> None:
        """Once per image layer: say so when an earlier session of it holds annotations."""
        image = self.image_layer
        found = self._previous_session()
        self.restore_button.setEnabled(found is not None)
        if image is None or found is None or id(image) in self._offered:
            return
        self._offered.add(id(image))
        show_info(
            f"Annotations of '{image.name}' from an earlier session were found in "
            f"{found.folder}: press Restore last session to continue them."
        )

    def restore_session(self) -> Labels | None:
        """Add the annotations of this image's last session as a layer, and continue it."""
        image = self.image_layer
        found = self._previous_session()
        labels = None if found is None else found.saved_annotations()
        if image is None or found is None or labels is None:
            show_error("No earlier session with annotations of this image was found.")
            return None
        name = f"{image.name} annotations (restored)"
        layer = self.viewer.add_labels(labels, **_layers.derived_layer_kwargs(image, name))
        found.spacing = tuple(float(v) for v in image.scale[-3:])
        self.session, self._session_image = found, image
        self.labels_combo.setCurrentText(layer.name)
        self.restore_button.setEnabled(False)
        show_info(f"Restored {len(annotated_slices(labels))} annotated slices from {found.folder}.")
        return layer

    def _on_annotations_changed(self, event: Any = None) -> None:
        self._dirty = True
        self._summary_timer.start()

    def new_annotations(self) -> Labels | None:
        """Add an empty annotations layer that fits the chosen image, and choose it."""
        image = self.image_layer
        if image is None:
            show_error("Choose an image first: the new annotations layer takes its size.")
            return None
        layer = self.viewer.add_layer(_layers.empty_annotations(image))
        self.labels_combo.setCurrentText(layer.name)
        return layer

    # ------------------------------------------------------------------ slices

    def current_slice(self) -> int:
        """The index along the image's axis 0 of the slice the viewer shows."""
        return _layers.current_slice(self.viewer, self.image_layer)

    def go_to_slice(self, index: int) -> None:
        _layers.go_to_slice(self.viewer, self.image_layer, index)

    def _on_step(self, event: Any = None) -> None:
        if self._job == "train":
            self.process.request_preview(self.current_slice())
        self._update_background_button()

    def _update_summary(self) -> None:
        labels = self.labels_layer
        if labels is None or labels.ndim != 3:
            self.annotated_label.setText("choose or create an annotations layer")
            self._update_background_button()
            return
        painted = annotated_slices(np.asarray(labels.data))
        text = describe_annotated(painted, self._background(), labels.data.shape[0])
        self.annotated_label.setText(text)
        self._update_background_button()

    def _background(self) -> set[int]:
        session = self._current_session()
        return set() if session is None else set(session.background_slices)

    def _update_background_button(self) -> None:
        marked = self.current_slice() in self._background()
        text = "Unmark background slice" if marked else "Mark current slice as background"
        self.background_button.setText(text)

    def toggle_background(self) -> None:
        """Mark (or unmark) the current slice as annotated background."""
        session = self._ensure_session()
        if session is None:
            return
        index = self.current_slice()
        marked = set(session.background_slices)
        labels = self.labels_layer
        if index not in marked and labels is not None and np.any(labels.data[index]):
            show_info(f"Slice {index} already holds labels: it counts as annotated.")
            return
        session.set_background(marked ^ {index})
        self._update_summary()

    def _go_to_suggestion(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        if index is not None:
            self.go_to_slice(int(index))

    # ----------------------------------------------------------------- session

    def _current_session(self) -> Session | None:
        if self.session is not None and self._session_image is self.image_layer:
            return self.session
        return None

    def _ensure_session(self) -> Session | None:
        image = self.image_layer
        if image is None:
            show_error("Choose an image first.")
            return None
        if self._current_session() is None:
            try:
                self.session = Session.create(image.name, tuple(image.scale))
            except OSError as exc:
                show_error(
                    f"Cannot create the session folder: {exc}. "
                    "Set NAPARI_CRII_HOME to a folder you may write to."
                )
                return None
            self._session_image = image
        return self.session

    def autosave(self) -> bool:
        """Save the annotations to the session folder if they changed since the last save."""
        labels, image = self.labels_layer, self.image_layer
        if not self._dirty or labels is None or image is None or labels.ndim != 3:
            return False
        session = self._ensure_session()
        if session is None:
            return False
        try:
            session.save_annotations(labels.data)
        except (CriiError, OSError) as exc:
            show_warning(f"Autosave of the annotations failed: {exc}")
            return False
        self._dirty = False
        return True

    # ------------------------------------------------------------------ training

    def _check_image(self) -> Image | None:
        image = self.image_layer
        if image is None:
            show_error("Choose the image to segment (open a NIfTI or TIFF volume first).")
            return None
        if image.ndim != 3 or image.rgb:
            show_error(f"'{image.name}' is not a single-channel 3D volume; choose a 3D image.")
            return None
        return image

    def _check_layers(self) -> tuple[Image, Labels] | None:
        image, labels = self._check_image(), self.labels_layer
        if image is None:
            return None
        if labels is None:
            show_error("Choose an annotations layer, or press New and paint a few slices.")
            return None
        if tuple(labels.data.shape) != tuple(image.data.shape):
            show_error(
                f"The annotations '{labels.name}' have shape {tuple(labels.data.shape)} but the "
                f"image '{image.name}' has shape {tuple(image.data.shape)}. Choose the "
                "annotations of this image, or press New to start a fitting layer."
            )
            return None
        return image, labels

    def train(self) -> bool:
        """Save the annotations, then start a training round; False if it could not start."""
        if self.process.running:
            return False
        checked = self._check_layers()
        if checked is None:
            return False
        image, labels = checked
        if not annotated_slices(np.asarray(labels.data)):
            show_error(
                "No annotated slice yet: paint the structure on at least one slice of "
                f"'{labels.name}' (slices along the slider axis), then press Train."
            )
            return False
        device = self._chosen_device()
        session = self._ensure_session()
        if device is None or session is None:
            return False
        try:
            session.save_image(image.data)
            folder = session.new_round()
            label_path = session.save_round_annotations(labels.data, folder)
            self._dirty = False
        except (CriiError, OSError) as exc:
            show_error(f"Could not save the annotations before training: {exc}")
            return False
        request = self._request(session, folder, label_path, device)
        self.predictions.ensure_soon(image)
        self._start("train")
        self.process.start(request)
        self.process.request_preview(self.current_slice())
        return True

    def _chosen_device(self) -> str | None:
        """The device to train on; one that vanished since is refused by the training process
        with a message that names it."""
        return str(self.device_combo.currentData() or "auto")

    def _request(
        self, session: Session, folder: Path, labels: Path, device: str
    ) -> TrainingRequest:
        settings: dict[str, object] = {
            "train.preview_seconds": PREVIEW_SECONDS,
            "train.log_every": LOG_EVERY,
        }
        settings["train.learning_rate"] = self.learning_rate_spin.value()
        for name, spin in self.loss_spins.items():
            settings[f"loss.{name}"] = spin.value()
        settings.update(self.extra_settings)
        init = None
        if self.continue_check.isChecked() and session.last_model is not None:
            init = session.last_model  # the backend builds the network this model has
        seconds = iterations = None
        if self.budget_unit.currentText() == "iterations":
            iterations = self.budget_spin.value()
        else:
            seconds = float(self.budget_spin.value())
        return TrainingRequest(
            image=session.image_path,
            labels=labels,
            out=folder,
            method=self.method_combo.currentText(),
            device=device,
            seconds=seconds,
            iterations=iterations,
            seed=self.seed_spin.value(),
            preview_slice=self.current_slice(),
            init=init,
            background_slices=sorted(session.background_slices),
            settings=settings,
        )

    def stop(self) -> None:
        """Ask training to stop after the current step; the model is saved."""
        if self.process.running:
            forcing = self.stop_button.text() == FORCE_STOP
            self.process.stop()
            self._set_progress("ending…" if forcing else "stopping after this step…")
            self.stop_button.setText(FORCE_STOP)
            self.stop_button.setEnabled(not forcing)

    def _start(self, job: str) -> None:
        self._job = job
        self._pending_preview = None
        self.loss_curve.clear()
        self.losses_label.setText("")
        self._set_progress("starting…", 0.0)
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._job != "idle"
        for button in (self.train_button, self.predict_button, self.load_model_button):
            button.setEnabled(not busy)
        self.stop_button.setEnabled(self._job == "train")
        self.stop_button.setText("Stop")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Started):
            self._set_progress(f"training on {event.device}…")
        elif isinstance(event, Progress):
            self.loss_curve.add(event.losses.get("total", math.nan))
            self._pending_progress = event
            if not self._progress_timer.isActive():
                self._show_progress()
                self._progress_timer.start()
        elif isinstance(event, Preview):
            self._pending_preview = event
            wait = PREVIEW_MIN_INTERVAL_MS - 1000 * (time.monotonic() - self._last_preview_at)
            if wait <= 0:
                self._apply_preview()
            elif not self._preview_timer.isActive():
                self._preview_timer.start(int(wait))
        elif isinstance(event, Checkpoint) and self.session is not None:
            self.session.remember_model(event.path)
        elif isinstance(event, Prediction):
            self._pending_preview = None
            self.predictions.set_volumes(_layers.read_volumes(vars(event)))
        elif isinstance(event, Suggestions):
            self._show_suggestions(event.slices, event.scores)
        elif isinstance(event, Notice):
            show_warning(f"CRII training: {event.message}")
        elif isinstance(event, Finished):
            self._progress_timer.stop()
            self._pending_progress = None
            done = "stopped" if event.stopped_early else "done"
            self._set_progress(f"{done}: {event.iteration} iterations, {event.seconds:.0f} s", 1.0)

    def _set_progress(self, text: str, fraction: float | None = None) -> None:
        """Update the progress bar without its immediate repaint (QProgressBar.setValue paints
        at once, ~15 ms in a napari window): the repaint joins the next frame instead."""
        bar = self.progress_bar
        bar.setUpdatesEnabled(False)
        if fraction is not None:
            bar.setValue(int(1000 * min(max(fraction, 0.0), 1.0)))
        bar.setFormat(text)
        bar.setUpdatesEnabled(True)

    def _show_progress(self) -> None:
        event, self._pending_progress = self._pending_progress, None
        if event is None:
            return
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
        self._set_progress(text, fraction)
        losses = " · ".join(f"{name} {value:.3g}" for name, value in event.losses.items())
        self.losses_label.setText(losses)

    def _apply_preview(self) -> None:
        event, self._pending_preview = self._pending_preview, None
        if event is None or self._job != "train":
            return
        self._last_preview_at = time.monotonic()
        self.predictions.set_slice(*_layers.read_preview(event.path, event.slice_index))

    def _show_suggestions(self, slices: list[int], scores: list[float]) -> None:
        self.suggestion_list.clear()
        for index, score in zip(slices, scores, strict=False):
            item = QListWidgetItem(f"slice {index}    uncertainty {score:.3f}")
            item.setData(Qt.ItemDataRole.UserRole, int(index))
            self.suggestion_list.addItem(item)

    def _on_ended(self, outcome: ProcessOutcome) -> None:
        job, self._job = self._job, "idle"
        self._update_buttons()
        self._preview_timer.stop()
        self._progress_timer.stop()
        self._pending_preview = self._pending_progress = None
        run_dir = self.process.run_dir
        if job == "predict":
            self._end_predict(outcome, run_dir)
            return
        if outcome.finished is not None and self.session is not None:
            self.session.remember_model(outcome.finished.model_path)
        if outcome.ok:
            return
        self._set_progress("stopped" if outcome.stop_requested else "training failed")
        where = "" if self.session is None else f" (a copy is in {self.session.folder})"
        kept = self._kept_model_text()
        if outcome.error is not None:
            message = outcome.error.message
            show_error(f"Training failed: {message}\nYour annotations are untouched{where}.{kept}")
        elif outcome.stop_requested:
            show_warning(f"Training was ended before it finished.{kept}")
        else:
            tail = outcome.stderr_tail.strip() or "(no message)"
            show_error(
                "Training stopped unexpectedly (the training process exited with code "
                f"{outcome.exit_code}{', killed' if outcome.crashed else ''}). Last messages:\n"
                f"{tail}\nYour annotations are untouched{where}.{kept} Press Train to try again; "
                "if it fails again, choose a shorter budget or the CPU device, and see "
                f"{run_dir}/process.log."
            )

    def _kept_model_text(self) -> str:
        session = self.session
        if session is None or session.last_model is None:
            return ""
        return f" The last saved model ({session.last_model}) is kept for the next round."

    # ------------------------------------------------------------------ review

    def accept_slice(self) -> bool:
        """Copy the refined prediction of the current slice into the annotations (undoable)."""
        labels, image = self.labels_layer, self.image_layer
        index = self.current_slice()
        predicted = self.predictions.slice_of(_layers.REFINED, index)
        if labels is None or image is None or predicted is None:
            show_error("Nothing to accept yet: train a model first, then review a slice.")
            return False
        if tuple(labels.data.shape[1:]) != tuple(predicted.shape):
            show_error("The prediction does not fit the annotations layer; train again.")
            return False
        if _layers.copy_slice_undoable(labels, predicted, index) == 0:
            show_info(f"Slice {index} already matches the prediction.")
            return True
        self._on_annotations_changed()
        return True

    def undo(self) -> None:
        """Undo the last change to the annotations (Accept or a brush stroke)."""
        labels = self.labels_layer
        if labels is not None:
            labels.undo()
            self._on_annotations_changed()

    # ------------------------------------------------------------------ export

    def _ask_export(self, name: str | None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export labels", "", "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff)"
        )
        if path:
            self.export(path, name)

    def export(self, path: str | Path, name: str | None = None) -> bool:
        """Write the annotations (``name`` None) or a prediction layer in the source geometry."""
        from napari_crii._writer import write_labels

        layer = self.labels_layer if name is None else self.predictions.get(name)
        if layer is None:
            todo = "train a model first" if name else "choose an annotations layer"
            show_error(f"Nothing to export yet: {todo}.")
            return False
        meta = {
            "name": layer.name,
            "metadata": layer.metadata,
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
        }
        try:
            written = write_labels(str(path), np.asarray(layer.data), meta)
        except (CriiError, OSError) as exc:
            show_error(f"Export failed: {exc}")
            return False
        show_info(f"Wrote {', '.join(written)}")
        return True

    def _ask_save_model(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "Model (*.pt)")
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> bool:
        session = self._current_session()
        try:
            if session is None:
                raise FileNotFoundError("no model has been trained or loaded for this image yet")
            target = session.export_model(path)
        except OSError as exc:
            show_error(f"Could not save the model: {exc}")
            return False
        show_info(f"Saved the model to {target}")
        return True

    def _ask_load_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model (*.pt)")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> bool:
        """Check a model file and make it the one the next round (or Predict) starts from."""
        from training_backend.checkpoint import load_checkpoint

        try:
            data = load_checkpoint(path)
        except CriiError as exc:
            show_error(f"Cannot use this model: {exc}")
            return False
        session = self._ensure_session()
        if session is None:
            return False
        session.remember_model(path)
        self.continue_check.setChecked(True)
        show_info(
            f"Loaded {Path(path).name}: {data.config.train.method}, {data.num_classes} classes, "
            f"{data.iteration} iterations. The next round starts from it; Predict segments "
            "the image with it."
        )
        return True

    def predict(self) -> bool:
        """Segment the whole image with the last model (trained or loaded), without training."""
        image = self._check_image()
        session = self._current_session()
        if image is None or self.process.running:
            return False
        if session is None or session.last_model is None:
            show_error("No model yet: train a round or load a model first.")
            return False
        device = self._chosen_device()
        if device is None:
            return False
        labels = self.labels_layer
        if labels is not None and np.shape(labels.data) != np.shape(image.data):
            labels = None  # annotations of another image: predict with the network alone
        try:
            session.save_image(image.data)
            folder = session.new_round()
            label_path = None
            if labels is not None and annotated_slices(np.asarray(labels.data)):
                # the same finishing as at the end of a round: prior blend, components
                label_path = session.save_round_annotations(labels.data, folder)
        except (CriiError, OSError) as exc:
            show_error(f"Could not prepare the prediction: {exc}")
            return False
        arguments = predict_arguments(
            session.last_model,
            session.image_path,
            folder,
            device,
            labels=label_path,
            background_slices=sorted(session.background_slices) if label_path else (),
        )
        self.predictions.ensure(image)
        self._start("predict")
        self._set_progress("predicting…")
        self.process.start_command(arguments, folder)
        return True

    def _end_predict(self, outcome: ProcessOutcome, run_dir: Path | None) -> None:
        if outcome.exit_code != 0 or outcome.crashed or run_dir is None:
            self._set_progress("prediction failed")
            tail = outcome.stderr_tail.strip() or "(no message)"
            show_error(f"Prediction failed:\n{tail}")
            return
        from training_backend.io import read_volume

        paths = {key: run_dir / f"{key}.nii" for key in _layers.VOLUME_KEYS}
        arrays = {_layers.VOLUME_KEYS[key]: read_volume(path).array for key, path in paths.items()}
        self.predictions.set_volumes(arrays)
        self._set_progress("prediction done", 1.0)

    # ------------------------------------------------------------------ closing

    def shutdown(self) -> None:
        """Stop timers, save unsaved annotations and end a running process."""
        self._autosave_timer.stop()
        self.autosave()
        self.process.shutdown()

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)


def _float_spin(value: float, low: float, high: float, decimals: int) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setSingleStep(10 ** (-decimals + 1) if decimals > 3 else 0.05)
    spin.setValue(value)
    return spin


def _single_shot(parent: QWidget, msec: int, slot: Any) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.timeout.connect(slot)
    return timer


def _set_choices(combo: QComboBox, names: list[str]) -> None:
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
