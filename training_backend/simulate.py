"""Simulated sparse annotation: the slices a person would paint, taken from a ground truth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training_backend.errors import AnnotationError


def spread_slices(truth: np.ndarray, axis: int, count: int) -> list[int]:
    """``count`` slice indices spread evenly over the foreground's extent along ``axis``.

    For an extent ``[a, b]`` slice ``i`` sits at ``a + (b - a) * (i + 0.5) / count`` rounded
    half up; duplicates (``count`` above the extent) are dropped, so fewer may come back.
    """
    truth = _volume(truth, axis)
    if count < 1:
        raise AnnotationError(f"count must be at least 1 slice, got {count}.")
    others = tuple(i for i in range(truth.ndim) if i != axis % truth.ndim)
    occupied = np.flatnonzero(np.any(truth != 0, axis=others))
    if occupied.size == 0:
        raise AnnotationError("The ground truth holds no foreground: nothing to annotate.")
    low, high = int(occupied[0]), int(occupied[-1])
    positions = {math.floor(low + (high - low) * (i + 0.5) / count + 0.5) for i in range(count)}
    return sorted(positions)


def sparse_labels(truth: np.ndarray, axis: int, slices: Sequence[int]) -> np.ndarray:
    """A volume equal to ``truth`` on the given slices along ``axis`` and 0 elsewhere."""
    truth = _volume(truth, axis)
    size = truth.shape[axis]
    chosen = [int(s) for s in slices]
    wrong = [s for s in chosen if not 0 <= s < size]
    if wrong:
        raise AnnotationError(f"Slices {wrong} are outside 0..{size - 1} along axis {axis}.")
    sparse = np.zeros_like(truth)
    index = [slice(None)] * truth.ndim
    index[axis] = chosen
    sparse[tuple(index)] = truth[tuple(index)]
    return sparse


def slices_for_fraction(
    truth: np.ndarray, axis: int, fraction: float = 0.04, minimum: int = 2
) -> list[int]:
    """About ``fraction`` of all slices along ``axis`` (at least ``minimum``), spread evenly."""
    truth = _volume(truth, axis)
    if not 0 < fraction <= 1:
        raise AnnotationError(f"fraction must be in (0, 1], got {fraction}.")
    if minimum < 1:
        raise AnnotationError(f"minimum must be at least 1 slice, got {minimum}.")
    count = max(minimum, math.floor(fraction * truth.shape[axis] + 0.5))
    return spread_slices(truth, axis, count)


def _volume(truth: np.ndarray, axis: int) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.ndim < 2:
        raise AnnotationError(f"truth must be a 2D or 3D label array, got shape {truth.shape}.")
    if not -truth.ndim <= axis < truth.ndim:
        raise AnnotationError(f"axis {axis} does not exist in a {truth.ndim}D volume.")
    return truth
