"""Headless CRII-Net trainer: volumes, model, losses, training loop, inference and the `crii` CLI.

This package never imports Qt or napari: it runs in a terminal, in a child process of the
napari plugin, under ``torchrun`` and in tests.
"""

__version__ = "0.1.0"
