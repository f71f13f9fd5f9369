"""The finishing of a prediction (training_backend.postprocess) on small hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest

from training_backend.annotations import SparseAnnotation
from training_backend.postprocess import (
    alike_classes,
    blend_with_prior,
    class_contrast,
    keep_annotated_components,
    split_by_prior,
)
from training_backend.prior import shape_prior

SHAPE = (8, 12, 12)


def annotation_with(slices: dict[int, np.ndarray], num_classes: int = 3) -> SparseAnnotation:
    """An annotation along axis 0 holding the given painted planes."""
    labels = np.zeros(SHAPE, np.uint8)
    for z, plane in slices.items():
        labels[z] = plane
    return SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=num_classes)


def square(value: int, rows: slice, cols: slice) -> np.ndarray:
    plane = np.zeros(SHAPE[1:], np.uint8)
    plane[rows, cols] = value
    return plane


def random_probabilities(num_classes: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.random((num_classes, *SHAPE)).astype(np.float32) + 0.05
    return raw / raw.sum(axis=0, keepdims=True)


# keep_annotated_components ---------------------------------------------------------------


@pytest.fixture()
def painted() -> SparseAnnotation:
    """Class 1 painted on slice 2 at rows/cols 3:6; class 2 is never painted."""
    return annotation_with({2: square(1, slice(3, 6), slice(3, 6))})


def test_a_blob_touching_an_annotated_voxel_is_kept_and_a_separate_one_removed(painted):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:5, 3:6, 3:6] = 1  # crosses the annotated slice where class 1 is painted
    labels[5:8, 8:11, 8:11] = 1  # same class, no annotated voxel of it
    out = keep_annotated_components(labels, painted)
    expected = labels.copy()
    expected[5:8, 8:11, 8:11] = 0
    np.testing.assert_array_equal(out, expected)


def test_a_blob_on_an_annotated_slice_where_the_class_was_not_painted_is_removed(painted):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:4, 3:6, 3:6] = 1
    labels[2, 8:11, 8:11] = 1  # on the annotated slice, but painted as background there
    out = keep_annotated_components(labels, painted)
    assert not out[2, 8:11, 8:11].any()
    np.testing.assert_array_equal(out[1:4, 3:6, 3:6], 1)


def test_a_class_absent_from_the_annotation_is_untouched(painted):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:5, 3:6, 3:6] = 1
    labels[0:2, 8:11, 0:3] = 2  # two separate class-2 blobs; class 2 never painted
    labels[6:8, 8:11, 8:11] = 2
    out = keep_annotated_components(labels, painted)
    np.testing.assert_array_equal(out, labels)


def test_a_single_component_is_untouched_even_off_the_annotation(painted):
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:8, 8:11, 8:11] = 1  # the only class-1 component, touching no painted voxel
    np.testing.assert_array_equal(keep_annotated_components(labels, painted), labels)


def test_components_are_6_connected_and_every_anchored_one_is_kept():
    annotation = annotation_with(
        {2: square(1, slice(0, 3), slice(0, 3)) + square(1, slice(8, 11), slice(8, 11))}
    )
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:4, 0:3, 0:3] = 1  # anchored
    labels[1:5, 8:11, 8:11] = 1  # anchored as well: not only the largest survives
    labels[4, 3, 3] = 1  # touches the first blob only at a corner: a component of its own
    out = keep_annotated_components(labels, annotation)
    assert out[0:4, 0:3, 0:3].all() and out[1:5, 8:11, 8:11].all()
    assert out[4, 3, 3] == 0


def test_keep_components_leaves_its_input_alone(painted):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:5, 3:6, 3:6] = 1
    labels[5:8, 8:11, 8:11] = 1
    before = labels.copy()
    out = keep_annotated_components(labels, painted)
    np.testing.assert_array_equal(labels, before)
    assert out is not labels and out.dtype == labels.dtype and out.shape == labels.shape


# blend_with_prior ------------------------------------------------------------------------


@pytest.fixture()
def two_slices() -> SparseAnnotation:
    """Class 1 on slices 1 and 6 (a growing square), class 2 beside it on slice 1."""
    first = square(1, slice(3, 6), slice(3, 6)) + square(2, slice(8, 11), slice(1, 4))
    return annotation_with({1: first, 6: square(1, slice(2, 8), slice(2, 8))})


def test_weight_zero_returns_the_probabilities_unchanged(two_slices):
    probabilities = random_probabilities()
    before = probabilities.copy()
    out = blend_with_prior(probabilities, two_slices, 0.0)
    np.testing.assert_array_equal(out, before)


def test_weight_one_gives_the_prior_and_the_annotation_on_annotated_slices(two_slices):
    probabilities = random_probabilities()
    spacing = (2.0, 1.0, 1.0)
    out = blend_with_prior(probabilities, two_slices, 1.0, spacing)
    prior = shape_prior(
        two_slices.labels, two_slices.annotated, 0, 3, extrapolate=True, spacing=spacing
    )
    np.testing.assert_allclose(out, prior.probabilities, atol=1e-6)
    for z in two_slices.annotated_indices:
        one_hot = np.arange(3)[:, None, None] == two_slices.labels[z][None]
        np.testing.assert_allclose(out[:, z], one_hot.astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.9])
def test_the_blend_is_a_distribution_between_the_two(two_slices, weight):
    probabilities = random_probabilities(seed=1)
    before = probabilities.copy()
    out = blend_with_prior(probabilities, two_slices, weight)
    assert out.shape == probabilities.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert out.min() >= 0.0
    prior = shape_prior(two_slices.labels, two_slices.annotated, 0, 3, extrapolate=True)
    expected = (1.0 - weight) * before + weight * prior.probabilities
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(probabilities, before)  # the input is left as it was


def test_without_an_annotated_slice_the_blend_changes_nothing():
    empty = SparseAnnotation(
        labels=np.zeros(SHAPE, np.int64), axis=0, annotated=np.zeros(SHAPE[0], bool), num_classes=3
    )
    probabilities = random_probabilities()
    before = probabilities.copy()
    np.testing.assert_array_equal(blend_with_prior(probabilities, empty, 0.5), before)


def test_the_blend_follows_the_annotation_axis():
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, 4, 2:9] = 1  # painted on plane 4 along axis 1
    annotation = SparseAnnotation.from_labels(labels, SHAPE, 1, num_classes=2)
    probabilities = random_probabilities(num_classes=2, seed=2)
    out = blend_with_prior(probabilities, annotation, 1.0)
    np.testing.assert_allclose(out[1, :, 4, :], labels[:, 4, :].astype(np.float32), atol=1e-6)


# split_by_prior --------------------------------------------------------------------------


def test_split_by_prior_keeps_the_background_and_moves_the_class_line():
    blended = np.array([[0.2, 0.9], [0.7, 0.05], [0.1, 0.05]], np.float32)  # (classes, voxels)
    prior_classes = np.array([[0.0, 0.0], [0.5, 0.0]], np.float32)  # class 2; none at voxel 1
    full = split_by_prior(blended, prior_classes, 1.0)
    assert full.dtype == np.float32
    np.testing.assert_allclose(full.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(full[0], blended[0])
    np.testing.assert_allclose(full[:, 0], [0.2, 0.0, 0.8], atol=1e-6)  # the prior's split
    np.testing.assert_allclose(full[:, 1], blended[:, 1], atol=1e-6)  # no prior foreground
    half = split_by_prior(blended, prior_classes, 0.5)
    np.testing.assert_allclose(
        half[1:, 0], 0.8 * (0.5 * np.array([0.875, 0.125]) + 0.5 * np.array([0.0, 1.0])), atol=1e-6
    )


def test_a_split_the_prior_speaks_for_some_classes_leaves_the_others_their_share():
    blended = np.array([[0.1], [0.3], [0.2], [0.4]], np.float32)  # 3 foreground classes
    prior_classes = np.array([[0.0], [0.9], [0.1]], np.float32)
    speaks_for = np.array([True, True, False])[:, None]  # classes 1 and 2 only
    out = split_by_prior(blended, prior_classes, 1.0, speaks_for)
    np.testing.assert_allclose(out[0], blended[0])
    np.testing.assert_allclose(out[3], blended[3], atol=1e-6)  # class 3 keeps its 0.4
    np.testing.assert_allclose(out[1:3, 0], [0.0, 0.5], atol=1e-6)  # 0.5 split 0 : 0.9


def test_voxels_to_keep_keep_their_own_split():
    probabilities = np.array([[0.1, 0.1], [0.85, 0.5], [0.05, 0.4]], np.float32)
    prior_classes = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)  # the prior: class 2
    out = split_by_prior(probabilities, prior_classes, 1.0, keep=np.array([True, False]))
    np.testing.assert_allclose(out[:, 0], probabilities[:, 0])  # kept
    np.testing.assert_allclose(out[:, 1], [0.1, 0.0, 0.9], atol=1e-6)  # split by the prior


def contrast_case(gap: float, lesion_voxels: int = 30):
    """Class 1 (intensity 0 +- 1) and class 2 (``gap`` +- 1) painted on slice 2 of an 8^3
    volume; class 3 never painted."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, :6] = 1
    labels[2].flat[72 : 72 + lesion_voxels] = 2
    image[labels == 2] += gap
    annotation = SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=4)
    return image, annotation


