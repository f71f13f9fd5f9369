"""The napari plugin's reader, writer, sample data and geometry (mostly without a viewer)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from conftest import HIPPOCAMPUS, oblique_affine

from napari_crii import _geometry
from napari_crii._reader import get_reader, is_label_volume, layer_name
from napari_crii._sample_data import make_sample_data
from napari_crii._writer import write_labels
from training_backend.errors import VolumeError
from training_backend.io import Geometry, default_slice_axis, read_volume


def coronal_affine() -> np.ndarray:
    """Array axes (X, S, A): the axial (S) axis is array axis 1, voxels 0.8 x 3.0 x 1.1."""
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2], affine[3, 3] = 0.8, 3.0, 1.1, 1.0
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, sform: int = 2, qform: int = 1):
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=sform)
    img.header.set_qform(affine, code=qform)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"crii plugin test"
    nib.save(img, path)
    return path


def image_and_labels(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[2:-2, 3:-3, 1:-1] = 1
    labels[3:5, 4:6, 2:4] = 2
    return image, labels


def read(path: Path) -> list[tuple]:
    reader = get_reader(str(path))
    assert reader is not None, path
    return reader(str(path))


# ------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("axes", [[0, 1, 2], [2, 0, 1], [1, 0, 2], [1, 2, 0]])
def test_display_and_source_orders_are_inverse(axes: list[int]) -> None:
    geometry = Geometry(np.diag([0.5, 2.0, 3.0, 1.0]), (0.5, 2.0, 3.0), "nifti")
    meta = _geometry.metadata_for(geometry, None, display_axes=axes)
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    display = _geometry.to_display(source, meta)
    assert display.shape == tuple(source.shape[a] for a in axes)
    assert _geometry.display_scale(meta) == tuple([0.5, 2.0, 3.0][a] for a in axes)
    np.testing.assert_array_equal(_geometry.to_source(display, meta), source)


def test_nifti_display_puts_the_axial_axis_first() -> None:
    geometry = Geometry(coronal_affine(), (0.8, 3.0, 1.1), "nifti")
    assert default_slice_axis(geometry) == 1
    meta = _geometry.metadata_for(geometry)
    assert meta["display_axes"] == [1, 0, 2]
    assert _geometry.display_scale(meta) == (3.0, 0.8, 1.1)
    tiff = Geometry(np.diag([4.0, 0.5, 0.5, 1.0]), (4.0, 0.5, 0.5), "tiff")
    assert _geometry.metadata_for(tiff)["display_axes"] == [0, 1, 2]


def test_layer_kwargs_are_json_and_shared_by_derived_layers() -> None:
    geometry = Geometry(oblique_affine(), (0.7, 1.3, 2.9), "nifti")
    meta = _geometry.metadata_for(geometry, "/data/scan.nii.gz")
    image = _geometry.layer_kwargs_for(meta, "scan")
    labels = _geometry.layer_kwargs_for(image["metadata"], "scan labels")
    assert labels["scale"] == image["scale"] == (2.9, 0.7, 1.3)
    assert labels["translate"] == image["translate"] == (0.0, 0.0, 0.0)
    assert labels["metadata"] == image["metadata"]
    assert labels["metadata"] is not image["metadata"]
    crii = json.loads(json.dumps(image["metadata"]))["crii"]
    assert set(crii) == {"geometry", "display_axes", "source_path", "nifti_header_path"}
    source = str(Path("/data/scan.nii.gz").resolve())
    assert crii["source_path"] == crii["nifti_header_path"] == source
    back = _geometry.geometry_from_metadata(image["metadata"])  # the file does not exist
    np.testing.assert_allclose(back.affine, geometry.affine)
    assert back.nifti_header is None


def test_geometry_from_metadata_rereads_the_nifti_header(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.float32), oblique_affine())
    meta = _geometry.metadata_for_volume(read_volume(path))
    geometry = _geometry.geometry_from_metadata(meta)
    assert geometry.nifti_header is not None
    assert geometry.nifti_header["descrip"].item() == b"crii plugin test"
    # The file replaced by one with another affine: the recorded geometry wins.
    save_nifti(path, np.zeros((4, 5, 6), np.float32), np.eye(4))
    with pytest.warns(UserWarning, match="no longer has the affine"):
        geometry = _geometry.geometry_from_metadata(meta)
    assert geometry.nifti_header is None
    np.testing.assert_allclose(geometry.affine, oblique_affine())


# -------------------------------------------------------------------------------- reader


@pytest.mark.parametrize("name", ["picture.png", "notes.txt", "scan.nii.zip", "volume.mha"])
def test_reader_declines_other_files(tmp_path: Path, name: str) -> None:
    assert get_reader(str(tmp_path / name)) is None
    assert get_reader([str(tmp_path / "a.nii.gz"), str(tmp_path / name)]) is None


def test_reader_opens_nifti_image_slice_axis_first(tmp_path: Path) -> None:
    image, _ = image_and_labels((7, 9, 11))
    path = save_nifti(tmp_path / "case_01.nii.gz", image, oblique_affine())
    [(data, kwargs, layer_type)] = read(path)
    assert layer_type == "image"
    assert kwargs["name"] == "case_01" and kwargs["colormap"] == "gray"
    np.testing.assert_array_equal(data, np.moveaxis(image, 2, 0))
    assert kwargs["scale"] == pytest.approx((2.9, 0.7, 1.3))
    crii = kwargs["metadata"]["crii"]
    assert crii["display_axes"] == [2, 0, 1]
    assert crii["source_path"] == str(path.resolve())
    np.testing.assert_allclose(crii["geometry"]["affine"], oblique_affine())


def test_reader_moves_a_non_last_axial_axis(tmp_path: Path) -> None:
    image, _ = image_and_labels((6, 8, 10))
    path = save_nifti(tmp_path / "coronal.nii", image, coronal_affine())
    [(data, kwargs, _)] = read(path)
    assert data.shape == (8, 6, 10)
    np.testing.assert_array_equal(data, np.moveaxis(image, 1, 0))
    assert kwargs["scale"] == pytest.approx((3.0, 0.8, 1.1))


def test_reader_opens_label_volumes_as_labels(tmp_path: Path) -> None:
    image, labels = image_and_labels((7, 9, 11))
    plain = save_nifti(tmp_path / "case_01_mask.nii.gz", labels, oblique_affine())
    [(data, _, layer_type)] = read(plain)
    assert layer_type == "labels" and data.dtype.kind in "iu"
    # Float labels named as such are cast to integers; few unnamed integer values are labels.
    named_float = save_nifti(tmp_path / "seg.nii.gz", labels.astype(np.float32), np.eye(4))
    [(data, _, layer_type)] = read(named_float)
    assert layer_type == "labels" and data.dtype == np.uint8
    unnamed = save_nifti(tmp_path / "case_01_b.nii.gz", labels.astype(np.int16), np.eye(4))
    assert read(unnamed)[0][2] == "labels"
    # Images stay images: many values, negative values, fractions.
    assert read(save_nifti(tmp_path / "t1.nii.gz", image, np.eye(4)))[0][2] == "image"
    ct = (image * 10 - 1000).astype(np.int16)
    assert read(save_nifti(tmp_path / "ct_labels.nii.gz", ct, np.eye(4)))[0][2] == "image"
    probability = labels.astype(np.float32) / 3
    assert read(save_nifti(tmp_path / "seg_p.nii.gz", probability, np.eye(4)))[0][2] == "image"


def test_label_rule_uses_file_and_folder_names() -> None:
    many = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    assert not is_label_volume(many, "scan.nii.gz")
    assert is_label_volume(many, "atlas_labels.nii.gz")
    assert is_label_volume(many, "labelsTr/case_001.nii.gz")
    assert not is_label_volume(many, "brain_masked.nii.gz")
    assert layer_name("/x/case.001.nii.gz") == "case.001"
    assert layer_name("stack.TIFF") == "stack"


def test_broken_file_reports_an_error_instead_of_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import napari.utils.notifications

    shown: list[str] = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    assert read(broken) == [(None,)]
    assert len(shown) == 1
    assert "broken.nii.gz" in shown[0] and "corrupt" in shown[0]
    # In a list, the readable files still open.
    good = save_nifti(tmp_path / "good.nii.gz", np.ones((3, 4, 5), np.float32), np.eye(4))
    reader = get_reader([str(broken), str(good)])
    assert reader is not None
    layers = reader([str(broken), str(good)])
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["good"]


# -------------------------------------------------------------------------------- writer


def assert_same_nifti(written: Path, original: Path) -> None:
    new, old = nib.load(written), nib.load(original)
    np.testing.assert_array_equal(np.asanyarray(new.dataobj), np.asanyarray(old.dataobj))
    np.testing.assert_allclose(new.affine, old.affine, atol=1e-6)
    for field in ("sform_code", "qform_code", "descrip", "xyzt_units", "dim_info"):
        assert new.header[field] == old.header[field], field
    np.testing.assert_allclose(new.header.get_zooms(), old.header.get_zooms())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("affine", [oblique_affine(), coronal_affine()], ids=["oblique", "coronal"])
def test_labels_round_trip_in_source_geometry(
    tmp_path: Path, suffix: str, affine: np.ndarray
) -> None:
    _, labels = image_and_labels((7, 9, 11))
    source = save_nifti(tmp_path / f"case_labels{suffix}", labels, affine, sform=4, qform=1)
    [(data, kwargs, layer_type)] = read(source)
    assert layer_type == "labels"
    out = tmp_path / f"exported{suffix}"
    assert write_labels(str(out), data, kwargs) == [str(out)]
    assert_same_nifti(out, source)


def test_painted_layer_is_written_in_the_image_geometry(tmp_path: Path) -> None:
    image, labels = image_and_labels((7, 9, 11))
    source = save_nifti(tmp_path / "scan.nii.gz", image, oblique_affine(), sform=0, qform=1)
    [(data, kwargs, _)] = read(source)
    painted = _geometry.to_display(labels, kwargs["metadata"])  # what the user paints
    layer = _geometry.layer_kwargs_for(kwargs["metadata"], "scan annotations")
    assert painted.shape == data.shape
    [written] = write_labels(str(tmp_path / "painted.nii.gz"), painted, layer)
    out = nib.load(written)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, nib.load(source).affine, atol=1e-6)
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (0, 1)


def test_writer_refuses_to_overwrite_the_source_image(tmp_path: Path) -> None:
    _, labels = image_and_labels((5, 6, 7))
    source = save_nifti(tmp_path / "scan.nii.gz", labels, np.eye(4))
    before = source.read_bytes()
    [(data, kwargs, _)] = read(source)
    with pytest.raises(VolumeError, match="Refusing to overwrite the source image"):
        write_labels(str(tmp_path / "." / "scan.nii.gz"), data, kwargs)
    assert source.read_bytes() == before


def test_writer_without_crii_metadata_warns_and_uses_the_layer_scale(tmp_path: Path) -> None:
    labels = np.zeros((3, 4, 5), np.int32)
    labels[1, 2, 3] = 7
    meta = {"name": "drawn", "scale": (2.0, 0.5, 0.25), "translate": (1.0, 2.0, 3.0)}
    with pytest.warns(UserWarning, match="no CRII geometry"):
        [written] = write_labels(str(tmp_path / "drawn.nii.gz"), labels, meta)
    out = nib.load(written)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels)
    expected = np.diag([2.0, 0.5, 0.25, 1.0])
    expected[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(out.affine, expected)


def test_writer_rejects_fractional_labels(tmp_path: Path) -> None:
    meta = _geometry.layer_kwargs_for(_geometry.identity_metadata(), "x")
    with pytest.raises(VolumeError, match="whole numbers"):
        write_labels(str(tmp_path / "x.nii.gz"), np.full((2, 2, 2), 0.5), meta)


def test_tiff_round_trip_keeps_order_and_spacing(tmp_path: Path) -> None:
    _, labels = image_and_labels((6, 8, 10))
    source = tmp_path / "stack_labels.tif"
    tifffile.imwrite(
        source, labels, imagej=True, resolution=(1 / 0.4, 1 / 0.4), metadata={"spacing": 2.5}
    )
    [(data, kwargs, layer_type)] = read(source)
    assert layer_type == "labels"
    np.testing.assert_array_equal(data, labels)  # display order = stored (Z, Y, X)
    assert kwargs["scale"] == pytest.approx((2.5, 0.4, 0.4))
    assert kwargs["metadata"]["crii"]["nifti_header_path"] is None
    out = tmp_path / "exported.tiff"
    write_labels(str(out), data, kwargs)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels)
    assert back.geometry.zooms == pytest.approx((2.5, 0.4, 0.4))


def test_real_hippocampus_case_round_trip(tmp_path: Path) -> None:
    if not (HIPPOCAMPUS / "split.json").is_file():
        pytest.skip(f"real data not found at ../shared/data/hippocampus ({HIPPOCAMPUS})")
    case = json.loads((HIPPOCAMPUS / "split.json").read_text())["test"][0]
    image_path = HIPPOCAMPUS / "images" / f"{case}.nii.gz"
    label_path = HIPPOCAMPUS / "labels" / f"{case}.nii.gz"
    [(image, image_kwargs, image_type)] = read(image_path)
    [(labels, label_kwargs, label_type)] = read(label_path)
    assert (image_type, label_type) == ("image", "labels")
    assert image.shape == labels.shape
    assert image_kwargs["scale"] == label_kwargs["scale"]
    axial = default_slice_axis(read_volume(image_path).geometry)
    assert image.shape[0] == nib.load(image_path).shape[axial]
    out = tmp_path / f"{case}_labels.nii.gz"
    write_labels(str(out), labels, label_kwargs)
    assert_same_nifti(out, label_path)
    # Labels painted on the image layer are written in the image's geometry.
    painted = tmp_path / f"{case}_painted.nii.gz"
    write_labels(str(painted), labels, _geometry.layer_kwargs_for(image_kwargs["metadata"], "p"))
    written, original = nib.load(painted), nib.load(image_path)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), nib.load(label_path).dataobj)
    np.testing.assert_allclose(written.affine, original.affine)
    for field in ("sform_code", "qform_code"):
        assert written.header[field] == original.header[field]


# --------------------------------------------------------------------------- sample data


def test_sample_data_is_ready_to_train() -> None:
    [(image, image_kwargs, image_type), (labels, label_kwargs, label_type)] = make_sample_data()
    assert (image_type, label_type) == ("image", "labels")
    assert (image_kwargs["name"], label_kwargs["name"]) == ("phantom", "phantom annotations")
    assert image.shape == labels.shape
    assert image_kwargs["scale"] == label_kwargs["scale"]
    assert image_kwargs["metadata"] == label_kwargs["metadata"]
    assert image_kwargs["metadata"]["crii"]["source_path"] is None
    annotated = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    assert 1 <= len(annotated) <= max(2, round(0.04 * labels.shape[0]))
    assert labels.dtype.kind in "iu"
    geometry = _geometry.geometry_from_metadata(label_kwargs["metadata"])
    assert default_slice_axis(geometry) == label_kwargs["metadata"]["crii"]["display_axes"][0]


# ---------------------------------------------------------------------------- in napari


def display_problem() -> str | None:
    """Why napari cannot draw here, or None. Checked before Qt starts: Qt aborts without one."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return "napari's OpenGL canvas crashes under QT_QPA_PLATFORM=offscreen; unset it"
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        return "no display and no Xvfb: install it (apt-get install xvfb) for pytest-xvfb to start"
    return "no display although Xvfb is installed: install pytest-xvfb (the [test] extra)"


