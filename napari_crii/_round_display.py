"""A running round on screen: progress and preview slices, throttled for the event loop.

Training may report faster than napari can redraw. Progress is shown at most every
``PROGRESS_INTERVAL_MS`` and preview slices at most every ``PREVIEW_MIN_INTERVAL_MS``; only
the latest waiting event of each kind is shown.
"""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QObject

from napari_crii import _layers
from napari_crii._panels import TrainingPanel, single_shot
from training_backend.events import Finished, Preview, Progress

PREVIEW_MIN_INTERVAL_MS = 250
PROGRESS_INTERVAL_MS = 200


class RoundDisplay(QObject):
    """Shows one job at a time in the training panel and its previews in the prediction layers."""

    def __init__(
        self, panel: TrainingPanel, predictions: _layers.PredictionLayers, parent: QObject
    ) -> None:
        super().__init__(parent)
        self.panel = panel
        self.predictions = predictions
        self._previews_wanted = False
        self._pending_preview: Preview | None = None
        self._pending_progress: Progress | None = None
        self._last_preview_at = 0.0
        self._preview_timer = single_shot(self, PREVIEW_MIN_INTERVAL_MS, self._apply_preview)
        self._progress_timer = single_shot(self, PROGRESS_INTERVAL_MS, self._show_progress)

    def begin(self, previews: bool) -> None:
        """A new job; ``previews``: show the preview slices it sends (training does)."""
        self._previews_wanted = previews
        self._pending_preview = None
        self.panel.clear_progress("starting…")

    def end(self) -> None:
        """The job's process ended: drop what still waits to be shown."""
        self._previews_wanted = False
        self._preview_timer.stop()
        self._progress_timer.stop()
        self._pending_preview = self._pending_progress = None

    def progress(self, event: Progress) -> None:
        self.panel.loss_curve.add(event.losses.get("total", math.nan))
        self._pending_progress = event
        if not self._progress_timer.isActive():
            self._show_progress()
            self._progress_timer.start()

    def preview(self, event: Preview) -> None:
        self._pending_preview = event
        wait = PREVIEW_MIN_INTERVAL_MS - 1000 * (time.monotonic() - self._last_preview_at)
        if wait <= 0:
            self._apply_preview()
        elif not self._preview_timer.isActive():
            self._preview_timer.start(int(wait))

    def drop_preview(self) -> None:
        """The whole volume arrived: a waiting preview slice is out of date."""
        self._pending_preview = None

    def finished(self, event: Finished) -> None:
        self._progress_timer.stop()
        self._pending_progress = None
        done = "stopped" if event.stopped_early else "done"
        self.panel.set_progress(f"{done}: {event.iteration} iterations, {event.seconds:.0f} s", 1.0)

    def _show_progress(self) -> None:
        event, self._pending_progress = self._pending_progress, None
        if event is not None:
            self.panel.show_progress(event)

    def _apply_preview(self) -> None:
        event, self._pending_preview = self._pending_preview, None
        if event is None or not self._previews_wanted:
            return
        self._last_preview_at = time.monotonic()
        self.predictions.set_slice(*_layers.read_preview(event.path, event.slice_index))
