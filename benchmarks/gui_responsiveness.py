"""How long the napari event loop is blocked while the plugin trains in its child process.

A QTimer fires every 5 ms; each gap between two firings beyond 5 ms is time the event loop
could not run (blocked). Measured for 10 s idle (viewer with the phantom sample and the
widget), 10 s idle with the slider moved every 0.5 s (the cost of one napari redraw, for
reference), then during two training rounds of ``--seconds`` each (previews of the viewed slice
and the final whole-volume update included): the first creates the prediction layers, the
second warm-starts from the first with the layers in place. The time spent in the widget's
own event handlers is measured too, to tell our code from the operating system sharing the
cores with training (the training process runs at a lower priority, nice 10).

    .venv/bin/python benchmarks/gui_responsiveness.py [--seconds 30] [--out FILE]

Without a ``DISPLAY`` it starts a virtual X server (Xvfb, through pyvirtualdisplay).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_crii._virtual_display import display_if_needed

INTERVAL_MS = 5
IDLE_SECONDS = 10.0
TAIL_SECONDS = 1.0
LONG_GAP_MS = 50.0
REDRAW_WINDOW_S = 0.1
SLIDER = "slider steps"
PHASES = ("idle", SLIDER, "training round 1", "training round 2")
"""``slider steps``: no training, the slider moves one slice every 0.5 s, the reference cost of
one napari redraw; round 1 creates the three prediction layers; round 2 warm-starts with the
layers in place."""
SLIDER_STEP_MS = 500
DEFAULT_OUT = Path(__file__).parent / "results" / "gui_responsiveness.txt"


class GapRecorder:
    """Records the blocked time (gap - interval) between successive firings of a QTimer."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.phase: str | None = None
        self.blocked: dict[str, list[float]] = defaultdict(list)
        self.marks: list[tuple[float, str]] = []
        """(time, what the GUI was doing): to name the cause of a long gap."""
        self.long_gaps: dict[str, list[str]] = defaultdict(list)
        self._phase_start = time.perf_counter()
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)

    def start(self, phase: str) -> None:
        self.phase = phase
        self._last = self._phase_start = time.perf_counter()
        if not self.timer.isActive():
            self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.phase is not None:
            blocked = max(0.0, (now - self._last) * 1000 - INTERVAL_MS)
            self.blocked[self.phase].append(blocked)
            if blocked > LONG_GAP_MS:
                self.long_gaps[self.phase].append(
                    f"{blocked:.0f} ms at {self._last - self._phase_start:.1f} s "
                    f"({self._cause(self._last, now)})"
                )
        self._last = now

    def _cause(self, start: float, end: float) -> str:
        during = [what for at, what in self.marks if start - 0.001 <= at <= end]
        if during:
            return ", ".join(during)
        before = [(at, what) for at, what in self.marks if start - REDRAW_WINDOW_S <= at < start]
        if before:
            at, what = before[-1]
            return f"napari redraw {1000 * (start - at):.0f} ms after: {what}"
        return "no widget activity: napari or the OS"

    def mark(self, what: str) -> None:
        self.marks.append((time.perf_counter(), what))


def run_for(seconds: float) -> None:
    """Let the Qt event loop run for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def step_slider(viewer, recorder: GapRecorder) -> None:
    recorder.mark("slider step")
    count = viewer.layers["phantom"].data.shape[0]
    viewer.dims.set_current_step(0, (viewer.dims.current_step[0] + 1) % count)


def time_handlers(widget, handler_ms: dict[str, list[float]], recorder: GapRecorder) -> None:
    """Wrap the widget's event handler and preview/volume updates to time and mark them."""
    display = widget.display
    original_event = widget._on_event
    original_preview = display._apply_preview

    def timed_event(event) -> None:
        started = time.perf_counter()
        recorder.mark(f"{event.kind} event")
        original_event(event)
        handler_ms[f"event {event.kind}"].append((time.perf_counter() - started) * 1000)

    def timed_preview() -> None:
        started = time.perf_counter()
        recorder.mark("preview update")
        original_preview()
        handler_ms["preview slice update"].append((time.perf_counter() - started) * 1000)

    widget.process.received.disconnect(widget._on_event)
    widget.process.received.connect(timed_event)
    display._apply_preview = timed_preview
    display._preview_timer.timeout.disconnect()
    display._preview_timer.timeout.connect(timed_preview)


