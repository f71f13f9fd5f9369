"""Two CPU processes under torchrun (gloo): they train together and only rank 0 writes."""

import os
import socket
import subprocess
import sys

from conftest import save_nifti

from training_backend.checkpoint import load_checkpoint
from training_backend.events import Finished, Started, decode


def free_port() -> int:
    """A port no other run is using now (a fixed one collides with a parallel test run)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_process_torchrun(tiny_phantom, tmp_path):
    phantom, labels, _ = tiny_phantom
    image = save_nifti(tmp_path / "image.nii", phantom.image)
    label_file = save_nifti(tmp_path / "labels.nii", labels.astype("uint8"))
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(free_port()), "-m", "training_backend", "train",
        "--image", str(image), "--labels", str(label_file), "--out", str(out), "--axis", "0",
        "--iterations", "4", "--device", "cpu", "--events", "-",
        "--set", "model.base_width=8", "--set", "model.levels=3", "--set", "loss.patch_size=8",
        "--set", "train.batch_size=2", "--set", "train.crop_size=32",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    events = [decode(line) for line in result.stdout.splitlines() if line.startswith("{")]
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 1 and started[0].world_size == 2
    assert isinstance(events[-1], Finished) and events[-1].iteration == 4
    assert load_checkpoint(out / "model.pt").iteration == 4
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.pt", "train.log",
    ]  # fmt: skip
