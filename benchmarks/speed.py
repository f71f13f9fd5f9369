"""Speed and memory of a training round, side by side: each method, float32 and mixed
precision, each in a fresh process (so peak memory is its own).

    python -m benchmarks.speed [--seconds 15] [--device cpu] [--out FILE]

Per configuration, on the first ``train`` hippocampus case with 3 annotated slices and the
product's preview interval: training iterations per second, seconds from the start of the
round to its first preview, seconds for the whole round (training, saving, whole-volume
prediction, suggestions), whole-volume inference (median of 5) and the process's peak
resident memory (and peak CUDA memory on a GPU). Prints and writes one JSON list.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.cases import AXIAL, data_available, load_case, painted, split_names
from benchmarks.real_data import RESULTS, machine
from benchmarks.runs import make_config
from training_backend.devices import mixed_precision_dtype
from training_backend.events import Error, Finished, Preview
from training_backend.inference import load_model, predict_final
from training_backend.simulate import spread_slices
from training_backend.trainer import TrainingJob, TrainingVolume, train

METHODS = ("crii", "supervised", "mean-teacher")


def measure(method: str, mixed: bool, seconds: float, device_name: str) -> dict[str, Any]:
    """One round in this process; the figures of the docstring."""
    case = load_case(split_names("train")[0])
    _, annotation = painted(case, spread_slices(case.truth, AXIAL, 3))
    config = make_config(method, 1, 0)
    config.train.iterations = None
    config.train.seconds = seconds
    config.train.device = device_name
    config.train.mixed_precision = mixed
    config.train.preview_seconds = 3.0
    config.train.log_every = 10
    device = torch.device(device_name)
    dtype = mixed_precision_dtype(device, mixed)
    precision = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
    first_preview = finished = None
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        job = TrainingJob(config, [volume], Path(scratch), predict_at_end=True)
        for event in train(job):
            if isinstance(event, Error):
                raise RuntimeError(event.message)
            if isinstance(event, Preview) and first_preview is None:
                first_preview = time.perf_counter() - start
            if isinstance(event, Finished):
                finished = event
        round_seconds = time.perf_counter() - start
        model, _ = load_model(finished.model_path, device)
        inference = []
        for _ in range(5):
            begin = time.perf_counter()
            predict_final(model, config, case.image, AXIAL, device, annotation, case.spacing)
            if device.type == "cuda":
                torch.cuda.synchronize()
            inference.append(time.perf_counter() - begin)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MiB on Linux
    row = {
        "method": method,
        "precision": precision,
        "device": device_name,
        "budget_seconds": seconds,
        "iterations": finished.iteration,
        "iterations_per_second": round(finished.iteration / finished.seconds, 2),
        "first_preview_seconds": None if first_preview is None else round(first_preview, 2),
        "round_seconds": round(round_seconds, 2),
        "inference_seconds": round(statistics.median(inference), 3),
        "volume_shape": list(case.image.shape),
        "peak_rss_mib": round(peak_rss, 1),
        "machine": machine(),
    }
    if device.type == "cuda":
        row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "MIXED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not data_available():
        print("the hippocampus data is not beside the repository", file=sys.stderr)
        return 2
    if args.one:
        method, mixed = args.one
        print(json.dumps(measure(method, mixed == "1", args.seconds, args.device)))
        return 0
    rows = []
    for mixed in ("0", "1"):
        for method in METHODS:
            command = [sys.executable, "-m", "benchmarks.speed", "--one", method, mixed,
                       "--seconds", str(args.seconds), "--device", args.device]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parents[1])  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