def summary(values: list[float]) -> str:
    data = np.asarray(values)
    return (
        f"p50 {np.percentile(data, 50):7.2f}  p99 {np.percentile(data, 99):7.2f}  "
        f"max {data.max():7.2f}  samples {data.size}"
    )


def machine() -> str:
    import napari
    import torch
    from qtpy import API_NAME, QT_VERSION

    return (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, napari {napari.__version__}, {API_NAME} (Qt {QT_VERSION}), "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="training budget")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    os.environ.setdefault("NAPARI_CRII_HOME", tempfile.mkdtemp(prefix="crii-bench-"))
    with display_if_needed():
        lines = measure(args)
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def measure(args: argparse.Namespace) -> list[str]:
    import napari
    from qtpy.QtCore import QTimer

    from napari_crii._sample_data import make_sample_data
    from napari_crii._widget import CriiWidget

    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = CriiWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CRII-Net")
    panel = widget.training_panel
    panel.budget_unit.setCurrentText("seconds")
    panel.budget_spin.setValue(int(args.seconds))
    panel.device_combo.setCurrentIndex(max(panel.device_combo.findData(args.device), 0))
    handler_ms: dict[str, list[float]] = defaultdict(list)
    recorder = GapRecorder()
    time_handlers(widget, handler_ms, recorder)
    viewer.layers.events.inserted.connect(lambda e: recorder.mark(f"'{e.value.name}' added"))
    run_for(2.0)  # let the window settle
    recorder.start("idle")
    run_for(IDLE_SECONDS)
    recorder.start(SLIDER)
    stepper = QTimer()
    stepper.setInterval(SLIDER_STEP_MS)
    stepper.timeout.connect(lambda: step_slider(viewer, recorder))
    stepper.start()
    run_for(IDLE_SECONDS)
    stepper.stop()
    viewer.dims.set_current_step(0, viewer.layers["phantom"].data.shape[0] // 2)
    rounds = []
    for phase in PHASES[2:]:
        recorder.start(phase)
        started = time.perf_counter()
        recorder.mark("Train pressed")
        if not widget.train():
            raise SystemExit("training did not start")
        while widget.process.running:
            run_for(0.2)
        run_for(TAIL_SECONDS)
        recorder.phase = None
        rounds.append(f"{time.perf_counter() - started:.0f} s ({panel.progress_bar.text()})")
    viewer.close()

    command = "xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py"
    if args.seconds != 30.0:
        command += f" --seconds {args.seconds:g}"
    lines = [
        f"$ {command}",
        f"machine: {machine()}",
        f"training: phantom sample {make_sample_data()[0][0].shape}, default network, "
        f"device {args.device}, budget {args.seconds:g} s per round; each round from Train to "
        f"the final layer update took {' and '.join(rounds)}",
        f"timer interval {INTERVAL_MS} ms; blocked time = gap between firings - {INTERVAL_MS} ms",
        "",
        "event loop blocked (ms)",
    ]
    for phase in PHASES:
        values = recorder.blocked[phase]
        over = sum(v > 50 for v in values)
        lines.append(f"  {phase:16s} {summary(values)}  over 50 ms: {over}")
    lines += ["", f"gaps over {LONG_GAP_MS:.0f} ms, with what the widget did meanwhile"]
    for phase in PHASES:
        for gap in recorder.long_gaps[phase]:
            lines.append(f"  {phase}: {gap}")
    lines += [
        "  (a preview redraws the viewed slice: one napari redraw, as a slider step costs;",
        "   on this machine napari draws with a software OpenGL rasteriser under Xvfb)",
        "",
        "time in the widget's own handlers during training (ms)",
    ]
    for name, values in sorted(handler_ms.items()):
        lines.append(f"  {name:22s} {summary(values)}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