def test_class_contrast_measures_how_far_apart_two_classes_look():
    image, annotation = contrast_case(gap=3.0)
    contrast = class_contrast(image, annotation)
    assert contrast.shape == (3, 3)
    assert 2.0 < contrast[0, 1] == contrast[1, 0] < 4.0  # about 3 standard deviations
    assert np.isnan(contrast[0, 2]) and np.isnan(contrast[1, 2])  # class 3: no voxels
    alike, _ = contrast_case(gap=0.0)
    assert class_contrast(alike, annotation)[0, 1] < 0.5
    few = contrast_case(gap=0.0, lesion_voxels=10)
    assert np.isnan(class_contrast(*few)[0, 1])  # too few voxels to compare


def test_class_contrast_leaves_out_the_outlines_that_mix_two_classes():
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, :, :5] = 1
    labels[2, 1:11, 5:11] = 2  # 60 voxels, of which 32 inside the outline
    inside = np.zeros(SHAPE, bool)
    inside[2, 2:10, 6:10] = True
    image[inside] += 3.0  # only the inside differs: the outline looks like class 1
    annotation = SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=3)
    assert class_contrast(image, annotation)[0, 1] > 2.0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_class_contrast_is_the_same_along_any_slice_axis(axis):
    image, annotation = contrast_case(gap=3.0)
    expected = class_contrast(image, annotation)[0, 1]
    moved_image = np.moveaxis(image, 0, axis)
    moved = SparseAnnotation.from_labels(
        np.moveaxis(annotation.labels, 0, axis), moved_image.shape, axis, num_classes=4
    )
    assert class_contrast(moved_image, moved)[0, 1] == pytest.approx(expected)


