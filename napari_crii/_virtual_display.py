"""A virtual X display for scripts that show napari on a machine without a screen."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def display_if_needed(size: tuple[int, int] = (1600, 1000)) -> Iterator[None]:
    """Start Xvfb (through pyvirtualdisplay) when ``DISPLAY`` is unset; stop it afterwards."""
    if os.environ.get("DISPLAY"):
        yield
        return
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=size)
    display.start()
    try:
        yield
    finally:
        display.stop()
