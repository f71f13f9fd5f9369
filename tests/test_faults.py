"""Faults survived and odd inputs explained: out of memory, a full disk, a stop or a kill while a
model is written, and inputs that train but deserve a note (NaN, constant, one class, tiny, 2D).
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import save_nifti, tiny_config, tiny_job

from napari_crii import _geometry
from napari_crii._writer import write_labels
from training_backend import checkpoint, io, methods
from training_backend.annotations import SparseAnnotation
from training_backend.checkpoint import CheckpointData, load_checkpoint, save_checkpoint
from training_backend.cli import main
from training_backend.errors import VolumeError
from training_backend.events import Error, Finished, Notice, decode
from training_backend.io import Geometry, read_volume, write_volume
from training_backend.model import build_model
from training_backend.trainer import TrainingJob, TrainingVolume, train

TINY = [
    "--set=model.base_width=8", "--set=model.refine_width=8", "--set=model.levels=3",
    "--set=loss.patch_size=4", "--set=train.batch_size=2", "--set=train.crop_size=16",
    "--set=train.preview_seconds=0", "--device", "cpu", "--iterations", "3",
]  # fmt: skip


# ------------------------------------------------------------------------- out of memory


def _oom_after(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """Make the supervised step raise CUDA's out-of-memory error ``failures`` times; return the
    batch sizes of the steps that ran."""
    original = methods.SupervisedMethod.losses
    sizes: list[int] = []

    def crowded(self, model, batch, progress, autocast):
        if len(sizes) < failures:
            sizes.append(-batch.image.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        sizes.append(batch.image.shape[0])
        return original(self, model, batch, progress, autocast)

    monkeypatch.setattr(methods.SupervisedMethod, "losses", crowded)
    return sizes


def test_out_of_memory_halves_the_batch_and_says_so(tiny_phantom, tmp_path, monkeypatch):
    sizes = _oom_after(monkeypatch, 2)
    events = list(train(tiny_job(tiny_phantom, tmp_path, iterations=3, method="supervised")))
    assert sizes == [-4, -2, 1, 1, 1]
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert len(notes) == 2 and "batch size is now 2" in notes[0] and "now 1" in notes[1]
    assert isinstance(events[-1], Finished) and events[-1].iteration == 3
    assert load_checkpoint(tmp_path / "model.pt").iteration == 3


def test_out_of_memory_on_the_cpu_with_one_slice_stops_with_advice(
    tiny_phantom, tmp_path, monkeypatch
):
    _oom_after(monkeypatch, 10**6)
    events = list(train(tiny_job(tiny_phantom, tmp_path, iterations=3, method="supervised")))
    assert isinstance(events[-1], Error)
    assert "out of memory on the CPU" in events[-1].message
    assert "crop_size" in events[-1].message


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tiny_phantom, tmp_path, monkeypatch):
    def broken(self, model, batch, progress, autocast):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(methods.SupervisedMethod, "losses", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(train(tiny_job(tiny_phantom, tmp_path, iterations=3, method="supervised")))


# -------------------------------------------------------------------------- odd inputs


def _notes(job: TrainingJob) -> tuple[list[str], list]:
    events = list(train(job))
    return [e.message for e in events if isinstance(e, Notice)], events


def test_nan_inf_and_constant_images_train_with_a_note(tiny_phantom, tmp_path):
    phantom, _, _ = tiny_phantom
    job = tiny_job(tiny_phantom, tmp_path / "nan", iterations=2)
    image = phantom.image.astype(np.float32).copy()
    image[0, :2, :3] = np.nan
    image[1, 0, 0] = np.inf
    job.volumes[0].image = image
    notes, events = _notes(job)
    assert isinstance(events[-1], Finished)
    assert any("7 voxels are NaN or Inf" in n for n in notes)
    job = tiny_job(tiny_phantom, tmp_path / "constant", iterations=2)
    job.volumes[0].image = np.full(phantom.image.shape, 7, np.int16)
    notes, events = _notes(job)
    assert isinstance(events[-1], Finished)
    assert any("the image is constant (every voxel 7)" in n for n in notes)


@pytest.mark.parametrize(
    ("fill", "expected"),
    [(0, "background only"), (1, "every annotated pixel is class 1")],
    ids=["background-only", "foreground-only"],
)
def test_annotations_of_one_class_train_with_a_note(tiny_phantom, tmp_path, fill, expected):
    phantom, _, _ = tiny_phantom
    labels = np.zeros(phantom.image.shape, np.uint8)
    labels[5] = fill
    annotation = SparseAnnotation.from_labels(
        labels, labels.shape, 0, background_slices=[5], num_classes=3
    )
    job = TrainingJob(
        config=tiny_config(iterations=2),
        volumes=[TrainingVolume(phantom.image, annotation, phantom.spacing, "tiny")],
        run_dir=tmp_path,
    )
    notes, events = _notes(job)
    assert isinstance(events[-1], Finished)
    assert len(notes) == 1 and expected in notes[0]
    # Two classes in the annotations: no note.
    notes, _ = _notes(tiny_job(tiny_phantom, tmp_path / "fine", iterations=1))
    assert notes == []


def _train_and_predict(tmp_path: Path, image: np.ndarray, labels: np.ndarray, *extra: str):
    image_path = save_nifti(tmp_path / "image.nii.gz", image)
    label_path = save_nifti(tmp_path / "labels.nii.gz", labels)
    events = tmp_path / "events.jsonl"
    code = main(["train", "--image", str(image_path), "--labels", str(label_path), "--out",
                 str(tmp_path / "run"), "--events", str(events), *TINY, *extra])  # fmt: skip
    assert code == 0
    mask = tmp_path / "mask.nii.gz"
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image",
                 str(image_path), "--out", str(mask), "--device", "cpu"])  # fmt: skip
    assert code == 0
    return nib.load(mask), [decode(line) for line in events.read_text().splitlines()]


def test_the_cli_reports_nan_intensities_as_a_notice(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 12, 12)).astype(np.float32)
    image[0] = np.nan
    labels = np.zeros(image.shape, np.uint8)
    labels[3, 3:8, 3:8] = 1
    mask, events = _train_and_predict(tmp_path, image, labels, "--axis", "0")
    assert mask.shape == image.shape
    assert any(isinstance(e, Notice) and "144 voxels are NaN" in e.message for e in events)


def test_a_volume_smaller_than_the_network_downsampling_is_padded(tmp_path):
    """(4, 3, 2) voxels against a network that halves each plane twice: padded, not refused."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 3, 2)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[1, 1, 1] = 1
    mask, events = _train_and_predict(tmp_path, image, labels, "--axis", "0")
    assert mask.shape == (4, 3, 2)
    assert isinstance(events[-1], Finished)


