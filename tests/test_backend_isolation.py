"""The backend must run without a screen: importing all of it pulls in no Qt and no napari."""

import pkgutil
import subprocess
import sys

import training_backend

FORBIDDEN = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")


def test_backend_imports_neither_qt_nor_napari():
    modules = [
        f"training_backend.{m.name}" for m in pkgutil.iter_modules(training_backend.__path__)
    ]
    assert "training_backend.trainer" in modules and "training_backend.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
