"""Screenshot of napari with the CRII-Net widget after a short training round.

Opens the phantom sample, trains for ``--seconds`` (after a first round of
``--first-round-seconds`` if given: a busy CPU needs minutes for a model worth showing), goes
to an unannotated slice where the refined overlay and the hard-boundary map both show, and
saves the whole window to ``docs/images/napari-crii.png``.

    .venv/bin/python scripts/screenshot.py [--first-round-seconds 0] [--seconds 40] [--out PNG]

Without a ``DISPLAY`` it starts a virtual X server (Xvfb, through pyvirtualdisplay).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from napari_crii._virtual_display import display_if_needed

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SIZE = (1480, 920)
LESION = 2


def run_for(seconds: float) -> None:
    """Let the Qt event loop run for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def best_slice(viewer) -> int:
    """An unannotated slice with a large predicted organ (and the lesion, if predicted on
    one) and the most hard boundary."""
    from napari_crii import _layers

    refined = viewer.layers[_layers.REFINED].data
    hardness = viewer.layers[_layers.HARDNESS].data
    painted = viewer.layers["phantom annotations"].data
    count = refined.shape[0]
    area = (refined.reshape(count, -1) > 0).sum(axis=1)
    hard = hardness.reshape(count, -1).sum(axis=1)
    free = ~painted.reshape(count, -1).any(axis=1)
    candidates = np.flatnonzero(free & (area >= area.max() / 2))
    lesion = [i for i in candidates if (refined[i] == LESION).any()]
    candidates = np.asarray(lesion or candidates, dtype=int)
    return int(candidates[np.argmax(hard[candidates])]) if candidates.size else count // 2


def take(args: argparse.Namespace) -> Path:
    import napari

    from napari_crii import _layers
    from napari_crii._sample_data import make_sample_data
    from napari_crii._widget import CriiWidget

    viewer = napari.Viewer(show=True, title="napari-crii")
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = CriiWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CRII-Net", area="right")
    widget.training_panel.budget_unit.setCurrentText("seconds")
    run_for(1.0)
    for budget in (args.first_round_seconds, args.seconds):
        if budget <= 0:
            continue
        widget.training_panel.budget_spin.setValue(int(budget))
        if not widget.train():
            raise SystemExit("training did not start")
        while widget.process.running:
            run_for(0.5)
        print(f"round of {budget:g} s: {widget.training_panel.progress_bar.text()}")
    run_for(1.0)
    widget.go_to_slice(best_slice(viewer))
    viewer.layers.selection.active = viewer.layers["phantom annotations"]
    viewer.layers[_layers.REFINED].opacity = 0.45
    viewer.reset_view()
    run_for(1.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    viewer.close()
    return args.out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="budget of the round shown")
    parser.add_argument(
        "--first-round-seconds",
        type=float,
        default=0.0,
        help="train a first round this long before (the round shown then continues from it)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "napari-crii.png")
    args = parser.parse_args()
    os.environ.setdefault("NAPARI_CRII_HOME", tempfile.mkdtemp(prefix="crii-screenshot-"))
    with display_if_needed():
        print(f"wrote {take(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