def test_a_2d_image_trains_and_predicts_as_one_slice(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 12)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[3:8, 3:8] = 1
    image[3:8, 3:8] += 4.0
    mask, events = _train_and_predict(tmp_path, image, labels, "--background-slices", "all")
    assert mask.shape == (12, 12, 1)
    assert isinstance(events[-1], Finished) and events[0].annotated_slices == [0]


# --------------------------------------------------------------- disk full during export


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """nibabel writes part of the file, then the disk is full."""

    def partial_save(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.nibabel, "save", partial_save)


def test_a_full_disk_during_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    geometry = Geometry(np.diag([1.0, 2.0, 3.0, 1.0]), (1.0, 2.0, 3.0), "nifti")
    source = write_volume(tmp_path / "scan.nii.gz", np.ones((4, 5, 6), np.float32), geometry)
    before = source.read_bytes()
    previous = write_volume(tmp_path / "mask.nii.gz", np.zeros((4, 5, 6), np.uint8), geometry)
    previous_bytes = previous.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(VolumeError, match=r"No space left on device.*free disk space"):
        write_volume(tmp_path / "mask.nii.gz", np.ones((4, 5, 6), np.uint8), geometry)
    meta = _geometry.metadata_for_volume(read_volume(source))
    layer = _geometry.layer_kwargs_for(meta, "crii refined")
    with pytest.raises(VolumeError, match="No space left on device"):
        write_labels(str(tmp_path / "new.nii.gz"), np.ones((4, 5, 6), np.uint8), layer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "scan.nii.gz"]
    assert previous.read_bytes() == previous_bytes  # the earlier export is intact
    assert source.read_bytes() == before


# ------------------------------------------------------- a stop while a model is written


def _tiny_checkpoint(iteration: int) -> CheckpointData:
    config = tiny_config()
    model = build_model(config.model, torch.device("cpu"))
    return CheckpointData(config=config, model_state=model.state_dict(), iteration=iteration)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError], ids=["stop", "disk-full"])
