"""Model files: weights, optimiser state, config and format version; safe to load.

Loading uses ``torch.load(weights_only=True)``: a crafted file cannot run code. Files are
written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training_backend.atomic import atomic_path
from training_backend.config import CriiConfig
from training_backend.errors import CheckpointError, ConfigError

FORMAT_NAME = "napari-crii"
FORMAT_VERSION = 4
"""2 may hold ``loss.teacher=same-pass`` and ``loss.prior_extrapolate``, and always holds the
``predict`` section (late version-1 files hold it too). 3 always holds ``loss.prior_align``.
4 always holds ``predict.prior_class_max_contrast``. An older reader refuses what it does not
know with a vaguer message than the version check gives."""
READABLE_VERSIONS = (1, 2, 3, 4)
"""Older files load with the defaults of what they lack, except where they were made
otherwise (:data:`SETTINGS_OF_OLDER_FILES`)."""
SETTINGS_OF_OLDER_FILES = {
    "loss": {"prior_align": False},
    "predict": {"prior_class_split": 0.0, "prior_class_max_contrast": None},
}
"""What a file that lacks these settings was made with, where that differs from today's
default: the unaligned prior; no class split, and where one was chosen, between all classes
(the contrast limit came later)."""


@dataclass
class CheckpointData:
    """What a checkpoint holds, as plain tensors and builtins."""

    config: CriiConfig
    model_state: dict[str, torch.Tensor]
    iteration: int = 0
    optimizer_state: dict[str, Any] | None = None
    teacher_state: dict[str, torch.Tensor] | None = None
    axis: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes


def save_checkpoint(path: str | os.PathLike, data: CheckpointData) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": data.config.to_dict(),
        "num_classes": data.num_classes,
        "iteration": data.iteration,
        "axis": data.axis,
        "model_state": _to_cpu(data.model_state),
        "optimizer_state": data.optimizer_state,
        "teacher_state": None if data.teacher_state is None else _to_cpu(data.teacher_state),
        "extra": data.extra,
    }
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        torch.save(payload, stream)
    return path


def load_checkpoint(
    path: str | os.PathLike, num_classes: int | None = None, map_location: str = "cpu"
) -> CheckpointData:
    """Read a checkpoint; raise CheckpointError for a file that is not ours or does not fit."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a napari-crii model file, or a damaged one "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a napari-crii model file (no '{FORMAT_NAME}' tag)")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: model file format version {version!r}; this napari-crii reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Retrain, or use the napari-crii release "
            "that wrote it."
        )
    try:
        config = CriiConfig.from_dict(_with_settings_of_older_files(payload["config"]))
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the stored configuration is invalid: {exc}") from exc
    stored_classes = payload.get("num_classes")
    if num_classes is not None and stored_classes != num_classes:
        raise CheckpointError(
            f"{path}: the model segments {stored_classes} classes (background included) but "
            f"the data has {num_classes}. Train a new model for these labels."
        )
    return CheckpointData(
        config=config,
        model_state=payload["model_state"],
        iteration=int(payload.get("iteration", 0)),
        optimizer_state=payload.get("optimizer_state"),
        teacher_state=payload.get("teacher_state"),
        axis=payload.get("axis"),
        extra=payload.get("extra") or {},
    )


def _to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in state.items()}


def _with_settings_of_older_files(stored: Any) -> Any:
    """``stored`` (a config dict) with :data:`SETTINGS_OF_OLDER_FILES` where it lacks them."""
    if not isinstance(stored, dict):
        return stored  # from_dict reports what is wrong with it
    completed = dict(stored)
    for section, values in SETTINGS_OF_OLDER_FILES.items():
        stored_section = completed.get(section, {})  # a version-1 file may lack a section
        if isinstance(stored_section, dict):
            completed[section] = {**values, **stored_section}
    return completed