@pytest.fixture
def viewer(request: pytest.FixtureRequest):
    """A napari viewer on an X display (pytest-xvfb starts Xvfb where it is installed)."""
    problem = display_problem()
    if problem is not None:
        pytest.skip(problem)
    return request.getfixturevalue("make_napari_viewer")()


def test_napari_opens_and_saves_through_the_plugin(viewer, tmp_path: Path) -> None:
    image, labels = image_and_labels((7, 9, 11))
    image_path = save_nifti(tmp_path / "scan.nii.gz", image, oblique_affine())
    label_path = save_nifti(tmp_path / "scan_seg.nii.gz", labels, oblique_affine())
    [image_layer] = viewer.open(str(image_path), plugin="napari-crii")
    [label_layer] = viewer.open(str(label_path), plugin="napari-crii")
    assert type(image_layer).__name__ == "Image" and type(label_layer).__name__ == "Labels"
    assert image_layer.data.shape == label_layer.data.shape == (11, 7, 9)
    np.testing.assert_allclose(image_layer.scale, (2.9, 0.7, 1.3))
    np.testing.assert_allclose(label_layer.scale, image_layer.scale)
    assert viewer.dims.nsteps[0] == 11  # axial slices on the slider
    out = tmp_path / "saved.nii.gz"
    label_layer.save(str(out), plugin="napari-crii")
    assert_same_nifti(out, label_path)


def test_napari_survives_a_broken_file(viewer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"\x00" * 10)
    assert viewer.open(str(broken), plugin="napari-crii") == []
    assert len(viewer.layers) == 0


def test_napari_sample_data(viewer) -> None:
    viewer.open_sample("napari-crii", "phantom")
    image, labels = viewer.layers["phantom"], viewer.layers["phantom annotations"]
    assert type(labels).__name__ == "Labels"
    assert image.data.shape == labels.data.shape
    np.testing.assert_allclose(image.scale, labels.scale)