def test_class_contrast_ignores_voxels_that_are_not_numbers():
    image, annotation = contrast_case(gap=3.0)
    expected = class_contrast(image, annotation)[0, 1]
    image[2, 0, 0] = np.nan  # a class-1 voxel
    image[2, 0, 1] = np.inf
    value = class_contrast(image, annotation)[0, 1]
    assert np.isfinite(value) and value == pytest.approx(expected, rel=0.1)


def test_alike_classes_groups_classes_linked_by_a_low_contrast():
    contrast = np.array([[0.0, 0.3, 2.0, np.nan], [0.3, 0.0, 0.9, 3.0],
                         [2.0, 0.9, 0.0, 4.0], [np.nan, 3.0, 4.0, 0.0]])  # fmt: skip
    assert alike_classes(contrast, 1.2) == [[1, 2, 3]]  # 1-2 and 2-3 alike: one group
    assert alike_classes(contrast, 0.5) == [[1, 2]]
    assert alike_classes(contrast, 0.1) == []


def test_the_blend_splits_only_within_the_groups_it_is_given(two_slices):
    probabilities = random_probabilities(seed=3)
    everywhere = blend_with_prior(probabilities.copy(), two_slices, 0.5, class_split=1.0)
    grouped = blend_with_prior(probabilities.copy(), two_slices, 0.5, None, True, 1.0, [[1, 2]])
    np.testing.assert_allclose(grouped, everywhere, atol=1e-6)  # both classes: the same
    plain = blend_with_prior(probabilities.copy(), two_slices, 0.5)
    apart = blend_with_prior(probabilities.copy(), two_slices, 0.5, None, True, 1.0, [])
    np.testing.assert_allclose(apart, plain, atol=1e-6)  # no class alike: no split


def test_the_blend_with_a_class_split_changes_only_how_the_foreground_divides(two_slices):
    probabilities = random_probabilities(seed=3)
    plain = blend_with_prior(probabilities.copy(), two_slices, 0.5)
    split = blend_with_prior(probabilities.copy(), two_slices, 0.5, class_split=1.0)
    np.testing.assert_allclose(split[0], plain[0], atol=1e-6)
    np.testing.assert_allclose(split.sum(0), 1.0, atol=1e-5)
    prior = shape_prior(two_slices.labels, two_slices.annotated, 0, 3, extrapolate=True)
    holds = prior.probabilities[1:].sum(0) > 0.5
    assert holds.any()
    on_prior = prior.probabilities[1:, holds].argmax(0)
    assert np.array_equal(split[1:, holds].argmax(0), on_prior)  # the prior's class wins there
    assert not np.array_equal(plain[1:, holds].argmax(0), on_prior)  # it did not before
