"""Geometry end to end: reader -> display order -> session files -> training and prediction ->
writer -> nibabel, for identity, RAS, LPS, flipped, permuted, anisotropic, shifted and oblique
affines. The phantom's truth is known, so "aligned" is checked in world millimetres: every
foreground voxel centre of the export maps, through the export's affine, onto a truth voxel
centre mapped through the source's affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine

from napari_crii import _geometry
from napari_crii._reader import read_layers
from napari_crii._session import Session
from napari_crii._training_process import TrainingRequest
from napari_crii._writer import write_labels
from training_backend.cli import main
from training_backend.io import read_volume

SHAPE = (14, 12, 10)
TINY_SETTINGS = {
    "model.base_width": 8,
    "model.refine_width": 8,
    "model.levels": 3,
    "loss.patch_size": 4,
    "train.batch_size": 4,
    "train.crop_size": 16,
    "train.preview_seconds": 0,
    "train.learning_rate": 0.01,
}


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "identity": np.eye(4),
    "ras-anisotropic-origin": _affine(np.diag([0.8, 1.5, 3.0]), (-60.0, 22.5, 101.0)),
    "lps": _affine(np.diag([-1.0, -1.0, 2.0]), (90.0, 110.0, -40.0)),
    "flipped": _affine(np.diag([1.2, -0.9, -2.5]), (0.0, 10.0, 30.0)),
    "coronal-permuted": _affine(
        np.array([[0.8, 0.0, 0.0], [0.0, 0.0, 1.1], [0.0, -3.0, 0.0]]), (10.0, -20.0, 30.0)
    ),
    "oblique": oblique_affine(),
}
CODES = [(2, 1), (1, 1), (0, 1), (4, 0)]


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric truth (a box and a smaller cube) and a bright, noisy image of it."""
    truth = np.zeros(SHAPE, np.uint8)
    truth[2:9, 3:10, 1:5] = 1
    truth[10:13, 1:4, 6:9] = 1
    rng = np.random.default_rng(0)
    image = (truth * 100.0 + rng.normal(0.0, 5.0, SHAPE)).astype(np.float32)
    return truth, image


def save(path: Path, data: np.ndarray, affine: np.ndarray, sform: int, qform: int) -> Path:
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=sform)
    img.header.set_qform(affine, code=qform)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return path


def world_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) of the foreground voxel centres, sorted."""
    ijk = np.argwhere(mask > 0).astype(np.float64)
    xyz = nib.affines.apply_affine(affine, ijk)
    return xyz[np.lexsort(np.round(xyz, 4).T[::-1])]


def assert_aligned(export: Path, source: Path, truth: np.ndarray) -> nib.Nifti1Image:
    """Same shape, affine and codes as the source; foreground on the truth's world points."""
    out, src = nib.load(export), nib.load(source)
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, rtol=0, atol=1e-5)
    for code in ("sform_code", "qform_code"):
        assert int(out.header[code]) == int(src.header[code]), code
    mask = np.asarray(out.dataobj)
    expected = world_points(truth, src.affine)
    found = world_points(mask, out.affine)
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-4)
    return out


def display_layers(source: Path) -> tuple[np.ndarray, dict]:
    [(data, kwargs, layer_type)] = read_layers(str(source))
    assert layer_type == "image"
    return data, kwargs


