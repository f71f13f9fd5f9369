"""Human-readable progress for the terminal (the plugin reads JSON events instead)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from training_backend.events import (
    Checkpoint,
    Error,
    Event,
    Finished,
    Notice,
    Prediction,
    Progress,
    Started,
    Suggestions,
)

_SHORT = {
    "total": "loss",
    "supervised": "sup",
    "consistency": "cr",
    "intra_prl": "intra",
    "inter_prl": "inter",
}


class ConsoleReporter:
    """A progress bar on a terminal; a line every few seconds when output is a file."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.every = every
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._open_line = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, Started):
            budget = (
                f"{event.total_iterations} iterations"
                if event.total_iterations
                else f"{event.budget_seconds:g} s"
            )
            self._line(
                f"training {event.method} on {event.device}: {event.num_classes} classes, "
                f"annotated slices {event.annotated_slices}, budget {budget}"
            )
        elif isinstance(event, Checkpoint):
            pass
        elif isinstance(event, Prediction):
            self._line(f"prediction written: {event.refined}")
            if event.class_borders:
                self._line(event.class_borders)
        elif isinstance(event, Suggestions):
            pairs = ", ".join(
                f"{s} ({v:.3f})" for s, v in zip(event.slices, event.scores, strict=True)
            )
            self._line(f"annotate next (slice, score): {pairs}")
        elif isinstance(event, Finished):
            how = "stopped" if event.stopped_early else "finished"
            self._line(
                f"{how} after {event.iteration} iterations in {event.seconds:.1f} s; "
                f"model: {event.model_path}"
            )
        elif isinstance(event, Notice):
            self._line(f"note: {event.message}")
        elif isinstance(event, Error):
            self._line(f"error: {event.message}")

    def _progress(self, event: Progress) -> None:
        now = time.monotonic()
        if not self.interactive and now - self._last < self.every:
            return
        self._last = now
        fraction = 0.0
        if event.eta_seconds is not None and event.seconds + event.eta_seconds > 0:
            fraction = event.seconds / (event.seconds + event.eta_seconds)
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        losses = " ".join(f"{_SHORT.get(k, k)} {v:.3f}" for k, v in event.losses.items())
        eta = "" if event.eta_seconds is None else f" eta {event.eta_seconds:4.0f}s"
        text = (
            f"[{bar}] it {event.iteration:5d} {event.seconds:6.1f}s{eta} "
            f"{event.iterations_per_second:5.1f} it/s  {losses}"
        )
        if self.interactive:
            self.stream.write("\r" + text)
            self._open_line = True
            self.stream.flush()
        else:
            self._line(text)

    def _line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()
