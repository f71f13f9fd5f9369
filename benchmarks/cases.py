"""The hippocampus data set beside the repository: its split, its cases, simulated annotation.

Cases are read from ``../shared/data/hippocampus`` (``images/``, ``labels/``, ``split.json``;
real MRI, 2 foreground classes, CC-BY-SA 4.0). Nothing is copied into the repository.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from training_backend.annotations import SparseAnnotation
from training_backend.io import read_volume
from training_backend.simulate import sparse_labels

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CRII_HIPPOCAMPUS", ROOT.parent / "shared" / "data" / "hippocampus"))
"""The data folder; the environment variable ``CRII_HIPPOCAMPUS`` names another place."""
NUM_CLASSES = 3
CLASS_NAMES = {1: "anterior", 2: "posterior"}
AXIAL = 2
"""The slice axis the person paints along (the last array axis of these files)."""


@dataclass(frozen=True)
class Case:
    """One labeled volume: image, ground truth and voxel size in mm."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]


def data_available() -> bool:
    return (DATA / "split.json").is_file()


def split_names(split: str) -> list[str]:
    """Case names of ``train`` or ``test``, in the order of split.json."""
    names = json.loads((DATA / "split.json").read_text())[split]
    return [str(n) for n in names]


@cache
def load_case(name: str) -> Case:
    image = read_volume(DATA / "images" / f"{name}.nii.gz")
    truth = read_volume(DATA / "labels" / f"{name}.nii.gz")
    return Case(
        name=name,
        image=image.array,
        truth=truth.array.astype(np.int64),
        spacing=tuple(float(z) for z in image.geometry.zooms),
    )


def painted(case: Case, slices: list[int]) -> tuple[np.ndarray, SparseAnnotation]:
    """What a person would have painted: the truth on ``slices`` (each of them counts as
    annotated, an all-background one included), zero elsewhere."""
    labels = sparse_labels(case.truth, AXIAL, slices)
    annotation = SparseAnnotation.from_labels(
        labels, case.truth.shape, AXIAL, background_slices=slices, num_classes=NUM_CLASSES
    )
    return labels, annotation


def fully_labeled(case: Case) -> SparseAnnotation:
    """Every slice annotated: the dataset protocol's labeled cases."""
    every = range(case.truth.shape[AXIAL])
    return SparseAnnotation.from_labels(
        case.truth, case.truth.shape, AXIAL, background_slices=every, num_classes=NUM_CLASSES
    )
