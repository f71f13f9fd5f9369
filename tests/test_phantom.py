"""The synthetic sample volume and the simulated sparse annotation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from training_backend.errors import AnnotationError
from training_backend.phantom import make_phantom
from training_backend.simulate import slices_for_fraction, sparse_labels, spread_slices


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def test_phantom_shapes_types_and_geometry(phantom) -> None:
    assert phantom.image.shape == phantom.truth.shape == (48, 96, 96)
    assert phantom.image.dtype == np.float32 and phantom.truth.dtype == np.uint8
    assert np.isfinite(phantom.image).all() and phantom.image.min() >= 0
    assert 300 < phantom.image.max() < 5000
    assert len(phantom.spacing) == 3 and phantom.spacing[0] > phantom.spacing[1]
    assert phantom.affine.shape == (4, 4)
    np.testing.assert_allclose(np.diag(phantom.affine)[:3], phantom.spacing)
    assert np.any(phantom.affine[:3, 3] != 0)


def test_phantom_holds_background_organ_and_lesion(phantom) -> None:
    assert set(np.unique(phantom.truth)) == {0, 1, 2}
    counts = np.bincount(phantom.truth.ravel(), minlength=3)
    assert counts[1] > counts[2] > 500


def test_organ_spans_the_middle_of_the_slices(phantom) -> None:
    occupied = np.flatnonzero(phantom.truth.any(axis=(1, 2)))
    assert 0.55 <= occupied.size / phantom.truth.shape[0] <= 0.75
    assert occupied[0] > 0 and occupied[-1] < phantom.truth.shape[0] - 1
    assert np.all(np.diff(occupied) == 1)
    centres = [ndimage.center_of_mass(phantom.truth[z] > 0) for z in occupied]
    assert np.ptp([c[1] for c in centres]) > 3, "the organ should bend along z"


def test_organ_cross_section_is_not_convex(phantom) -> None:
    z = int(np.argmax(np.count_nonzero(phantom.truth, axis=(1, 2))))
    mask = phantom.truth[z] > 0
    rows = [np.flatnonzero(row) for row in mask if row.any()]
    gaps = sum(int(r[-1] - r[0] + 1 - r.size) for r in rows)
    cols = [np.flatnonzero(col) for col in mask.T if col.any()]
    gaps += sum(int(c[-1] - c[0] + 1 - c.size) for c in cols)
    assert gaps > 0, "some row or column should cross the organ twice"


def test_lesion_lies_inside_the_organ(phantom) -> None:
    lesion = phantom.truth == 2
    assert (phantom.truth[ndimage.binary_dilation(lesion, iterations=2)] > 0).all()


def test_lesion_contrast_is_low_but_present(phantom) -> None:
    organ = phantom.image[phantom.truth == 1].mean()
    lesion = phantom.image[phantom.truth == 2].mean()
    background = phantom.image[phantom.truth == 0].mean()
    assert 0.03 * organ < abs(organ - lesion) < 0.2 * organ
    assert organ - background > 2 * abs(organ - lesion)


def test_phantom_is_deterministic_per_seed_and_varies_between_seeds() -> None:
    a, b, c = make_phantom(seed=4), make_phantom(seed=4), make_phantom(seed=5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)


def test_phantom_is_fast_and_takes_other_shapes() -> None:
    start = time.perf_counter()
    make_phantom()
    assert time.perf_counter() - start < 1.0
    small = make_phantom((20, 40, 36), seed=1)
    assert small.image.shape == (20, 40, 36) and set(np.unique(small.truth)) == {0, 1, 2}
    with pytest.raises(ValueError, match="shape"):
        make_phantom((4, 40, 40))


def test_spread_slices_stay_in_the_extent_and_respect_the_count(phantom) -> None:
    occupied = np.flatnonzero(phantom.truth.any(axis=(1, 2)))
    for count in (1, 3, 5, 10):
        slices = spread_slices(phantom.truth, 0, count)
        assert len(slices) == count and slices == sorted(set(slices))
        assert all(occupied[0] <= s <= occupied[-1] for s in slices)
        assert all(isinstance(s, int) for s in slices)
    three = spread_slices(phantom.truth, 0, 3)
    low, high = int(occupied[0]), int(occupied[-1])
    assert abs(three[1] - (low + high) / 2) <= 0.5
    assert abs((three[0] - low) - (high - three[2])) <= 1


def test_spread_slices_along_other_axes_and_dedup() -> None:
    truth = np.zeros((10, 12, 14), np.uint8)
    truth[2:8, 5:7, 3:12] = 1
    assert spread_slices(truth, 1, 2) == [5, 6]
    assert spread_slices(truth, 1, 9) == [5, 6]
    assert all(3 <= s <= 11 for s in spread_slices(truth, 2, 4))
    with pytest.raises(AnnotationError, match="no foreground"):
        spread_slices(np.zeros_like(truth), 0, 2)
    with pytest.raises(AnnotationError, match="count"):
        spread_slices(truth, 0, 0)


def test_sparse_labels_keep_only_the_chosen_slices(phantom) -> None:
    slices = spread_slices(phantom.truth, 2, 4)
    sparse = sparse_labels(phantom.truth, 2, slices)
    assert sparse.dtype == phantom.truth.dtype and sparse.shape == phantom.truth.shape
    painted = np.flatnonzero(sparse.any(axis=(0, 1)))
    assert set(painted) <= set(slices) and painted.size > 0
    np.testing.assert_array_equal(sparse[:, :, slices], phantom.truth[:, :, slices])
    with pytest.raises(AnnotationError, match="outside"):
        sparse_labels(phantom.truth, 2, [96])


def test_slices_for_fraction_follows_the_fraction(phantom) -> None:
    assert len(slices_for_fraction(phantom.truth, 0)) == 2  # 4% of 48 is 2
    assert len(slices_for_fraction(phantom.truth, 1, fraction=0.1, minimum=1)) == 10
    assert len(slices_for_fraction(phantom.truth, 0, fraction=0.01, minimum=3)) == 3
    with pytest.raises(AnnotationError, match="fraction"):
        slices_for_fraction(phantom.truth, 0, fraction=0.0)
