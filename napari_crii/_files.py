"""The dock widget's file actions: export a labels layer, save the model, load a model.

Each action has a button (in :class:`napari_crii._panels.ReviewPanel`) that asks for a path,
and a method that takes the path, so tests and scripts skip the dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from napari_crii import _layers
from training_backend.errors import CriiError

if TYPE_CHECKING:
    from napari_crii._widget import CriiWidget


class FileActions:
    """Export, Save model and Load model for one :class:`CriiWidget`."""

    def __init__(self, widget: CriiWidget) -> None:
        self.widget = widget
        panel = widget.review_panel
        panel.export_refined_button.clicked.connect(lambda: self._ask_export(_layers.REFINED))
        panel.export_labels_button.clicked.connect(lambda: self._ask_export(None))
        panel.save_model_button.clicked.connect(self._ask_save_model)
        panel.load_model_button.clicked.connect(self._ask_load_model)

    def _ask_export(self, name: str | None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.widget, "Export labels", "", "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff)"
        )
        if path:
            self.export(path, name)

    def export(self, path: str | Path, name: str | None = None) -> bool:
        """Write the annotations (``name`` None) or a prediction layer in the source geometry."""
        from napari_crii._writer import write_labels

        widget = self.widget
        layer = widget.labels_layer if name is None else widget.predictions.get(name)
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
        path, _ = QFileDialog.getSaveFileName(self.widget, "Save model", "model.pt", "Model (*.pt)")
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> bool:
        """Copy the last model of this image's session to ``path``."""
        session = self.widget.current_session()
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
        path, _ = QFileDialog.getOpenFileName(self.widget, "Load model", "", "Model (*.pt)")
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
        session = self.widget.ensure_session()
        if session is None:
            return False
        session.remember_model(path)
        self.widget.training_panel.continue_check.setChecked(True)
        show_info(
            f"Loaded {Path(path).name}: {data.config.train.method}, {data.num_classes} classes, "
            f"{data.iteration} iterations. The next round starts from it; Predict segments "
            "the image with it."
        )
        return True
