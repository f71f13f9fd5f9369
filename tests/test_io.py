"""Tests of training_backend.io: reading and writing volumes with their geometry."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from conftest import HIPPOCAMPUS, oblique_affine

from training_backend import io as vio
from training_backend.annotations import SparseAnnotation
from training_backend.errors import VolumeError
from training_backend.io import (
    Geometry,
    default_slice_axis,
    format_for,
    read_volume,
    write_volume,
)


def save_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    sform_code: int = 2,
    qform_code: int = 1,
    descrip: bytes = b"crii test volume",
    slope: float | None = None,
) -> None:
    img = nib.Nifti1Image(data, None)  # no affine: nibabel keeps the codes set below
    hdr = img.header
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)
    hdr["descrip"] = descrip
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_dim_info(freq=0, phase=1, slice=2)
    if slope is not None:
        hdr.set_slope_inter(slope, 0.0)
    nib.save(img, path)


def image_data(shape: tuple[int, int, int] = (9, 10, 11)) -> np.ndarray:
    return np.random.default_rng(0).integers(-200, 900, shape).astype(np.int16)


def label_data(shape: tuple[int, int, int] = (9, 10, 11)) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 3, shape).astype(np.int64)


def only_file_is(folder: Path, name: str) -> bool:
    return sorted(p.name for p in folder.iterdir()) == [name]


# ---------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_array_affine_and_header(tmp_path: Path, suffix: str) -> None:
    src, out = tmp_path / f"image{suffix}", tmp_path / "out" / f"labels{suffix}"
    out.parent.mkdir()
    data, labels = image_data(), label_data()
    save_nifti(src, data, oblique_affine(), sform_code=2, qform_code=1)

    vol = read_volume(src)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, data)
    assert vol.path == src
    assert vol.geometry.source_format == "nifti"
    np.testing.assert_allclose(vol.geometry.zooms, (0.7, 1.3, 2.9), rtol=1e-6)

    assert write_volume(out, labels, vol.geometry) == out
    ref, written = nib.load(src), nib.load(out)
    assert np.allclose(written.affine, ref.affine, atol=1e-6)
    assert written.header.get_sform(coded=True)[1] == 2
    assert written.header.get_qform(coded=True)[1] == 1
    assert np.allclose(written.header.get_qform(), ref.header.get_qform(), atol=1e-6)
    assert written.header["descrip"] == ref.header["descrip"]
    assert written.header.get_xyzt_units() == ("mm", "sec")
    assert written.header.get_dim_info() == (0, 1, 2)
    assert written.get_data_dtype() == np.uint8

    back = read_volume(out)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    assert np.allclose(back.geometry.affine, ref.affine, atol=1e-6)


def test_labels_stored_literally_when_source_has_scl_slope(tmp_path: Path) -> None:
    src, out = tmp_path / "scaled.nii.gz", tmp_path / "labels.nii.gz"
    data, labels = image_data(), label_data()
    save_nifti(src, data, oblique_affine(), slope=2.0)
    assert nib.load(src).dataobj.slope == 2.0  # the fixture really is scaled

    vol = read_volume(src)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, data.astype(np.float32) * 2)

    write_volume(out, labels, vol.geometry)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8
    assert (written.dataobj.slope, written.dataobj.inter) == (1.0, 0.0)
    np.testing.assert_array_equal(written.dataobj.get_unscaled(), labels)
    np.testing.assert_array_equal(read_volume(out).array, labels)


@pytest.mark.parametrize(("sform_code", "qform_code"), [(2, 1), (1, 0), (0, 1), (4, 2), (0, 0)])
def test_nifti_codes_and_affine_kept(tmp_path: Path, sform_code: int, qform_code: int) -> None:
    src, out = tmp_path / "image.nii", tmp_path / "labels.nii"
    save_nifti(src, image_data(), oblique_affine(), sform_code, qform_code)
    vol = read_volume(src)
    write_volume(out, label_data(), vol.geometry)
    ref, written = nib.load(src), nib.load(out)
    assert ref.header.get_sform(coded=True)[1] == sform_code  # the fixture is as intended
    assert ref.header.get_qform(coded=True)[1] == qform_code
    assert written.header.get_sform(coded=True)[1] == sform_code
    assert written.header.get_qform(coded=True)[1] == qform_code
    assert np.allclose(written.affine, ref.affine, atol=1e-6)


def test_changed_affine_is_what_gets_written(tmp_path: Path) -> None:
    src, out = tmp_path / "image.nii.gz", tmp_path / "moved.nii.gz"
    save_nifti(src, image_data(), oblique_affine(), sform_code=2, qform_code=1)
    geometry = read_volume(src).geometry
    moved = geometry.affine.copy()
    moved[:3, 3] += [5.0, -3.5, 12.0]
    geometry.affine = moved
    write_volume(out, label_data(), geometry)
    written = nib.load(out)
    assert np.allclose(written.affine, moved, atol=1e-5)
    assert np.allclose(written.header.get_qform(), moved, atol=1e-5)
    assert written.header.get_sform(coded=True)[1] == 2
    assert written.header.get_qform(coded=True)[1] == 1


def test_sheared_affine_with_qform_only_source_is_kept(tmp_path: Path) -> None:
    src, out = tmp_path / "image.nii", tmp_path / "labels.nii"
    save_nifti(src, image_data(), np.diag([1.0, 2.0, 3.0, 1.0]), sform_code=0, qform_code=1)
    geometry = read_volume(src).geometry
    sheared = geometry.affine.copy()
    sheared[0, 1] = 0.4
    geometry.affine = sheared
    write_volume(out, label_data(), geometry)
    assert np.allclose(nib.load(out).affine, sheared, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([0, 1, 255]), np.uint8),
        (np.array([True, False, True]), np.uint8),
        (np.array([-5, 0, 300]), np.int16),
        (np.array([0, 1, 70_000]), np.int32),
        (np.array([0.25, 1.5, -3.0]), np.float32),
    ],
)
def test_output_dtype_follows_value_range(tmp_path: Path, values: np.ndarray, dtype: type) -> None:
    src, out = tmp_path / "image.nii.gz", tmp_path / "out.nii.gz"
    save_nifti(src, image_data((3, 1, 1)), np.eye(4))
    write_volume(out, values.reshape(3, 1, 1), read_volume(src).geometry)
    assert nib.load(out).get_data_dtype() == dtype
    back = read_volume(out).array
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.ravel(), values.astype(dtype))


def test_nifti_2d_and_trailing_singleton_become_3d(tmp_path: Path) -> None:
    flat = np.arange(20, dtype=np.uint8).reshape(4, 5)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii")
    one = read_volume(tmp_path / "flat.nii")
    assert one.array.shape == (4, 5, 1)
    np.testing.assert_array_equal(one.array[..., 0], flat)
    assert len(one.geometry.zooms) == 3

    stack = np.arange(60, dtype=np.uint8).reshape(3, 4, 5, 1)
    nib.save(nib.Nifti1Image(stack, np.eye(4)), tmp_path / "stack.nii.gz")
    vol = read_volume(tmp_path / "stack.nii.gz")
    assert vol.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.array, stack[..., 0])


def test_big_endian_nifti_is_read_in_native_order(tmp_path: Path) -> None:
    data = image_data((3, 4, 5))
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4), header=hdr), tmp_path / "big.nii")
    assert nib.load(tmp_path / "big.nii").dataobj.dtype == np.dtype(">i2")  # really big-endian
    vol = read_volume(tmp_path / "big.nii")
    assert vol.array.dtype == np.dtype(np.int16)
    assert vol.array.dtype.isnative
    np.testing.assert_array_equal(vol.array, data)


def test_uppercase_suffix_is_accepted(tmp_path: Path) -> None:
    src = tmp_path / "SCAN.NII.GZ"
    write_volume(src, label_data(), Geometry(np.eye(4), (1.0, 1.0, 1.0), "tiff"))
    with src.open("rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # gzip-compressed despite the upper case
    np.testing.assert_array_equal(read_volume(src).array, label_data())


# ----------------------------------------------------------------------------------- TIFF


def test_tiff_round_trip_keeps_zooms(tmp_path: Path) -> None:
    src, out = tmp_path / "stack.tif", tmp_path / "labels.tiff"
    data = np.random.default_rng(2).integers(0, 4000, (5, 6, 7)).astype(np.uint16)
    tifffile.imwrite(
        src,
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 2.5, "unit": "micron"},
    )
    vol = read_volume(src)
    np.testing.assert_array_equal(vol.array, data)
    assert vol.geometry.source_format == "tiff"
    assert vol.geometry.nifti_header is None
    np.testing.assert_allclose(vol.geometry.zooms, (2.5, 0.25, 0.5), rtol=1e-6)
    np.testing.assert_allclose(vol.geometry.affine, np.diag([2.5, 0.25, 0.5, 1.0]), rtol=1e-6)

    labels = label_data((5, 6, 7))
    write_volume(out, labels, vol.geometry)
    back = read_volume(out)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.geometry.zooms, (2.5, 0.25, 0.5), rtol=1e-6)
    with tifffile.TiffFile(out) as tf:
        assert tf.is_imagej


def test_tiff_int32_labels_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "big_values.tif"
    values = np.array([-100_000, 0, 7, 100_000], dtype=np.int64).reshape(1, 2, 2)
    geometry = Geometry(np.diag([3.0, 0.5, 0.75, 1.0]), (3.0, 0.5, 0.75), "tiff")
    write_volume(out, values, geometry)
    back = read_volume(out)
    assert back.array.dtype == np.int32
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.geometry.zooms, (3.0, 0.5, 0.75), rtol=1e-6)


def test_nifti_geometry_written_as_tiff_keeps_voxel_sizes(tmp_path: Path) -> None:
    src, out = tmp_path / "image.nii.gz", tmp_path / "labels.tif"
    save_nifti(src, image_data(), np.diag([0.8, 0.9, 3.0, 1.0]))
    write_volume(out, label_data(), read_volume(src).geometry)
    np.testing.assert_allclose(read_volume(out).geometry.zooms, (0.8, 0.9, 3.0), rtol=1e-6)


def test_tiff_geometry_written_as_nifti_uses_scanner_codes(tmp_path: Path) -> None:
    out = tmp_path / "labels.nii.gz"
    geometry = Geometry(np.diag([2.0, 0.5, 0.25, 1.0]), (2.0, 0.5, 0.25), "tiff")
    write_volume(out, label_data(), geometry)
    written = nib.load(out)
    assert np.allclose(written.affine, geometry.affine, atol=1e-6)
    assert written.header.get_sform(coded=True)[1] == 1
    assert written.header.get_qform(coded=True)[1] == 1


def test_2d_tiff_becomes_one_slice(tmp_path: Path) -> None:
    image = np.arange(30, dtype=np.uint16).reshape(5, 6)
    tifffile.imwrite(tmp_path / "slice.tif", image, photometric="minisblack")
    vol = read_volume(tmp_path / "slice.tif")
    assert vol.array.shape == (1, 5, 6)
    np.testing.assert_array_equal(vol.array[0], image)


def test_tiff_dpi_resolution_is_not_a_voxel_size(tmp_path: Path) -> None:
    image = np.zeros((4, 5, 6), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "print.tif", image, photometric="minisblack", resolution=(72, 72))
    assert read_volume(tmp_path / "print.tif").geometry.zooms == (1.0, 1.0, 1.0)
    tifffile.imwrite(
        tmp_path / "cm.tif",
        image,
        photometric="minisblack",
        resolution=(20, 10),
        resolutionunit="CENTIMETER",
    )
    np.testing.assert_allclose(read_volume(tmp_path / "cm.tif").geometry.zooms, (1.0, 0.1, 0.05))


# --------------------------------------------------------------------------- read errors


def assert_volume_error(path: Path, *fragments: str) -> VolumeError:
    with pytest.raises(VolumeError) as info:
        read_volume(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    return info.value


def test_4d_nifti_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), path)
    assert_volume_error(path, "4D", "(4, 5, 6, 3)")


def test_4d_tiff_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.tif"
    data = np.zeros((2, 3, 4, 5), np.uint8)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX"})
    assert_volume_error(path, "4D", "(2, 3, 4, 5)")


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5, 6)])
def test_1d_and_5d_nifti_are_rejected(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "odd.nii"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), path)
    assert_volume_error(path, str(shape))


def test_rgb_tiff_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    assert_volume_error(path, "RGB")


def test_rgba_tiff_stack_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "photos.tiff"
    tifffile.imwrite(path, np.zeros((2, 8, 9, 4), np.uint8), photometric="rgb")
    assert_volume_error(path, "RGB")


def test_rgb_nifti_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "colour.nii"
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    assert_volume_error(path, "RGB")


def test_empty_nifti_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 5), np.int16), np.eye(4)), path)
    assert_volume_error(path, "empty", "(0, 4, 5)")


def test_zero_byte_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nothing.nii.gz"
    path.write_bytes(b"")
    assert_volume_error(path, "empty")


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    assert_volume_error(tmp_path / "missing.nii.gz", "does not exist")


def test_directory_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "case_001.nii.gz"
    folder.mkdir()
    assert_volume_error(folder, "folder")


def test_png_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "slice.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert_volume_error(path, ".nii.gz", ".tif")


def test_unknown_extension_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "volume.mha"
    path.write_bytes(bytes(64))
    assert_volume_error(path, "extension")
    with pytest.raises(VolumeError, match=r"volume\.mha"):
        format_for(path)


def test_tiff_named_nii_gz_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "really_a_tiff.nii.gz"
    tifffile.imwrite(path, np.zeros((2, 3, 4), np.uint8), photometric="minisblack")
    assert_volume_error(path, "TIFF")


def test_gzip_named_nii_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "compressed.nii"
    path.write_bytes(gzip.compress(b"not really nifti" * 40))
    assert_volume_error(path, ".nii.gz")


def test_non_tiff_bytes_named_tif_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_bytes(b"this is a text file, not an image\n" * 10)
    assert_volume_error(path, "TIFF")


def test_random_bytes_named_nii_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "noise.nii"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 2000, np.uint8).tobytes())
    assert_volume_error(path, "corrupt")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_rejected(tmp_path: Path, suffix: str) -> None:
    good, cut = tmp_path / f"good{suffix}", tmp_path / f"cut{suffix}"
    noisy = np.random.default_rng(4).integers(0, 30000, (20, 20, 20)).astype(np.int16)
    save_nifti(good, noisy, oblique_affine())
    raw = good.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    assert_volume_error(cut, "truncated or corrupt")


@pytest.mark.parametrize("imagej", [True, False])
def test_truncated_tiff_is_rejected(tmp_path: Path, imagej: bool) -> None:
    good, cut = tmp_path / "good.tif", tmp_path / "cut.tif"
    data = np.random.default_rng(5).integers(0, 255, (6, 20, 30)).astype(np.uint8)
    tifffile.imwrite(good, data, imagej=imagej, photometric="minisblack", metadata={"axes": "ZYX"})
    raw = good.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    assert_volume_error(cut, "truncated or corrupt")


def test_unreadable_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "secret.nii.gz"
    save_nifti(path, image_data(), np.eye(4))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions (root)")
        assert_volume_error(path, "cannot be opened")
    finally:
        path.chmod(0o644)


def test_unreadable_file_is_rejected_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 4), np.uint8), photometric="minisblack")
    real_open = Path.open

    def deny(self: Path, *args: object, **kwargs: object):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", deny)
    assert_volume_error(path, "cannot be opened", "Permission denied")


# -------------------------------------------------------------------------- write errors


def test_missing_export_folder_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "no_such_folder" / "labels.nii.gz"
    with pytest.raises(VolumeError, match="does not exist") as info:
        write_volume(out, label_data(), Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti"))
    assert "labels.nii.gz" in str(info.value)
    assert "no_such_folder" in str(info.value)
    assert not out.parent.exists()


def test_unwritable_export_folder_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        with pytest.raises(VolumeError, match="not writable") as info:
            write_volume(
                folder / "labels.tif", label_data(), Geometry(np.eye(4), (1, 1, 1), "tiff")
            )
        assert "labels.tif" in str(info.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_unwritable_export_folder_is_rejected_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def deny(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(path).parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(vio.os, "open", deny)
    with pytest.raises(VolumeError, match="not writable") as info:
        write_volume(tmp_path / "labels.nii", label_data(), Geometry(np.eye(4), (1, 1, 1), "tiff"))
    assert "labels.nii" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_non_3d_and_unknown_suffix(tmp_path: Path) -> None:
    geometry = Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti")
    with pytest.raises(VolumeError, match=r"flat\.nii\.gz.*\(4, 5\)"):
        write_volume(tmp_path / "flat.nii.gz", np.zeros((4, 5)), geometry)
    with pytest.raises(VolumeError, match=r"labels\.png"):
        write_volume(tmp_path / "labels.png", np.zeros((2, 3, 4)), geometry)
    with pytest.raises(VolumeError, match=r"complex\.nii"):
        write_volume(tmp_path / "complex.nii", np.zeros((2, 3, 4), np.complex64), geometry)
    assert list(tmp_path.iterdir()) == []


def test_successful_write_leaves_no_temp_file(tmp_path: Path) -> None:
    geometry = Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti")
    for name in ("a.nii", "b.nii.gz", "c.tif", "d.tiff"):
        write_volume(tmp_path / name, label_data(), geometry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii", "b.nii.gz", "c.tif", "d.tiff"]


@pytest.mark.parametrize(("name", "writer"), [("old.nii.gz", "nibabel"), ("old.tif", "tifffile")])
def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, writer: str
) -> None:
    out = tmp_path / name
    geometry = Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti")
    write_volume(out, label_data(), geometry)
    before = out.read_bytes()

    def half_write_then_fail(img_or_path: object, path_or_data: object, *a: object, **k: object):
        target = path_or_data if writer == "nibabel" else img_or_path
        Path(str(target)).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    if writer == "nibabel":
        monkeypatch.setattr(vio.nibabel, "save", half_write_then_fail)
    else:
        monkeypatch.setattr(vio.tifffile, "imwrite", half_write_then_fail)
    with pytest.raises(VolumeError, match="No space left") as info:
        write_volume(out, np.ones((9, 10, 11), np.uint8), geometry)
    assert name in str(info.value)
    assert out.read_bytes() == before
    assert only_file_is(tmp_path, name)


# ------------------------------------------------------------------- geometry and slicing


def test_default_slice_axis() -> None:
    assert default_slice_axis(Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti")) == 2
    s_first = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    assert default_slice_axis(Geometry(s_first, (1.0, 1.0, 1.0), "nifti")) == 0
    coronal = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, -2, 0, 0], [0, 0, 0, 1]], float)
    assert default_slice_axis(Geometry(coronal, (1.0, 2.0, 1.0), "nifti")) == 1
    assert default_slice_axis(Geometry(oblique_affine(), (0.7, 1.3, 2.9), "nifti")) == 2
    assert default_slice_axis(Geometry(np.diag([2, 1, 1, 1]), (2.0, 1.0, 1.0), "tiff")) == 0


def test_geometry_json_round_trip_and_axis_codes() -> None:
    geometry = Geometry(oblique_affine(), (0.7, 1.3, 2.9), "nifti", nib.Nifti1Header())
    again = Geometry.from_json(geometry.to_json())
    np.testing.assert_array_equal(again.affine, geometry.affine)
    assert again.zooms == geometry.zooms
    assert again.source_format == "nifti"
    assert again.nifti_header is None
    assert Geometry(np.eye(4), (1, 1, 1), "nifti").axis_codes() == ("R", "A", "S")
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert Geometry(flipped, (1, 1, 1), "nifti").axis_codes() == ("L", "P", "S")
    with pytest.raises(VolumeError, match="affine"):
        Geometry.from_json({"affine": [[1, 0], [0, 1]], "zooms": [1, 1, 1], "source_format": "x"})
    with pytest.raises(VolumeError, match="zooms"):
        Geometry.from_json({"affine": np.eye(4).tolist()})


# ------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_hippocampus_case_reads_and_round_trips(tmp_path: Path) -> None:
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"real data not available: {HIPPOCAMPUS} does not exist")
    image = read_volume(HIPPOCAMPUS / "images" / "hippocampus_001.nii.gz")
    labels = read_volume(HIPPOCAMPUS / "labels" / "hippocampus_001.nii.gz")
    assert image.array.ndim == 3
    assert labels.array.shape == image.array.shape
    axis = default_slice_axis(labels.geometry)
    annotation = SparseAnnotation.from_labels(labels.array, image.array.shape, axis)
    assert annotation.num_classes == 3

    out = tmp_path / "hippocampus_001_labels.nii.gz"
    write_volume(out, labels.array, labels.geometry)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels.array)
    assert np.allclose(back.geometry.affine, labels.geometry.affine, atol=1e-6)