def test_a_stop_while_the_model_is_written_keeps_the_previous_one(tmp_path, monkeypatch, fault):
    path = save_checkpoint(tmp_path / "model.pt", _tiny_checkpoint(7))
    real_save = torch.save

    def interrupted(obj, stream, *args, **kwargs):
        real_save({"half": torch.zeros(10)}, stream)
        raise fault()

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(fault):
        save_checkpoint(path, _tiny_checkpoint(8))
    assert load_checkpoint(path).iteration == 7
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


_WRITER = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from training_backend.checkpoint import CheckpointData, save_checkpoint
from training_backend.model import build_model
config = tiny_config()
state = build_model(config.model, torch.device("cpu")).state_dict()
for i in range(1, 10**9):
    save_checkpoint({path!r}, CheckpointData(config=config, model_state=state, iteration=i))
    if i == 3:
        print("ready", flush=True)
"""


def test_a_process_killed_while_writing_models_leaves_a_loadable_one(tmp_path):
    """SIGKILL at several moments of a loop that rewrites model.pt: it always loads."""
    path = tmp_path / "model.pt"
    script = textwrap.dedent(_WRITER.format(tests=str(Path(__file__).parent), path=str(path)))
    seen = []
    for delay_lines in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout.readline().strip() == "ready"
            for _ in range(delay_lines * 50):  # a varying amount of work before the kill
                np.linalg.svd(np.ones((40, 40)))
        finally:
            process.kill()
            process.wait()
        seen.append(load_checkpoint(path).iteration)
    assert all(i >= 3 for i in seen)


# ------------------------------------------------------------------- too large for memory


def test_a_volume_too_large_for_memory_is_refused_before_training_or_prediction(
    tiny_phantom, tmp_path, monkeypatch, capsys
):
    from training_backend import memory

    phantom, labels, _ = tiny_phantom
    image = save_nifti(tmp_path / "image.nii.gz", phantom.image)
    label_file = save_nifti(tmp_path / "labels.nii.gz", labels.astype(np.uint8))
    args = ["train", "--image", str(image), "--labels", str(label_file), "--out",
            str(tmp_path / "run"), "--axis", "0", *TINY]  # fmt: skip
    assert main(args) == 0
    needed = memory.training_bytes(phantom.image.shape, 3)
    assert needed > phantom.image.size * (4 + 4 * 3)  # at least the image and the prior
    monkeypatch.setattr(memory, "available_bytes", lambda: needed // 2)
    assert main([*args[:6], str(tmp_path / "refused"), *args[7:]]) == 2
    err = capsys.readouterr().err
    assert "training on" in err and "GiB of memory" in err and "Crop the volume" in err
    assert not (tmp_path / "refused" / "model.pt").exists()
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--out", str(tmp_path / "mask.nii.gz"), "--device", "cpu"])  # fmt: skip
    assert code == 2
    assert "predicting" in capsys.readouterr().err
    assert not (tmp_path / "mask.nii.gz").exists()
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: no refusal
    assert main([*args[:6], str(tmp_path / "unknown"), *args[7:]]) == 0


# ------------------------------------------------------------------------ session restore


def test_the_previous_session_is_the_latest_with_fitting_annotations(tmp_path, monkeypatch):
    import os

    from napari_crii._session import Session

    monkeypatch.setenv("NAPARI_CRII_HOME", str(tmp_path))
    assert Session.previous("scan", (4, 5, 6)) is None
    painted = np.zeros((4, 5, 6), np.uint8)
    painted[2, 1, 1] = 1
    fitting = Session.create("scan")
    fitting.save_annotations(painted)
    other_shape = Session(tmp_path / "sessions" / "scan-20990101-000000")
    other_shape.save_annotations(np.ones((4, 5, 7), np.uint8))
    empty = Session(tmp_path / "sessions" / "scan-20990101-000001")
    empty.save_annotations(np.zeros((4, 5, 6), np.uint8))
    other_image = Session(tmp_path / "sessions" / "scan2-20990101-000002")
    other_image.save_annotations(painted)
    for newer in (other_shape, empty, other_image):  # newer files, but none fits
        os.utime(newer.annotations_path, (4e9, 4e9))
    found = Session.previous("scan", (4, 5, 6))
    assert found is not None and found.folder == fitting.folder
    np.testing.assert_array_equal(found.saved_annotations(), painted)
