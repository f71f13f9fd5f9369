"""Segmentation metrics on whole volumes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[int, float]:
    """Dice of each foreground class 1..num_classes-1; a class absent from both scores 1."""
    scores = {}
    for k in range(1, num_classes):
        p, t = prediction == k, truth == k
        denominator = int(p.sum()) + int(t.sum())
        scores[k] = 1.0 if denominator == 0 else 2.0 * int((p & t).sum()) / denominator
    return scores


def mean_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean of :func:`dice_per_class` over the foreground classes."""
    scores = dice_per_class(prediction, truth, num_classes)
    return float(np.mean(list(scores.values())))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` removed by one binary erosion (6-connected structuring element)."""
    structure = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff95(
    prediction: np.ndarray, truth: np.ndarray, label: int, spacing: Sequence[float]
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between the surfaces of one label.

    ``prediction`` and ``truth`` are 3D integer arrays of the same shape and ``spacing`` is
    the voxel size in mm along each array axis (anisotropic allowed). The surface of a mask
    is the mask minus its binary erosion with the 6-connected structuring element (voxels
    on the array border count as surface). For every surface voxel of one mask the
    Euclidean distance to the nearest surface voxel of the other is taken; the result is
    the larger of the 95th percentiles (linear interpolation) of the two directed sets.

    Edge cases: the label absent from both arrays gives ``0.0``; absent from exactly one
    gives ``math.inf``, left to the caller to report (e.g. as missing or as a penalty).
    """
    if prediction.shape != truth.shape or prediction.ndim != 3:
        raise ValueError(
            f"need two 3D arrays of one shape, got {prediction.shape} and {truth.shape}"
        )
    sampling = tuple(float(s) for s in spacing)
    if len(sampling) != 3 or not all(math.isfinite(s) and s > 0 for s in sampling):
        raise ValueError(f"spacing must be three positive finite sizes, got {spacing!r}")
    a, b = prediction == label, truth == label
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return 0.0
    if not has_a or not has_b:
        return math.inf
    # Crop to the union bounding box plus one voxel: erosion only looks one voxel out, and
    # every surface voxel lies inside the box, so the distances are unchanged.
    nonzero = np.nonzero(a | b)
    box = tuple(
        slice(max(int(idx.min()) - 1, 0), min(int(idx.max()) + 2, size))
        for idx, size in zip(nonzero, a.shape, strict=True)
    )
    surface_a, surface_b = _surface(a[box]), _surface(b[box])
    a_to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)[surface_a]
    b_to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)[surface_b]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def hausdorff95_per_class(
    prediction: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float]
) -> list[float]:
    """:func:`hausdorff95` of each foreground class 1..num_classes-1, in class order."""
    return [hausdorff95(prediction, truth, k, spacing) for k in range(1, num_classes)]
