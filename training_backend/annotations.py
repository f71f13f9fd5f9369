"""Sparse annotations: a few painted slices along one axis of a 3D volume.

A slice along the slice axis that holds any non-zero label is *annotated* (its zero voxels are
background); a slice the user marked as background is annotated too. Every other slice is
*unlabeled* and is only used by the semi-supervised losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training_backend.errors import AnnotationError


def check_label_values(
    labels: Any, num_classes: int | None = None, source: str = "labels"
) -> np.ndarray:
    """Return ``labels`` as an int64 copy after checking its values are class indices.

    Accepted: integer arrays, bool (True is class 1) and float arrays holding only whole
    numbers. Rejected: NaN/inf, fractional values, negative values and, when ``num_classes``
    is given, values >= ``num_classes``.
    """
    arr = np.asarray(labels)
    if num_classes is not None:
        _check_num_classes(num_classes, source)
    if arr.dtype == np.bool_:
        out = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise AnnotationError(
                f"{source}: label value {int(arr.max())} is far too large for a class index; "
                "label values must be 0 (background), 1, 2, ..."
            )
        out = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        out = _float_labels(arr, source)
    else:
        raise AnnotationError(
            f"{source}: labels have data type {arr.dtype}; expected integer class indices "
            "(0 = background, 1, 2, ...). Save the labels as an integer volume."
        )
    if out.size == 0:
        return out
    lowest, highest = int(out.min()), int(out.max())
    if lowest < 0:
        count = int(np.count_nonzero(out < 0))
        raise AnnotationError(
            f"{source}: labels contain the negative value {lowest} ({count} voxels); label "
            "values must be 0 (background), 1, 2, ... Relabel or erase those voxels."
        )
    if num_classes is not None and highest >= num_classes:
        raise AnnotationError(
            f"{source}: labels contain class {highest} but the model has {num_classes} classes "
            f"(0..{num_classes - 1}). Relabel those voxels, or train a new model with more "
            "classes."
        )
    return out


def _check_num_classes(num_classes: Any, source: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise AnnotationError(f"{source}: num_classes must be an integer, got {num_classes!r}.")
    if num_classes < 2:
        raise AnnotationError(
            f"{source}: num_classes is {num_classes}; it counts background, so it must be >= 2."
        )


def _float_labels(arr: np.ndarray, source: str) -> np.ndarray:
    finite = np.isfinite(arr)
    if not np.all(finite):
        count = int(arr.size - np.count_nonzero(finite))
        raise AnnotationError(
            f"{source}: labels contain {count} NaN or infinite values; label values must be "
            "whole numbers 0 (background), 1, 2, ... Fix or erase those voxels."
        )
    fractional = arr != np.round(arr)
    if np.any(fractional):
        example = float(arr[fractional].flat[0])
        count = int(np.count_nonzero(fractional))
        raise AnnotationError(
            f"{source}: labels hold non-integer values such as {example:g} ({count} voxels, "
            f"data type {arr.dtype}); label values must be whole numbers 0 (background), 1, "
            "2, ... Did you load an image instead of a label volume?"
        )
    if arr.size and float(np.abs(arr).max()) > 2.0**62:
        raise AnnotationError(
            f"{source}: label value {float(np.abs(arr).max()):g} is far too large for a class "
            "index; label values must be 0 (background), 1, 2, ..."
        )
    return arr.astype(np.int64)


@dataclass(eq=False)
class SparseAnnotation:
    """Labels painted on some slices along ``axis``; ``annotated`` marks those slices."""

    labels: np.ndarray
    axis: int
    annotated: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.annotated = np.asarray(self.annotated, dtype=bool)
        _check_axis(self.axis, self.labels.ndim, "annotation")
        if self.annotated.shape != (self.labels.shape[self.axis],):
            raise AnnotationError(
                f"annotation: 'annotated' has shape {self.annotated.shape}; expected one flag "
                f"per slice, i.e. ({self.labels.shape[self.axis]},) along axis {self.axis}."
            )

    @classmethod
    def from_labels(
        cls,
        labels: Any,
        image_shape: Sequence[int],
        axis: int,
        background_slices: Iterable[int] = (),
        num_classes: int | None = None,
        source: str = "labels",
    ) -> SparseAnnotation:
        """Find the annotated slices of ``labels`` along ``axis`` and check the values.

        ``background_slices`` are slices the user marked as all background; they count as
        annotated. ``num_classes`` (background included) is the model's, when one exists;
        otherwise it is ``max(label) + 1`` and at least 2.
        """
        image_shape = tuple(int(n) for n in image_shape)
        if len(image_shape) != 3:
            raise AnnotationError(
                f"{source}: the image has shape {image_shape}; annotations need a 3D image."
            )
        _check_axis(axis, 3, source)
        labels_shape = tuple(np.shape(labels))
        if labels_shape != image_shape:
            raise AnnotationError(
                f"{source}: labels have shape {labels_shape} but the image has shape "
                f"{image_shape}. Load the labels that belong to this image (same size and "
                "orientation), or start a new labels layer."
            )
        values = check_label_values(labels, num_classes=num_classes, source=source)
        others = tuple(a for a in range(3) if a != axis)
        annotated = np.any(values != 0, axis=others)
        n_slices = image_shape[axis]
        for index in background_slices:
            if isinstance(index, bool) or not isinstance(index, int | np.integer):
                raise AnnotationError(
                    f"{source}: background slice {index!r} is not a slice number; use whole "
                    f"numbers 0..{n_slices - 1}."
                )
            if not 0 <= index < n_slices:
                raise AnnotationError(
                    f"{source}: background slice {int(index)} is out of range: the image has "
                    f"{n_slices} slices along axis {axis} (0..{n_slices - 1})."
                )
            annotated[int(index)] = True
        if not np.any(annotated):
            raise AnnotationError(
                f"{source}: no annotated slice: paint at least one slice or mark a slice as "
                f"background (slice axis {axis}, {n_slices} slices)."
            )
        highest = int(values.max())
        if num_classes is None:
            if highest == 0:
                raise AnnotationError(
                    f"{source}: annotations hold no foreground class: paint the structure on at "
                    "least one slice."
                )
            num_classes = max(highest + 1, 2)
        return cls(labels=values, axis=int(axis), annotated=annotated, num_classes=num_classes)

    @property
    def annotated_indices(self) -> list[int]:
        """Indices of the annotated slices along ``axis``, ascending."""
        return [int(i) for i in np.flatnonzero(self.annotated)]

    @property
    def unlabeled_indices(self) -> list[int]:
        """Indices of the slices with no annotation, ascending."""
        return [int(i) for i in np.flatnonzero(~self.annotated)]

    def classes_present(self) -> list[int]:
        """Sorted class values found in the annotated slices (0 when they hold background)."""
        if not np.any(self.annotated):
            return []
        painted = np.compress(self.annotated, self.labels, axis=self.axis)
        return [int(c) for c in np.unique(painted)]


def _check_axis(axis: Any, ndim: int, source: str) -> None:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or not 0 <= axis < ndim:
        raise AnnotationError(
            f"{source}: slice axis {axis!r} is invalid; it must be 0, 1 or 2 (the array axis "
            "the slices are taken along)."
        )
