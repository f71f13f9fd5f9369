"""The `crii` command as outside tools call it: files in, files and JSON out."""

import json
import os
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import save_nifti

from training_backend.cli import _install_stop_handlers, main, parse_slices
from training_backend.errors import AnnotationError
from training_backend.events import Error, Finished, Progress, Started, decode
from training_backend.trainer import StopSignal

TINY = [
    "--set", "model.base_width=8", "--set", "model.levels=3", "--set", "loss.patch_size=8",
    "--set", "train.batch_size=4", "--set", "train.crop_size=32", "--set", "train.log_every=2",
    "--set", "train.preview_seconds=0", "--device", "cpu",
]  # fmt: skip


@pytest.fixture()
def case(tiny_phantom, tmp_path):
    """The tiny phantom as NIfTI files with an oblique, anisotropic affine and an origin."""
    phantom, labels, slices = tiny_phantom
    angle = 0.2
    affine = np.array(
        [
            [2 * np.cos(angle), -np.sin(angle), 0, -40.0],
            [2 * np.sin(angle), np.cos(angle), 0, 12.5],
            [0, 0, 1.5, 7.0],
            [0, 0, 0, 1],
        ]
    )
    image = save_nifti(tmp_path / "image.nii.gz", phantom.image, affine)
    label_file = save_nifti(tmp_path / "labels.nii.gz", labels.astype(np.uint8), affine)
    return image, label_file, affine, slices


def train_args(case, out, *extra):
    image, labels, _, _ = case
    return ["train", "--image", str(image), "--labels", str(labels), "--out", str(out),
            "--axis", "0", "--iterations", "6", *TINY, *extra]  # fmt: skip


def test_train_then_predict_writes_masks_in_the_input_geometry(case, tmp_path, capsys):
    image = case[0]
    assert main(train_args(case, tmp_path / "run")) == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    log = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert isinstance(decode(log[-1]), Finished)
    outputs = {name: tmp_path / f"{name}.nii.gz" for name in ("mask", "coarse", "hard", "prob")}
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--out", str(outputs["mask"]), "--coarse", str(outputs["coarse"]),
                 "--hardness", str(outputs["hard"]), "--probabilities", str(outputs["prob"]),
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    source = nib.load(str(image))
    for path in outputs.values():
        written = nib.load(str(path))
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        assert written.header.get_sform(coded=True)[1] == source.header.get_sform(coded=True)[1]
    mask = np.asarray(nib.load(str(outputs["mask"])).dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    hardness = nib.load(str(outputs["hard"])).get_fdata()
    assert 0.0 <= hardness.min() and hardness.max() <= 1.0


def test_predict_with_labels_finishes_the_mask_as_training_does(case, tmp_path):
    image, labels, _, slices = case
    assert main(train_args(case, tmp_path / "run")) == 0
    mask_path = tmp_path / "mask.nii.gz"
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--labels", str(labels), "--out", str(mask_path), "--device", "cpu"])  # fmt: skip
    assert code == 0
    source = nib.load(str(image))
    written = nib.load(str(mask_path))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    mask = np.asarray(written.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    painted = np.asarray(nib.load(str(labels)).dataobj)
    # the shape prior of the annotated slices is their annotation, and the blend keeps it
    np.testing.assert_array_equal(mask[slices], painted[slices])


def test_predict_refuses_background_slices_without_labels(case, tmp_path, capsys):
    image, _, _, _ = case
    assert main(train_args(case, tmp_path / "run")) == 0
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--background-slices", "0,1", "--out", str(tmp_path / "m.nii.gz"),
                 "--device", "cpu"])  # fmt: skip
    assert code != 0
    assert "--background-slices needs --labels" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


def test_events_on_stdout_parse_back_with_the_codec(case, tmp_path):
    command = [sys.executable, "-m", "training_backend"]
    command += train_args(case, tmp_path / "r", "--events", "-")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    events = [decode(line) for line in result.stdout.splitlines()]
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert [e.iteration for e in events if isinstance(e, Progress)] == [1, 2, 4, 6]


