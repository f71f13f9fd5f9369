"""Start, stop and read the training backend as a child process (``QProcess``).

The child is the ``crii`` command itself (``python -m training_backend train ... --events -``).
Its stdout carries one JSON event per line, decoded here with :func:`training_backend.events.decode`
and re-emitted as Qt signals on the main thread; a line that is not an event is logged and
skipped. Its stderr is kept (the last lines explain a crash). Stop is polite first (a ``STOP``
file in the run folder: the trainer saves the model and ends), then a kill if no model is saved
within a grace period. The child runs at a lower CPU priority so that napari stays responsive.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from napari_crii._session import format_slices
from training_backend.atomic import write_text
from training_backend.events import (
    PREVIEW_SLICE_FILE,
    STOP_FILE,
    Checkpoint,
    Error,
    EventDecodeError,
    Finished,
    Started,
    decode,
)

KILL_AFTER_STOP_MS = 10_000
STDERR_LINES_KEPT = 40
LOG_FILE = "process.log"
CHILD_NICENESS = 10

logger = logging.getLogger(__name__)


@dataclass
class TrainingRequest:
    """One training round, in the terms of ``crii train``'s flags."""

    image: Path
    labels: Path
    out: Path
    method: str = "crii"
    device: str = "cpu"
    seconds: float | None = 60.0
    iterations: int | None = None
    seed: int = 0
    preview_slice: int | None = None
    init: Path | None = None
    background_slices: Sequence[int] = ()
    settings: Mapping[str, object] = field(default_factory=dict)
    predict: bool = True

    def arguments(self) -> list[str]:
        """The command line after ``python``: ``-m training_backend train ...``."""
        args = ["-m", "training_backend", "train", "--image", str(self.image)]
        args += ["--labels", str(self.labels), "--out", str(self.out), "--events", "-"]
        args += ["--axis", "0", "--method", self.method, "--device", self.device]
        args += ["--seed", str(self.seed)]
        if self.iterations is not None:
            args += ["--iterations", str(int(self.iterations))]
        else:
            args += ["--seconds", f"{float(self.seconds or 60.0):g}"]
        if self.predict:
            args.append("--predict")
        if self.preview_slice is not None:
            args += ["--preview-slice", str(int(self.preview_slice))]
        if self.init is not None:
            args += ["--init", str(self.init)]
        if self.background_slices:
            args.append(f"--background-slices={format_slices(self.background_slices)}")
        for key, value in self.settings.items():
            args += ["--set", f"{key}={_setting_text(value)}"]
        return args


def predict_arguments(
    model: Path,
    image: Path,
    folder: Path,
    device: str,
    labels: Path | None = None,
    background_slices: Sequence[int] = (),
) -> list[str]:
    """``-m training_backend predict ...`` writing refined, coarse and hardness to ``folder``;
    with ``labels`` (the image's annotations) the mask is finished as at the end of a round."""
    args = ["-m", "training_backend", "predict", "--model", str(model), "--image", str(image)]
    args += ["--axis", "0", "--device", device, "--out", str(folder / "refined.nii")]
    args += [f"--{name}={folder / f'{name}.nii'}" for name in ("coarse", "hardness")]
    if labels is not None:
        args += ["--labels", str(labels)]
        if background_slices:
            args.append(f"--background-slices={format_slices(background_slices)}")
    return args


def _setting_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@dataclass
class ProcessOutcome:
    """How a run ended. ``finished`` is None when the process ended without saying so."""

    exit_code: int
    crashed: bool
    finished: Finished | None
    error: Error | None
    stderr_tail: str
    stop_requested: bool
    killed: bool

    @property
    def ok(self) -> bool:
        return self.finished is not None and self.error is None


