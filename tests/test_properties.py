"""Property-based tests: volumes of random shapes, dtypes and affines survive the writer and the
reader, and display order <-> stored order keeps every voxel on its world position."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_crii import _geometry
from training_backend.io import Geometry, read_volume, write_volume

SETTINGS = settings(max_examples=30, deadline=None)
DTYPES = st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64])
SHAPES = st.tuples(*(st.integers(1, 6) for _ in range(3)))


@st.composite
def affines(draw: st.DrawFn) -> np.ndarray:
    """A permutation with flips, anisotropic voxels, an origin and maybe a rotation."""
    permutation = draw(st.permutations([0, 1, 2]))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    zooms = draw(st.lists(st.floats(0.25, 5.0), min_size=3, max_size=3))
    linear = np.zeros((3, 3))
    for column, row in enumerate(permutation):
        linear[row, column] = signs[column] * zooms[column]
    angle = draw(st.sampled_from([0.0, 0.0, 0.3, -0.7]))
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ linear
    affine[:3, 3] = draw(st.lists(st.floats(-200, 200), min_size=3, max_size=3))
    return affine


def _values(dtype: type) -> st.SearchStrategy:
    if np.dtype(dtype).kind == "f":
        return st.floats(-1e4, 1e4, width=32)
    info = np.iinfo(dtype)
    return st.integers(max(info.min, -(2**20)), min(info.max, 2**20))


@st.composite
def volumes(draw: st.DrawFn, shapes: st.SearchStrategy = SHAPES) -> np.ndarray:
    dtype = draw(DTYPES)
    return draw(arrays(dtype, draw(shapes), elements=_values(dtype)))


def _zooms(affine: np.ndarray) -> tuple[float, float, float]:
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


@SETTINGS
@given(data=volumes(), affine=affines(), suffix=st.sampled_from([".nii", ".nii.gz"]))
def test_nifti_write_then_read_keeps_values_shape_and_affine(data, affine, suffix):
    geometry = Geometry(affine, _zooms(affine), "nifti")
    with tempfile.TemporaryDirectory() as folder:
        path = write_volume(Path(folder) / f"v{suffix}", data, geometry)
        back = read_volume(path)
        assert [p.name for p in Path(folder).iterdir()] == [path.name]  # no temporary left
    assert back.array.shape == data.shape
    np.testing.assert_array_equal(back.array, data.astype(back.array.dtype))
    np.testing.assert_allclose(back.array, data, rtol=1e-6 if data.dtype.kind == "f" else 0)
    np.testing.assert_allclose(back.geometry.affine, affine, rtol=0, atol=1e-4)


@SETTINGS
@given(data=volumes(), zooms=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3))
@example(data=np.arange(2, dtype=np.uint8).reshape(1, 2, 1), zooms=[1.0, 2.0, 3.0])
@example(data=np.arange(2, dtype=np.float32).reshape(2, 1, 1), zooms=[1.0, 2.0, 3.0])
def test_tiff_write_then_read_keeps_values_shape_and_spacing(data, zooms):
    geometry = Geometry(np.diag([*zooms, 1.0]), tuple(zooms), "tiff")
    with tempfile.TemporaryDirectory() as folder:
        back = read_volume(write_volume(Path(folder) / "v.tif", data, geometry))
    assert back.array.shape == data.shape
    np.testing.assert_allclose(back.array, data, rtol=1e-6 if data.dtype.kind == "f" else 0)
    np.testing.assert_allclose(back.geometry.zooms, zooms, rtol=1e-5)


@SETTINGS
@given(shape=SHAPES, affine=affines(), seed=st.integers(0, 2**16))
def test_display_order_keeps_every_voxel_on_its_world_position(shape, affine, seed):
    geometry = Geometry(affine, _zooms(affine), "nifti")
    meta = _geometry.metadata_for(geometry)
    source = np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)
    shown = _geometry.to_display(source, meta)
    np.testing.assert_array_equal(_geometry.to_source(shown, meta), source)
    assert shown.shape == _geometry.display_shape(shape, meta)
    axes = _geometry.display_axes(meta)
    # A voxel at display index d sits at source index s[axes[k]] = d[k], hence at this world point.
    for d in np.argwhere(shown > 0)[:20]:
        s = np.empty(3, int)
        s[axes] = d
        assert shown[tuple(d)] == source[tuple(s)]
    scale = np.array(_geometry.display_scale(meta))
    np.testing.assert_allclose(scale, np.array(geometry.zooms)[axes])
    # Display axis 0 is the one closest to superior-inferior.
    codes = nib.aff2axcodes(affine)
    assert codes[axes[0]] in ("S", "I")