def test_suggest_prints_json_that_skips_annotated_slices(case, tmp_path, capsys):
    image, labels, _, slices = case
    assert main(train_args(case, tmp_path / "run")) == 0
    capsys.readouterr()
    code = main(["suggest", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--labels", str(labels), "--count", "3", "--device", "cpu"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["axis"] == 0 and result["annotated"] == slices
    picked = [item["index"] for item in result["slices"]]
    assert 1 <= len(picked) <= 3 and not set(picked) & set(slices)


def test_suggest_counts_background_slices_as_annotated(case, tmp_path, capsys):
    image, labels, _, slices = case
    assert main(train_args(case, tmp_path / "run", "--background-slices", "0,1")) == 0
    capsys.readouterr()
    code = main(["suggest", "--model", str(tmp_path / "run" / "model.pt"), "--image", str(image),
                 "--labels", str(labels), "--background-slices", "0,1", "--count", "3",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["annotated"] == sorted({0, 1, *slices})
    assert not {0, 1} & {item["index"] for item in result["slices"]}


def test_warm_start_with_init(case, tmp_path):
    assert main(train_args(case, tmp_path / "a")) == 0
    assert main(train_args(case, tmp_path / "b", "--init", str(tmp_path / "a" / "model.pt"))) == 0


def test_mismatched_shapes_give_an_error_event_and_exit_2(case, tmp_path, capsys):
    image, _, affine, _ = case
    wrong = save_nifti(tmp_path / "wrong.nii.gz", np.zeros((5, 5, 5), np.uint8), affine)
    code = main(["train", "--image", str(image), "--labels", str(wrong), "--out",
                 str(tmp_path / "run"), "--events", "-", "--iterations", "2"])  # fmt: skip
    assert code == 2
    event = decode(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(event, Error) and "wrong.nii.gz" in event.message
    assert not (tmp_path / "run" / "model.pt").exists()


def test_labels_beyond_the_models_classes_are_refused(case, tmp_path, capsys):
    image, labels, affine, _ = case
    assert main(train_args(case, tmp_path / "a")) == 0
    data = np.asarray(nib.load(str(labels)).dataobj).copy()
    data[data == 2] = 5
    bad = save_nifti(tmp_path / "five.nii.gz", data, affine)
    code = main(["train", "--image", str(image), "--labels", str(bad), "--out",
                 str(tmp_path / "b"), "--init", str(tmp_path / "a" / "model.pt"),
                 "--iterations", "2", "--axis", "0"])  # fmt: skip
    assert code == 2
    assert "class 5" in capsys.readouterr().err


def test_no_annotated_slice_is_explained(case, tmp_path, capsys):
    image, _, affine, _ = case
    empty = save_nifti(tmp_path / "empty.nii.gz", np.zeros(nib.load(str(image)).shape, np.uint8),
                       affine)  # fmt: skip
    code = main(["train", "--image", str(image), "--labels", str(empty), "--out",
                 str(tmp_path / "run"), "--iterations", "2"])  # fmt: skip
    assert code == 2
    assert "no annotated slice" in capsys.readouterr().err


def test_missing_model_and_bad_settings_exit_2(case, tmp_path, capsys):
    image, _, _, _ = case
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--image", str(image),
                 "--out", str(tmp_path / "m.nii.gz"), "--device", "cpu"]) == 2  # fmt: skip
    assert "not found" in capsys.readouterr().err
    assert main(train_args(case, tmp_path / "r", "--set", "train.learning_rate=-1")) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_background_slices_and_fully_labeled_volumes(case, tmp_path):
    assert main(train_args(case, tmp_path / "a", "--background-slices", "0,1-2")) == 0
    started = decode((tmp_path / "a" / "train.log").read_text().splitlines()[0])
    assert {0, 1, 2} <= set(started.annotated_slices)
    assert main(train_args(case, tmp_path / "b", "--background-slices", "all")) == 0
    started = decode((tmp_path / "b" / "train.log").read_text().splitlines()[0])
    assert started.annotated_slices == list(range(20))


def test_parse_slices():
    assert parse_slices("0,5,10-12", 20) == [0, 5, 10, 11, 12]
    assert parse_slices("all", 3) == [0, 1, 2]
    assert parse_slices("", 3) == []
    with pytest.raises(AnnotationError, match="cannot read slice list"):
        parse_slices("a-b", 3)


def test_demo_runs_end_to_end(tmp_path, capsys):
    from training_backend.demo import run_demo

    results = run_demo(tmp_path, seconds=3.0, device="cpu")
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    for name in ("image", "truth", "annotations", "refined", "coarse", "hardness"):
        assert nib.load(str(tmp_path / f"{name}.nii.gz")).shape == (96, 96, 64)
    assert set(results) == {"refined", "coarse", "interpolation"}
    assert 0.0 <= results["refined"][1] <= 1.0
    # organ and lesion look different: the network draws their border, and says so
    assert "classes 1 and 2: the network's border (they look different" in capsys.readouterr().out


def test_a_warm_start_takes_the_network_shape_of_its_model(case, tmp_path):
    assert main(train_args(case, tmp_path / "a")) == 0
    # ask for another width: the model's own shape wins, or its weights would not load
    extra = ["--init", str(tmp_path / "a" / "model.pt"), "--set", "model.base_width=16"]
    assert main(train_args(case, tmp_path / "b", *extra)) == 0
    from training_backend.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "b" / "model.pt").config.model.base_width == 8


def test_settings_file_values_are_not_overwritten_by_flag_defaults(case, tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"train": {"method": "supervised", "seed": 3}}))
    assert main(train_args(case, tmp_path / "a", "--config", str(settings))) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["train"]["method"] == "supervised" and saved["train"]["seed"] == 3


def test_class_borders_can_be_left_to_the_annotations_between_all_classes(case, tmp_path):
    args = train_args(case, tmp_path / "a", "--set", "predict.prior_class_max_contrast=null")
    assert main(args) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["predict"]["prior_class_max_contrast"] is None
    assert saved["predict"]["prior_class_split"] == 1.0


def test_resume_goes_on_with_the_stored_method(case, tmp_path):
    assert main(train_args(case, tmp_path / "a", "--method", "mean-teacher")) == 0
    resumed = train_args(case, tmp_path / "b", "--resume", str(tmp_path / "a" / "model.pt"))
    assert main(resumed) == 0
    from training_backend.checkpoint import load_checkpoint

    data = load_checkpoint(tmp_path / "b" / "model.pt")
    assert data.config.train.method == "mean-teacher" and data.teacher_state is not None
    assert data.iteration == 12


def test_model_files_are_readable_by_others_as_the_umask_allows(case, tmp_path):
    import os
    import stat

    assert main(train_args(case, tmp_path / "a")) == 0
    mode = stat.S_IMODE(os.stat(tmp_path / "a" / "model.pt").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_devices_lists_the_cpu_as_json(capsys):
    assert main(["devices"]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert {"name": "cpu", "description": "CPU"} in devices


@pytest.fixture
def restored_signal_handlers():
    saved = {name: signal.getsignal(name) for name in (signal.SIGINT, signal.SIGTERM)}
    yield
    for name, handler in saved.items():
        signal.signal(name, handler)


def test_sigterm_asks_for_a_clean_stop(restored_signal_handlers, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    stop = StopSignal()
    _install_stop_handlers(stop)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested
