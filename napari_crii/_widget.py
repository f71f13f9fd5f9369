"""The CRII-Net dock widget: annotate, train in a child process, review, accept, export.

Only the main thread touches layers. The controls live in :mod:`napari_crii._panels`, the
export and model-file actions in :mod:`napari_crii._files`. Training runs in a child process
(:mod:`napari_crii._training_process`); its events arrive as Qt signals and a running round is
shown by :mod:`napari_crii._round_display`. Files live in a per-image session folder
(:mod:`napari_crii._session`); prediction layers are managed by :mod:`napari_crii._layers`.
Every problem a person can act on becomes a napari notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_crii import _layers
from napari_crii._files import FileActions
from napari_crii._panels import (
    DataPanel,
    ReviewPanel,
    SuggestionsPanel,
    TrainingPanel,
    single_shot,
)
from napari_crii._round_display import RoundDisplay
from napari_crii._session import Session, annotated_slices, describe_annotated
from napari_crii._training_process import (
    ProcessOutcome,
    TrainingProcess,
    TrainingRequest,
    predict_arguments,
)
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
LOG_EVERY = 1
FORCE_STOP = "Force stop"
SUMMARY_DELAY_MS = 300
PREVIEW_SECONDS = 1.0


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
        self._offered: set[int] = set()
        self._earlier: dict[int, Session | None] = {}
        """The earlier session found for each image layer (looked for once per layer)."""
        self._build()
        self.display = RoundDisplay(self.training_panel, self.predictions, self)
        self.files = FileActions(self)
        self._connect()
        self._refresh_layer_choices()

    # ------------------------------------------------------------------- layout

    def _build(self) -> None:
        self.data_panel = DataPanel()
        self.training_panel = TrainingPanel()
        self.suggestions_panel = SuggestionsPanel()
        self.review_panel = ReviewPanel()
        layout = QVBoxLayout(self)
        layout.addWidget(self.data_panel)
        layout.addWidget(self.training_panel)
        layout.addWidget(self.suggestions_panel)
        layout.addWidget(self.review_panel)
        layout.addStretch(1)

    def _connect(self) -> None:
        layers = self.viewer.layers.events
        for emitter in (layers.inserted, layers.removed, layers.moved):
            emitter.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._on_step)
        data, training, review = self.data_panel, self.training_panel, self.review_panel
        data.image_combo.currentIndexChanged.connect(self._on_layers_chosen)
        data.labels_combo.currentIndexChanged.connect(self._on_layers_chosen)
        data.new_labels_button.clicked.connect(self.new_annotations)
        data.background_button.clicked.connect(self.toggle_background)
        data.restore_button.clicked.connect(self.restore_session)
        training.train_button.clicked.connect(self.train)
        training.stop_button.clicked.connect(self.stop)
        self.suggestions_panel.slice_chosen.connect(self.go_to_slice)
        review.accept_button.clicked.connect(self.accept_slice)
        review.undo_button.clicked.connect(self.undo)
        review.predict_button.clicked.connect(self.predict)
        self.process.received.connect(self._on_event)
        self.process.ended.connect(self._on_ended)
        self._summary_timer = single_shot(self, SUMMARY_DELAY_MS, self._update_summary)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()
        self._update_buttons()

    # ------------------------------------------------------------------- layers

    @property
    def image_layer(self) -> Image | None:
        return self._layer(self.data_panel.image_combo.currentText(), Image)

    @property
    def labels_layer(self) -> Labels | None:
        return self._layer(self.data_panel.labels_combo.currentText(), Labels)

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
        self.data_panel.set_layer_choices(images, labels)
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
            self.data_panel.show_slice_count(None)
        else:
            self.data_panel.show_slice_count(image.data.shape[0] if image.ndim == 3 else 0)
        self._offer_restore()
        self._update_summary()

    def _previous_session(self) -> Session | None:
        image = self.image_layer
        if image is None or image.ndim != 3:
            return None
        if id(image) not in self._earlier:
            self._earlier[id(image)] = Session.previous(image.name, image.data.shape)
        found = self._earlier[id(image)]
        current = self.current_session()
        if found is None or (current is not None and found.folder == current.folder):
            return None
        return found

    def _offer_restore(self) -> None:
        """Once per image layer: say so when an earlier session of it holds annotations."""
        image = self.image_layer
        found = self._previous_session()
        self.data_panel.restore_button.setEnabled(found is not None)
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
        self.data_panel.labels_combo.setCurrentText(layer.name)
        self.data_panel.restore_button.setEnabled(False)
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
        self.data_panel.labels_combo.setCurrentText(layer.name)
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
            self.data_panel.annotated_label.setText("choose or create an annotations layer")
            self._update_background_button()
            return
        painted = annotated_slices(np.asarray(labels.data))
        text = describe_annotated(painted, self._background(), labels.data.shape[0])
        self.data_panel.annotated_label.setText(text)
        self._update_background_button()

    def _background(self) -> set[int]:
        session = self.current_session()
        return set() if session is None else set(session.background_slices)

    def _update_background_button(self) -> None:
        self.data_panel.show_background_marked(self.current_slice() in self._background())

    def toggle_background(self) -> None:
        """Mark (or unmark) the current slice as annotated background."""
        session = self.ensure_session()
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

    # ----------------------------------------------------------------- session

    def current_session(self) -> Session | None:
        if self.session is not None and self._session_image is self.image_layer:
            return self.session
        return None

    def ensure_session(self) -> Session | None:
        image = self.image_layer
        if image is None:
            show_error("Choose an image first.")
            return None
        if self.current_session() is None:
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
        session = self.ensure_session()
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
        session = self.ensure_session()
        if session is None:
            return False
        try:
            session.save_image(image.data)
            folder = session.new_round()
            label_path = session.save_round_annotations(labels.data, folder)
            self._dirty = False
        except (CriiError, OSError) as exc:
            show_error(f"Could not save the annotations before training: {exc}")
            return False
        request = self._request(session, folder, label_path)
        self.predictions.ensure_soon(image)
        self._start("train")
        self.process.start(request)
        self.process.request_preview(self.current_slice())
        return True

    def _request(self, session: Session, folder: Path, labels: Path) -> TrainingRequest:
        panel = self.training_panel
        settings: dict[str, object] = {
            "train.preview_seconds": PREVIEW_SECONDS,
            "train.log_every": LOG_EVERY,
            **panel.settings(),
        }
        settings.update(self.extra_settings)
        init = None
        if panel.continue_check.isChecked() and session.last_model is not None:
            init = session.last_model  # the backend builds the network this model has
        seconds, iterations = panel.budget()
        return TrainingRequest(
            image=session.image_path,
            labels=labels,
            out=folder,
            method=panel.method_combo.currentText(),
            device=panel.device(),
            seconds=seconds,
            iterations=iterations,
            seed=panel.seed_spin.value(),
            preview_slice=self.current_slice(),
            init=init,
            background_slices=sorted(session.background_slices),
            settings=settings,
        )

    def stop(self) -> None:
        """Ask training to stop after the current step; the model is saved."""
        if self.process.running:
            stop_button = self.training_panel.stop_button
            forcing = stop_button.text() == FORCE_STOP
            self.process.stop()
            self.training_panel.set_progress("ending…" if forcing else "stopping after this step…")
            stop_button.setText(FORCE_STOP)
            stop_button.setEnabled(not forcing)

    def _start(self, job: str) -> None:
        self._job = job
        self.display.begin(previews=job == "train")
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._job != "idle"
        training, review = self.training_panel, self.review_panel
        for button in (training.train_button, review.predict_button, review.load_model_button):
            button.setEnabled(not busy)
        training.stop_button.setEnabled(self._job == "train")
        training.stop_button.setText("Stop")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Started):
            self.training_panel.set_progress(f"training on {event.device}…")
        elif isinstance(event, Progress):
            self.display.progress(event)
        elif isinstance(event, Preview):
            self.display.preview(event)
        elif isinstance(event, Checkpoint) and self.session is not None:
            self.session.remember_model(event.path)
        elif isinstance(event, Prediction):
            self.display.drop_preview()
            self.predictions.set_volumes(_layers.read_volumes(vars(event)))
            if event.class_borders:
                show_info(event.class_borders)
        elif isinstance(event, Suggestions):
            self.suggestions_panel.show_suggestions(event.slices, event.scores)
        elif isinstance(event, Notice):
            show_warning(f"CRII training: {event.message}")
        elif isinstance(event, Finished):
            self.display.finished(event)

    def _on_ended(self, outcome: ProcessOutcome) -> None:
        job, self._job = self._job, "idle"
        self._update_buttons()
        self.display.end()
        run_dir = self.process.run_dir
        if job == "predict":
            self._end_predict(outcome, run_dir)
            return
        if outcome.finished is not None and self.session is not None:
            self.session.remember_model(outcome.finished.model_path)
        if outcome.ok:
            return
        self.training_panel.set_progress("stopped" if outcome.stop_requested else "training failed")
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

    # ------------------------------------------------------------------ predict

    def predict(self) -> bool:
        """Segment the whole image with the last model (trained or loaded), without training."""
        image = self._check_image()
        session = self.current_session()
        if image is None or self.process.running:
            return False
        if session is None or session.last_model is None:
            show_error("No model yet: train a round or load a model first.")
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
            self.training_panel.device(),
            labels=label_path,
            background_slices=sorted(session.background_slices) if label_path else (),
        )
        self.predictions.ensure(image)
        self._start("predict")
        self.training_panel.set_progress("predicting…")
        self.process.start_command(arguments, folder)
        return True

    def _end_predict(self, outcome: ProcessOutcome, run_dir: Path | None) -> None:
        if outcome.exit_code != 0 or outcome.crashed or run_dir is None:
            self.training_panel.set_progress("prediction failed")
            tail = outcome.stderr_tail.strip() or "(no message)"
            show_error(f"Prediction failed:\n{tail}")
            return
        from training_backend.io import read_volume

        paths = {key: run_dir / f"{key}.nii" for key in _layers.VOLUME_KEYS}
        arrays = {_layers.VOLUME_KEYS[key]: read_volume(path).array for key, path in paths.items()}
        self.predictions.set_volumes(arrays)
        self.training_panel.set_progress("prediction done", 1.0)

    # ------------------------------------------------------------------ closing

    def shutdown(self) -> None:
        """Stop timers, save unsaved annotations and end a running process."""
        self._autosave_timer.stop()
        self.autosave()
        self.process.shutdown()

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)
