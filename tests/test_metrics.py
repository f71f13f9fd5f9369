"""Tests of training_backend.metrics: hand-worked Hausdorff cases plus hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from training_backend.metrics import dice_per_class, hausdorff95, hausdorff95_per_class

ISO = (1.0, 1.0, 1.0)


def cube(shape: tuple[int, int, int], corner: tuple[int, int, int], side: int) -> np.ndarray:
    """An int64 volume with label 1 in the cube of ``side`` voxels starting at ``corner``."""
    volume = np.zeros(shape, dtype=np.int64)
    volume[tuple(slice(c, c + side) for c in corner)] = 1
    return volume


def test_identical_masks_give_zero() -> None:
    a = cube((10, 10, 10), (2, 3, 4), 4)
    assert hausdorff95(a, a.copy(), 1, (0.7, 1.3, 2.5)) == 0.0


def test_cube_shifted_along_anisotropic_axis() -> None:
    # A 3x3x3 cube at z = 2..4 (axis 2) and the same cube at z = 4..6, spacing 3 mm along z.
    # Erosion keeps only the centre voxel, so each surface is the other 26 voxels.
    # From A's surface to B's: the 9 voxels of A's layer z = 4 lie on B's face -> 0 mm;
    # the 8 of z = 3 are one step in z from that face -> 3 mm; the 9 of z = 2 are two
    # steps -> 6 mm (B has nothing nearer: all of B is at z >= 4). Sorted, the 26 values
    # are 9 x 0, 8 x 3, 9 x 6; the 95th percentile sits at rank 0.95 * 25 = 23.75, between
    # two 6s -> 6 mm. B to A is the mirror image, so HD95 = 6 mm.
    a = cube((9, 9, 11), (3, 3, 2), 3)
    b = cube((9, 9, 11), (3, 3, 4), 3)
    assert hausdorff95(a, b, 1, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    # The same 2-voxel shift along axis 0, where the spacing is 1 mm, gives 2 mm.
    c = cube((11, 9, 9), (2, 3, 3), 3)
    d = cube((11, 9, 9), (4, 3, 3), 3)
    assert hausdorff95(c, d, 1, (1.0, 1.0, 3.0)) == pytest.approx(2.0)


def test_uniform_spacing_scales_result() -> None:
    a = cube((12, 12, 12), (2, 2, 2), 5)
    b = cube((12, 12, 12), (3, 4, 2), 5)
    base = hausdorff95(a, b, 1, (0.8, 1.1, 2.0))
    assert base > 0
    assert hausdorff95(a, b, 1, (2.4, 3.3, 6.0)) == pytest.approx(3.0 * base)


def test_outliers_below_five_percent_are_ignored() -> None:
    # A one-voxel-thick 10x10 plate is all surface. B adds a single voxel 8 voxels away:
    # A -> B is all zeros; B -> A is 100 zeros and one 8, whose 95th percentile (rank 95
    # of 0..100) is 0. The plain Hausdorff distance would be 8.
    a = np.zeros((12, 12, 12), dtype=np.int64)
    a[1:11, 1:11, 1] = 1
    b = a.copy()
    b[5, 5, 9] = 1
    assert hausdorff95(a, b, 1, ISO) == 0.0


def test_one_empty_is_inf_and_both_empty_is_zero() -> None:
    a = cube((8, 8, 8), (1, 1, 1), 3)
    empty = np.zeros_like(a)
    assert hausdorff95(a, empty, 1, ISO) == math.inf
    assert hausdorff95(empty, a, 1, ISO) == math.inf
    assert hausdorff95(empty, empty, 1, ISO) == 0.0
    assert hausdorff95(a, a, 2, ISO) == 0.0


def test_symmetric_on_a_hand_case() -> None:
    a = cube((12, 12, 12), (1, 1, 1), 6)
    b = cube((12, 12, 12), (4, 2, 3), 3)
    spacing = (0.5, 1.0, 2.0)
    assert hausdorff95(a, b, 1, spacing) == hausdorff95(b, a, 1, spacing)


def test_object_touching_the_border() -> None:
    # The cropped box cannot extend past the array; border voxels still count as surface.
    a = np.zeros((4, 4, 4), dtype=np.int64)
    a[0:2] = 1  # two full layers: every voxel touches a border, all surface
    b = np.zeros_like(a)
    b[0:1] = 1
    # A -> B: 16 zeros, 16 ones (layer 1 is one step from layer 0); B -> A all zeros.
    # 95th percentile of 16 x 0, 16 x 1 is 1.
    assert hausdorff95(a, b, 1, ISO) == pytest.approx(1.0)


def test_per_class_uses_each_label() -> None:
    a = cube((10, 10, 10), (1, 1, 1), 3)
    b = a.copy()
    a[6:9, 6:9, 6:9] = 2
    b[6:9, 6:9, 7:10] = 2  # label 2 shifted by one voxel along axis 2
    assert hausdorff95_per_class(a, b, 4, (1.0, 1.0, 2.0)) == pytest.approx([0.0, 2.0, 0.0])


def test_invalid_inputs_raise() -> None:
    a = cube((6, 6, 6), (1, 1, 1), 2)
    with pytest.raises(ValueError, match="shape"):
        hausdorff95(a, a[:5], 1, ISO)
    with pytest.raises(ValueError, match="shape"):
        hausdorff95(a[0], a[0], 1, ISO)
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(a, a, 1, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(a, a, 1, (1.0, 0.0, 1.0))


def test_dice_absent_class_scores_one() -> None:
    a = cube((6, 6, 6), (1, 1, 1), 2)
    assert dice_per_class(a, a, 3) == {1: 1.0, 2: 1.0}


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Reference HD95 of two boolean masks: 6-neighbour surfaces and all pairwise distances."""

    def surface_points(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = tuple(slice(1, -1) for _ in range(3))
        interior = mask.copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[inner]
        return np.argwhere(mask & ~interior) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    distances = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return float(max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95)))


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    shape = draw(st.tuples(*(st.integers(1, 6) for _ in range(3))))
    a = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 2)))
    b = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 2)))
    spacing = draw(st.tuples(*(st.floats(0.25, 4.0) for _ in range(3))))
    return a, b, spacing


@settings(max_examples=80, deadline=None)
@given(mask_pairs())
def test_properties(case: tuple[np.ndarray, np.ndarray, tuple[float, ...]]) -> None:
    a, b, spacing = case
    value = hausdorff95(a, b, 1, spacing)
    assert value == hausdorff95(b, a, 1, spacing)
    assert hausdorff95(a, a, 1, spacing) == 0.0
    present_a, present_b = bool((a == 1).any()), bool((b == 1).any())
    if present_a != present_b:
        assert value == math.inf
        return
    # Within the array's diagonal in mm.
    diagonal = math.hypot(*((n - 1) * s for n, s in zip(a.shape, spacing, strict=True)))
    assert 0.0 <= value <= diagonal + 1e-9
    if present_a:
        expected = brute_force_hd95(a == 1, b == 1, spacing)
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Zero padding must not change the result: checks the bounding-box crop.
    padding = ((2, 1), (0, 3), (1, 1))
    padded = hausdorff95(np.pad(a, padding), np.pad(b, padding), 1, spacing)
    assert padded == pytest.approx(value, rel=1e-12, abs=1e-12)
