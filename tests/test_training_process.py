"""The training process wrapper on its own: a real child process, read through Qt signals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from conftest import TINY_SETTINGS

from napari_crii._session import format_slices
from napari_crii._training_process import (
    PREVIEW_SLICE_FILE,
    STOP_FILE,
    ProcessOutcome,
    TrainingProcess,
    TrainingRequest,
    predict_arguments,
)
from training_backend.events import Error, Finished, Prediction, Progress, Started
from training_backend.io import Geometry, write_volume
from training_backend.phantom import make_phantom
from training_backend.simulate import sparse_labels, spread_slices


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("volumes")
    phantom = make_phantom((16, 32, 32), seed=2)
    labels = sparse_labels(phantom.truth, 0, spread_slices(phantom.truth, 0, 3))
    geometry = Geometry(np.eye(4), (1.0, 1.0, 1.0), "nifti")
    image = write_volume(folder / "image.nii", phantom.image, geometry)
    return image, write_volume(folder / "labels.nii", labels, geometry)


def run_to_end(qtbot, process: TrainingProcess, request: TrainingRequest) -> ProcessOutcome:
    with qtbot.waitSignal(process.ended, timeout=120_000) as blocker:
        process.start(request)
    return blocker.args[0]


def test_the_copied_file_names_match_the_trainer():
    from training_backend import trainer

    assert trainer.STOP_FILE == STOP_FILE
    assert trainer.PREVIEW_SLICE_FILE == PREVIEW_SLICE_FILE


def test_request_builds_the_documented_command(tmp_path):
    request = TrainingRequest(
        image=tmp_path / "i.nii",
        labels=tmp_path / "l.nii",
        out=tmp_path / "run",
        iterations=5,
        preview_slice=3,
        init=tmp_path / "model.pt",
        background_slices=[0, 1, 2, 7],
        settings={"loss.lambda_intra": 0.2, "loss.use_prior": False},
    )
    args = request.arguments()
    assert args[:3] == ["-m", "training_backend", "train"]
    assert args[args.index("--iterations") + 1] == "5"
    assert "--seconds" not in args and "--predict" in args
    assert args[args.index("--init") + 1] == str(tmp_path / "model.pt")
    assert "--background-slices=0-2,7" in args
    assert "loss.use_prior=false" in args and "loss.lambda_intra=0.2" in args
    assert format_slices([]) == ""


def test_a_tiny_run_reports_its_events_in_order(qtbot, volumes, tmp_path):
    image, labels = volumes
    process = TrainingProcess()
    events = []
    process.received.connect(events.append)
    request = TrainingRequest(
        image, labels, tmp_path / "run", device="cpu", iterations=4, settings=TINY_SETTINGS
    )
    outcome = run_to_end(qtbot, process, request)
    assert outcome.ok and outcome.exit_code == 0, outcome.stderr_tail
    kinds = [event.kind for event in events]
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert kinds.index("progress") < kinds.index("prediction") < kinds.index("suggestions")
    assert any(isinstance(e, Progress) for e in events)
    prediction = next(e for e in events if isinstance(e, Prediction))
    assert np.load(prediction.refined).shape == (16, 32, 32)
    assert not process.running


def test_a_line_that_is_no_event_is_logged_and_skipped(qtbot, tmp_path, caplog):
    process = TrainingProcess()
    events = []
    process.received.connect(events.append)
    script = (
        "print('hello, not json', flush=True);"
        'print(\'{"event": "nonsense"}\', flush=True);'
        'print(\'{"event":"error","message":"bad things","error_type":"X"}\', flush=True)'
    )
    with caplog.at_level(logging.WARNING), qtbot.waitSignal(process.ended, timeout=30_000) as b:
        process.start_command(["-c", script], tmp_path / "run")
    outcome: ProcessOutcome = b.args[0]
    assert [e.kind for e in events] == ["error"]
    assert outcome.error is not None and outcome.error.message == "bad things"
    assert "hello, not json" in caplog.text
    assert "ignored: hello, not json" in (tmp_path / "run" / "process.log").read_text()


def test_a_failing_run_reports_the_error_message(qtbot, volumes, tmp_path):
    _, labels = volumes
    process = TrainingProcess()
    request = TrainingRequest(tmp_path / "missing.nii", labels, tmp_path / "run", iterations=2)
    outcome = run_to_end(qtbot, process, request)
    assert not outcome.ok and outcome.exit_code == 2
    assert isinstance(outcome.error, Error) and "missing.nii" in outcome.error.message


def test_stop_ends_the_run_with_a_saved_model(qtbot, volumes, tmp_path):
    image, labels = volumes
    process = TrainingProcess()
    progress = []
    process.received.connect(lambda e: isinstance(e, Progress) and progress.append(e))
    process.received.connect(
        lambda e: len(progress) == 1 and isinstance(e, Progress) and process.stop()
    )
    request = TrainingRequest(
        image, labels, tmp_path / "run", seconds=120, predict=False, settings=TINY_SETTINGS
    )
    outcome = run_to_end(qtbot, process, request)
    assert outcome.ok and outcome.stop_requested and not outcome.killed
    assert outcome.finished.stopped_early and Path(outcome.finished.model_path).is_file()


def test_a_second_stop_kills_at_once(qtbot, volumes, tmp_path):
    image, labels = volumes
    process = TrainingProcess()

    def stop_twice(event) -> None:
        if isinstance(event, Started):
            process.stop()
            process.stop()

    process.received.connect(stop_twice)
    request = TrainingRequest(image, labels, tmp_path / "run", seconds=120, settings=TINY_SETTINGS)
    outcome = run_to_end(qtbot, process, request)
    assert outcome.killed and outcome.crashed and outcome.finished is None


def test_predict_arguments_pass_the_annotations_when_given(tmp_path):
    bare = predict_arguments(tmp_path / "m.pt", tmp_path / "i.nii", tmp_path, "cpu")
    assert "--labels" not in bare and not any(a.startswith("--background") for a in bare)
    full = predict_arguments(tmp_path / "m.pt", tmp_path / "i.nii", tmp_path, "cpu",
                             labels=tmp_path / "a.nii", background_slices=[0, 1, 2, 7])  # fmt: skip
    assert full[full.index("--labels") + 1] == str(tmp_path / "a.nii")
    assert f"--background-slices={format_slices([0, 1, 2, 7])}" in full
