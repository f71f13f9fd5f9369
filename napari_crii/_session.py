"""One annotation session on disk: its folder, the saved volumes, the training rounds.

A session belongs to one image. Its folder (``$NAPARI_CRII_HOME/sessions/<image>-<time>``,
``~/.napari-crii`` by default) holds the image and the annotations in napari display order as
uncompressed NIfTI (voxel sizes = the layer's scale), ``session.json`` (background slices, last
model) and one ``round-NNN/`` folder per training round. Every write is atomic (temp + rename),
so a crash never leaves a half-written annotation file. No Qt here: the widget owns the timers.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from training_backend.atomic import copy_file, write_text
from training_backend.errors import VolumeError
from training_backend.io import Geometry, read_volume, write_volume

HOME_VARIABLE = "NAPARI_CRII_HOME"
IMAGE_FILE = "image.nii"
ANNOTATIONS_FILE = "annotations.nii"
ROUND_LABELS_FILE = "labels.nii"
STATE_FILE = "session.json"
ROUND_PREFIX = "round-"


def crii_home() -> Path:
    """Where sessions are kept: ``$NAPARI_CRII_HOME``, else ``~/.napari-crii``."""
    configured = os.environ.get(HOME_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".napari-crii"


def annotated_slices(labels: np.ndarray) -> list[int]:
    """Indices along axis 0 of the slices that hold at least one non-zero label."""
    if labels.ndim < 2 or labels.shape[0] == 0:
        return []
    flat = np.asarray(labels).reshape(labels.shape[0], -1)
    return [int(i) for i in np.flatnonzero(flat.any(axis=1))]


def format_slices(indices: Sequence[int]) -> str:
    """``[0, 5, 10, 11, 12]`` -> ``'0,5,10-12'`` (the backend's ``--background-slices`` form)."""
    parts: list[str] = []
    ordered = sorted(set(int(i) for i in indices))
    start = previous = None
    for index in [*ordered, None]:
        if start is not None and (index is None or index != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if index is not None and start is None:
            start = index
        previous = index
    return ",".join(parts)


def describe_annotated(painted: Sequence[int], background: Iterable[int], count: int) -> str:
    """``'9, 17, 25 (bg) (3 of 36)'``: the annotated slices, compact when there are many."""
    background = set(background)
    shown = sorted(set(painted) | background)
    names = [f"{i} (bg)" if i in background and i not in painted else str(i) for i in shown]
    if len(names) > 14:
        names = [*names[:6], "…", *names[-6:]]
    listing = ", ".join(names) if names else "none yet: paint a slice"
    return f"{listing} ({len(shown)} of {count})"


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:60] or "image"


class Session:
    """The files of one annotation session; see the module docstring for the layout."""

    def __init__(self, folder: Path, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spacing = tuple(float(s) for s in spacing[-3:])
        self.background_slices: set[int] = set()
        self.last_model: Path | None = None
        self._load_state()

    @classmethod
    def create(cls, image_name: str, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Session:
        """A new session folder for the image called ``image_name``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = crii_home() / "sessions" / f"{_safe_name(image_name)}-{stamp}"
        folder, suffix = base, 1
        while folder.exists():
            suffix += 1
            folder = base.with_name(f"{base.name}-{suffix}")
        return cls(folder, spacing)

    @classmethod
    def previous(cls, image_name: str, shape: Sequence[int]) -> Session | None:
        """The most recently saved earlier session of ``image_name`` whose annotations fit
        ``shape`` and hold at least one label, or None."""
        pattern = re.compile(rf"{re.escape(_safe_name(image_name))}-\d{{8}}-\d{{6}}(-\d+)?")
        candidates = []
        for folder in (crii_home() / "sessions").glob(f"{_safe_name(image_name)}-*"):
            saved = folder / ANNOTATIONS_FILE
            if pattern.fullmatch(folder.name) and saved.is_file():
                candidates.append((saved.stat().st_mtime, folder))
        for _, folder in sorted(candidates, reverse=True):
            labels = _read_annotations(folder / ANNOTATIONS_FILE)
            if labels is not None and labels.shape == tuple(shape) and labels.any():
                return cls(folder)
        return None

    def saved_annotations(self) -> np.ndarray | None:
        """The session's saved annotations (display order), or None when unreadable."""
        return _read_annotations(self.annotations_path)

    # ------------------------------------------------------------------ volumes

    @property
    def geometry(self) -> Geometry:
        """Display order, voxel sizes from the layer's scale, origin at zero."""
        return Geometry(np.diag([*self.spacing, 1.0]), self.spacing, "nifti")

    @property
    def image_path(self) -> Path:
        return self.folder / IMAGE_FILE

    @property
    def annotations_path(self) -> Path:
        return self.folder / ANNOTATIONS_FILE

    def save_image(self, image: np.ndarray) -> Path:
        """Write the image once (it does not change during a session)."""
        if not self.image_path.exists():
            write_volume(self.image_path, np.asarray(image), self.geometry)
        return self.image_path

    def save_annotations(self, labels: np.ndarray, path: Path | None = None) -> Path:
        """Write the annotations atomically (the session's copy unless ``path`` is given)."""
        target = self.annotations_path if path is None else Path(path)
        write_volume(target, np.asarray(labels), self.geometry)
        if path is None:
            self._save_state()
        return target

    def save_round_annotations(self, labels: np.ndarray, folder: Path) -> Path:
        """Write the annotations a round trains on into its folder, and copy them to the
        session's own file (written once, copied atomically)."""
        path = self.save_annotations(labels, Path(folder) / ROUND_LABELS_FILE)
        copy_file(path, self.annotations_path)
        self._save_state()
        return path

    # ------------------------------------------------------------------- rounds

    def rounds(self) -> list[Path]:
        """The round folders made so far, oldest first."""
        return sorted(p for p in self.folder.glob(f"{ROUND_PREFIX}*") if p.is_dir())

    def new_round(self) -> Path:
        """Create and return the next ``round-NNN`` folder."""
        tails = [p.name[len(ROUND_PREFIX) :] for p in self.rounds()]
        numbers = [int(tail) for tail in tails if tail.isdigit()]
        folder = self.folder / f"{ROUND_PREFIX}{max(numbers, default=0) + 1:03d}"
        folder.mkdir()
        return folder

    def set_background(self, indices: Iterable[int]) -> None:
        self.background_slices = {int(i) for i in indices}
        self._save_state()

    def remember_model(self, path: str | os.PathLike[str] | None) -> None:
        """Keep ``path`` as the model the next round warm-starts from (if the file exists)."""
        if path is not None and Path(path).is_file():
            self.last_model = Path(path)
            self._save_state()

    def export_model(self, target: str | os.PathLike[str]) -> Path:
        """Copy the last model to ``target`` (atomically)."""
        if self.last_model is None or not self.last_model.is_file():
            raise FileNotFoundError("no model has been trained or loaded in this session yet")
        return copy_file(self.last_model, target)

    # -------------------------------------------------------------------- state

    def _save_state(self) -> None:
        state = {
            "background_slices": sorted(self.background_slices),
            "last_model": None if self.last_model is None else str(self.last_model),
            "spacing": list(self.spacing),
        }
        write_text(self.folder / STATE_FILE, json.dumps(state, indent=2))

    def _load_state(self) -> None:
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return
        self.background_slices = {int(i) for i in state.get("background_slices", [])}
        model = state.get("last_model")
        self.last_model = Path(model) if model and Path(model).is_file() else None


def _read_annotations(path: Path) -> np.ndarray | None:
    try:
        return read_volume(path).array
    except VolumeError:
        return None