@pytest.mark.parametrize("codes", CODES, ids=lambda c: f"sform{c[0]}-qform{c[1]}")
@pytest.mark.parametrize("name", list(AFFINES))
def test_plugin_path_keeps_shape_affine_codes_and_world_position(
    tmp_path: Path, name: str, codes: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("napari_crii._reader._show_warning", lambda message: None)
    truth, image = phantom()
    source = save(tmp_path / "scan.nii.gz", image, AFFINES[name], *codes)
    data, kwargs = display_layers(source)
    meta = kwargs["metadata"]
    # The session's training files hold the display-order arrays, read back exactly.
    session = Session(tmp_path / "session", kwargs["scale"])
    painted = _geometry.to_display(truth, meta)
    np.testing.assert_array_equal(read_volume(session.save_image(data)).array, data)
    np.testing.assert_array_equal(read_volume(session.save_annotations(painted)).array, painted)
    # A prediction in display order (what the trainer's .npy holds) goes out through the writer.
    prediction = (read_volume(session.image_path).array > 50).astype(np.uint8)
    np.testing.assert_array_equal(prediction, painted)
    layer = _geometry.layer_kwargs_for(meta, "crii refined")
    [written] = write_labels(str(tmp_path / "refined.nii.gz"), prediction, layer)
    assert_aligned(Path(written), source, truth)
    assert np.array_equal(np.asarray(nib.load(source).dataobj), image)  # source untouched


@pytest.mark.parametrize("name", ["lps", "oblique"])
def test_a_trained_round_through_the_session_files_is_aligned(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The widget's own command line on the session files, its .npy back through the writer;
    an oblique image is opened with a warning notification."""
    shown: list[str] = []
    monkeypatch.setattr("napari_crii._reader._show_warning", shown.append)
    truth, image = phantom()
    source = save(tmp_path / "scan.nii.gz", image, AFFINES[name], 2, 1)
    data, kwargs = display_layers(source)
    assert [("is oblique" in m) for m in shown] == ([True] if name == "oblique" else [])
    session = Session(tmp_path / "session", kwargs["scale"])
    painted = _geometry.to_display(truth, kwargs["metadata"])
    request = TrainingRequest(
        image=session.save_image(data),
        labels=session.save_annotations(painted),
        out=tmp_path / "round",
        iterations=60,
        background_slices=range(painted.shape[0]),
        settings=TINY_SETTINGS,
    )
    assert main(request.arguments()[2:]) == 0
    refined = np.load(tmp_path / "round" / "refined.npy")
    assert refined.shape == data.shape
    layer = _geometry.layer_kwargs_for(kwargs["metadata"], "crii refined")
    [written] = write_labels(str(tmp_path / "refined.nii.gz"), refined, layer)
    out = nib.load(written)
    np.testing.assert_allclose(out.affine, nib.load(source).affine, rtol=0, atol=1e-5)
    assert out.shape == SHAPE
    assert world_dice(np.asarray(out.dataobj), truth) > 0.9


def world_dice(mask: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks on one grid (alignment itself is checked by the shapes and affines)."""
    both = np.logical_and(mask > 0, truth > 0).sum()
    return float(2 * both / max(1, (mask > 0).sum() + (truth > 0).sum()))


@pytest.mark.parametrize("name", ["ras-anisotropic-origin", "coronal-permuted", "oblique"])
def test_cli_train_and_predict_on_the_source_files_are_aligned(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    truth, image = phantom()
    affine = AFFINES[name]
    source = save(tmp_path / "scan.nii.gz", image, affine, 2, 1)
    labels = save(tmp_path / "truth.nii.gz", truth, affine, 2, 1)
    settings = [f"--set={k}={v}" for k, v in TINY_SETTINGS.items()]
    train = ["train", "--image", str(source), "--labels", str(labels), "--out",
             str(tmp_path / "run"), "--iterations", "60", "--background-slices", "all",
             "--device", "cpu", *settings]  # fmt: skip
    assert main(train) == 0
    err = capsys.readouterr().err
    assert ("is oblique" in err) == (name == "oblique")
    mask = tmp_path / "mask.nii.gz"
    predict = ["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(source),
               "--out", str(mask), "--device", "cpu"]  # fmt: skip
    assert main(predict) == 0
    assert ("is oblique" in capsys.readouterr().err) == (name == "oblique")
    out = nib.load(mask)
    assert out.shape == SHAPE
    np.testing.assert_allclose(out.affine, affine, rtol=0, atol=1e-5)
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (2, 1)
    assert world_dice(np.asarray(out.dataobj), truth) > 0.9
