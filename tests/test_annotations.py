"""Tests of training_backend.annotations: annotated-slice discovery and label checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from training_backend.annotations import SparseAnnotation, check_label_values
from training_backend.errors import AnnotationError

SHAPE = (4, 5, 6)


def painted(axis: int, slices: dict[int, int]) -> np.ndarray:
    """Labels with class ``value`` painted in one corner of each ``slice`` along ``axis``."""
    labels = np.zeros(SHAPE, dtype=np.int64)
    for index, value in slices.items():
        view = np.moveaxis(labels, axis, 0)
        view[index, :2, :2] = value
    return labels


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_annotated_slices_found_on_each_axis(axis: int) -> None:
    labels = painted(axis, {1: 1, 3: 2})
    ann = SparseAnnotation.from_labels(labels, SHAPE, axis)
    assert ann.axis == axis
    assert ann.annotated.shape == (SHAPE[axis],)
    assert ann.annotated_indices == [1, 3]
    assert ann.unlabeled_indices == [i for i in range(SHAPE[axis]) if i not in (1, 3)]
    assert ann.num_classes == 3
    assert ann.labels.dtype == np.int64
    np.testing.assert_array_equal(ann.labels, labels)


def test_background_slices_are_annotated() -> None:
    labels = painted(2, {4: 1})
    ann = SparseAnnotation.from_labels(labels, SHAPE, 2, background_slices=[0, 4, 5])
    assert ann.annotated_indices == [0, 4, 5]
    assert ann.unlabeled_indices == [1, 2, 3]
    assert ann.num_classes == 2


def test_background_slices_alone_need_a_model() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    ann = SparseAnnotation.from_labels(labels, SHAPE, 0, background_slices=[2], num_classes=3)
    assert ann.annotated_indices == [2]
    assert ann.num_classes == 3
    assert ann.classes_present() == [0]
    with pytest.raises(AnnotationError, match="no foreground class"):
        SparseAnnotation.from_labels(labels, SHAPE, 0, background_slices=[2])


@pytest.mark.parametrize("index", [4, -1])
def test_background_slice_out_of_range(index: int) -> None:
    with pytest.raises(AnnotationError, match=rf"background slice {index}.*4 slices.*0\.\.3"):
        SparseAnnotation.from_labels(painted(0, {0: 1}), SHAPE, 0, background_slices=[index])


def test_given_num_classes_is_kept() -> None:
    ann = SparseAnnotation.from_labels(painted(1, {2: 1}), SHAPE, 1, num_classes=4)
    assert ann.num_classes == 4
    assert ann.classes_present() == [0, 1]


def test_classes_present() -> None:
    labels = painted(0, {0: 2, 2: 5})
    ann = SparseAnnotation.from_labels(labels, SHAPE, 0)
    assert ann.classes_present() == [0, 2, 5]
    assert ann.num_classes == 6
    full = np.ones(SHAPE, dtype=np.int64)
    assert SparseAnnotation.from_labels(full, SHAPE, 2).classes_present() == [1]


def test_single_foreground_class_is_fine() -> None:
    ann = SparseAnnotation.from_labels(painted(2, {0: 1}), SHAPE, 2)
    assert ann.num_classes == 2
    assert ann.classes_present() == [0, 1]


def test_float_labels_with_whole_values_are_accepted() -> None:
    labels = painted(1, {0: 1, 4: 2}).astype(np.float32)
    ann = SparseAnnotation.from_labels(labels, SHAPE, 1)
    assert ann.labels.dtype == np.int64
    assert ann.annotated_indices == [0, 4]
    assert ann.num_classes == 3


def test_bool_labels_are_class_one() -> None:
    labels = painted(0, {3: 1}).astype(bool)
    ann = SparseAnnotation.from_labels(labels, SHAPE, 0)
    assert ann.labels.dtype == np.int64
    assert ann.labels.max() == 1
    assert ann.num_classes == 2
    assert ann.annotated_indices == [3]


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(AnnotationError) as info:
        SparseAnnotation.from_labels(np.zeros((4, 5, 7)), SHAPE, 0, source="case_001_labels")
    message = str(info.value)
    assert "case_001_labels" in message
    assert "(4, 5, 7)" in message
    assert "(4, 5, 6)" in message


def test_fractional_labels_are_rejected() -> None:
    labels = painted(0, {1: 1}).astype(np.float64)
    labels[0, 0, 0] = 0.5
    with pytest.raises(AnnotationError, match=r"scan\.nii\.gz.*non-integer.*0\.5"):
        SparseAnnotation.from_labels(labels, SHAPE, 0, source="scan.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_labels_are_rejected(bad: float) -> None:
    labels = painted(0, {1: 1}).astype(np.float32)
    labels[2, 2, 2] = bad
    with pytest.raises(AnnotationError, match="NaN or infinite"):
        SparseAnnotation.from_labels(labels, SHAPE, 0)


def test_negative_labels_are_rejected() -> None:
    labels = painted(0, {1: 1})
    labels[0, 0, 0] = -3
    with pytest.raises(AnnotationError, match=r"mylabels.*negative value -3"):
        SparseAnnotation.from_labels(labels, SHAPE, 0, source="mylabels")


def test_labels_beyond_model_classes_are_rejected() -> None:
    labels = painted(2, {0: 1, 1: 5})
    with pytest.raises(AnnotationError) as info:
        SparseAnnotation.from_labels(labels, SHAPE, 2, num_classes=3)
    assert "labels contain class 5 but the model has 3 classes (0..2)" in str(info.value)


@pytest.mark.parametrize("axis", [3, -1, 1.0, True])
def test_bad_axis_is_rejected(axis: object) -> None:
    with pytest.raises(AnnotationError, match="slice axis"):
        SparseAnnotation.from_labels(painted(0, {0: 1}), SHAPE, axis)  # type: ignore[arg-type]


def test_no_annotated_slice_is_rejected() -> None:
    with pytest.raises(AnnotationError, match="no annotated slice: paint at least one slice"):
        SparseAnnotation.from_labels(np.zeros(SHAPE), SHAPE, 1, num_classes=2)


def test_all_background_without_model_is_rejected() -> None:
    with pytest.raises(AnnotationError, match="no annotated slice"):
        SparseAnnotation.from_labels(np.zeros(SHAPE), SHAPE, 1)


@pytest.mark.parametrize("num_classes", [1, 0])
def test_num_classes_below_two_is_rejected(num_classes: int) -> None:
    with pytest.raises(AnnotationError, match=">= 2"):
        SparseAnnotation.from_labels(painted(0, {0: 1}), SHAPE, 0, num_classes=num_classes)


def test_non_numeric_labels_are_rejected() -> None:
    with pytest.raises(AnnotationError, match="integer class indices"):
        check_label_values(np.array([["a", "b"]]))


def test_check_label_values_returns_an_int64_copy() -> None:
    source = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    out = check_label_values(source, num_classes=3)
    assert out.dtype == np.int64
    out[0, 0] = 2
    assert source[0, 0] == 0
    np.testing.assert_array_equal(check_label_values(np.array([0.0, 2.0])), [0, 2])


def test_direct_construction_checks_consistency() -> None:
    with pytest.raises(AnnotationError, match="one flag per slice"):
        SparseAnnotation(np.zeros(SHAPE, np.int64), 0, np.zeros(3, bool), 2)


@st.composite
def annotation_cases(draw: st.DrawFn) -> tuple[np.ndarray, int, list[int]]:
    shape = draw(st.tuples(*(st.integers(1, 5) for _ in range(3))))
    labels = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 3)))
    axis = draw(st.integers(0, 2))
    background = draw(st.lists(st.integers(0, shape[axis] - 1), max_size=3))
    return labels, axis, background


@settings(max_examples=200, deadline=None)
@given(annotation_cases())
def test_annotated_is_painted_slices_plus_background(
    case: tuple[np.ndarray, int, list[int]],
) -> None:
    labels, axis, background = case
    n = labels.shape[axis]
    expected = [i for i in range(n) if np.any(np.take(labels, i, axis=axis)) or i in background]
    if not expected:
        with pytest.raises(AnnotationError, match="no annotated slice"):
            SparseAnnotation.from_labels(labels, labels.shape, axis, background, num_classes=4)
        return
    ann = SparseAnnotation.from_labels(labels, labels.shape, axis, background, num_classes=4)
    assert ann.annotated_indices == expected
    assert ann.unlabeled_indices == [i for i in range(n) if i not in expected]
    assert sorted(ann.annotated_indices + ann.unlabeled_indices) == list(range(n))
    np.testing.assert_array_equal(ann.labels, labels)
    assert set(ann.classes_present()) <= set(np.unique(labels).tolist())
