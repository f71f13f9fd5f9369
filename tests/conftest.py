"""Shared fixtures: a tiny phantom, small NIfTI files, and the shared hippocampus data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from training_backend.annotations import SparseAnnotation
from training_backend.config import CriiConfig
from training_backend.phantom import make_phantom
from training_backend.simulate import sparse_labels, spread_slices
from training_backend.trainer import TrainingJob, TrainingVolume

HIPPOCAMPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hippocampus"


TINY_SETTINGS = {
    "model.base_width": 8,
    "model.refine_width": 8,
    "model.levels": 3,
    "loss.patch_size": 8,
    "train.batch_size": 2,
    "train.crop_size": 32,
    "train.log_every": 1,
    "train.preview_seconds": 0.05,
}
"""A small, fast network and loop as ``--set`` settings, for tests that run the command."""


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    """The shared real MRI data; tests that need it skip where it is absent."""
    if not (HIPPOCAMPUS / "split.json").is_file():
        pytest.skip(f"real data not found at ../shared/data/hippocampus ({HIPPOCAMPUS})")
    return HIPPOCAMPUS


@pytest.fixture(scope="session")
def tiny_phantom():
    """A small phantom (Z, Y, X) = (20, 32, 32) with 3 annotated slices along axis 0."""
    phantom = make_phantom((20, 32, 32), seed=1)
    slices = spread_slices(phantom.truth, 0, 3)
    labels = sparse_labels(phantom.truth, 0, slices)
    return phantom, labels, slices


def tiny_config(**train: object) -> CriiConfig:
    """A small, fast configuration for tests (iteration budget, no previews)."""
    config = CriiConfig()
    config.model.num_classes = 3
    config.model.base_width = 8
    config.model.refine_width = 8
    config.model.levels = 3
    config.loss.patch_size = 8
    config.train.seconds = None
    config.train.iterations = 20
    config.train.batch_size = 4
    config.train.crop_size = 32
    config.train.device = "cpu"
    config.train.preview_seconds = 0.0
    config.train.checkpoint_every = 10_000
    config.train.log_every = 5
    for key, value in train.items():
        setattr(config.train, key, value)
    return config.validate()


def tiny_job(tiny_phantom, run_dir: Path, **train: object) -> TrainingJob:
    phantom, labels, _ = tiny_phantom
    annotation = SparseAnnotation.from_labels(labels, phantom.image.shape, 0, num_classes=3)
    return TrainingJob(
        config=tiny_config(**train),
        volumes=[TrainingVolume(phantom.image, annotation, phantom.spacing, "tiny")],
        run_dir=run_dir,
    )


def oblique_affine() -> np.ndarray:
    """Rotated about two axes, anisotropic voxels, origin far from zero; axial is axis 2."""
    a, b = np.deg2rad(20.0), np.deg2rad(-12.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag([0.7, 1.3, 2.9])
    affine[:3, 3] = [-90.5, 12.25, 40.0]
    return affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path