class TrainingProcess(QObject):
    """One child process at a time; emits ``received`` per decoded event and ``ended`` once."""

    received = Signal(object)
    ended = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._run_dir: Path | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._stdout_rest = b""
        self._finished: Finished | None = None
        self._error: Error | None = None
        self._stop_requested = False
        self._killed = False
        self._started = False
        self._last_preview_request: int | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill_after_grace)

    # ------------------------------------------------------------------ control

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._process is None else int(self._process.processId()) or None

    def start(self, request: TrainingRequest) -> None:
        """Start ``crii train`` for ``request``; raise RuntimeError if one is already running."""
        self.start_command(request.arguments(), Path(request.out))
        if request.preview_slice is not None:
            self.request_preview(request.preview_slice)

    def start_command(self, arguments: Sequence[str], run_dir: Path) -> None:
        """Start ``python ARGUMENTS`` with ``run_dir`` as the run folder (created here)."""
        if self._process is not None:
            raise RuntimeError("a training process is already running")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        self._run_dir = run_dir
        self._stderr.clear()
        self._stdout_rest = b""
        self._finished = self._error = None
        self._stop_requested = self._killed = self._started = False
        self._last_preview_request = None
        process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(str(run_dir))
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        process.started.connect(self._lower_priority)
        self._process = process
        self._log(f"$ {sys.executable} {' '.join(arguments)}")
        process.start(sys.executable, list(arguments))

    def _lower_priority(self) -> None:
        """Training yields the CPU to napari: the window stays responsive on a busy CPU."""
        pid = self.pid()
        if pid is None or not hasattr(os, "setpriority"):
            return
        try:
            os.setpriority(os.PRIO_PROCESS, pid, CHILD_NICENESS)
        except OSError as exc:
            self._log(f"cannot lower the priority of the training process: {exc}")

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; kill it if it has not saved its
        model within 10 s. A second call kills at once."""
        if self._process is None:
            return
        if self._stop_requested:
            self.kill()
            return
        self._stop_requested = True
        if not self._request_stop_file():
            self.kill()
            return
        if self._started:  # before that it may be importing torch or building the prior
            self._kill_timer.start(KILL_AFTER_STOP_MS)

    def _request_stop_file(self) -> bool:
        if self._run_dir is None:
            return False
        try:
            (self._run_dir / STOP_FILE).touch()
        except OSError as exc:  # the folder vanished: nothing polite is left to do
            self._log(f"cannot write the stop request: {exc}")
            return False
        return True

    def kill(self) -> None:
        """End the child at once (the last saved model stays on disk)."""
        if self._process is not None:
            self._killed = True
            self._process.kill()

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Kill a running child and wait for it (the widget is closing)."""
        process = self._process
        if process is None:
            return
        self.kill()
        if not process.waitForFinished(wait_ms):
            self._log("the training process did not end after kill")

    def request_preview(self, index: int) -> None:
        """Ask the trainer to preview slice ``index`` (written atomically to the run folder)."""
        if self._process is None or self._run_dir is None or index == self._last_preview_request:
            return
        self._last_preview_request = int(index)
        path = self._run_dir / PREVIEW_SLICE_FILE
        try:
            write_text(path, f"{int(index)}\n")
        except OSError as exc:
            self._log(f"cannot write the preview request: {exc}")

    def stderr_tail(self, lines: int = 8) -> str:
        """The last ``lines`` lines the child wrote to stderr."""
        return "\n".join(list(self._stderr)[-lines:])

    # ------------------------------------------------------------------ reading

    def _read_stdout(self) -> None:
        if self._process is None:
            return
        data = self._stdout_rest + bytes(self._process.readAllStandardOutput())
        *lines, self._stdout_rest = data.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", errors="replace").strip())

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        try:
            event = decode(line)
        except EventDecodeError as exc:
            logger.warning("ignored a line from the training process: %s", exc)
            self._log(f"ignored: {line}")
            return
        if isinstance(event, Finished):
            self._finished = event
        elif isinstance(event, Error):
            self._error = event
        elif isinstance(event, Started):
            self._started = True
            if self._stop_requested:
                self._request_stop_file()  # the command clears STOP when it starts: ask again
                self._kill_timer.start(KILL_AFTER_STOP_MS)
        elif isinstance(event, Checkpoint) and self._stop_requested:
            self._kill_timer.stop()  # the model is saved; let it write its predictions
        self.received.emit(event)

    def _read_stderr(self) -> None:
        if self._process is None:
            return
        text = bytes(self._process.readAllStandardError()).decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.strip():
                self._stderr.append(line.rstrip())
                self._log(f"stderr: {line.rstrip()}")

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._process is not None:
            self._stderr.append(f"could not start {sys.executable}: {self._process.errorString()}")
            self._on_finished(-1, QProcess.ExitStatus.CrashExit)

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        process = self._process
        if process is None:
            return
        self._read_stdout()
        self._read_stderr()
        if self._stdout_rest:
            self._handle_line(self._stdout_rest.decode("utf-8", errors="replace").strip())
            self._stdout_rest = b""
        self._kill_timer.stop()
        self._process = None
        process.deleteLater()
        outcome = ProcessOutcome(
            exit_code=int(exit_code),
            crashed=status == QProcess.ExitStatus.CrashExit,
            finished=self._finished,
            error=self._error,
            stderr_tail=self.stderr_tail(),
            stop_requested=self._stop_requested,
            killed=self._killed,
        )
        self._log(f"ended: exit code {exit_code}, crashed {outcome.crashed}")
        self.ended.emit(outcome)

    def _kill_after_grace(self) -> None:
        if self._process is not None:
            self._log("the training process did not stop in time: killed")
            self.kill()

    def _log(self, text: str) -> None:
        if self._run_dir is None:
            return
        try:
            with open(self._run_dir / LOG_FILE, "a", encoding="utf-8") as stream:
                stream.write(text + "\n")
        except OSError:
            logger.debug("cannot write %s", self._run_dir / LOG_FILE)
