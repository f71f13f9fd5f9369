"""GPU check: CRII-Net training and inference speed on CUDA, with and without mixed precision,
beside the CPU figure, on the synthetic phantom (no data files needed).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

Each configuration trains for a fixed number of iterations after a warm-up and reports the
median iterations per second over timed windows, the whole-volume inference time (median of
repeats) and the Dice of a short training against the phantom's truth. Runs on a CPU-only
machine too (the CUDA rows are then skipped), so the script can be checked anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training_backend.annotations import SparseAnnotation  # noqa: E402
from training_backend.config import CriiConfig  # noqa: E402
from training_backend.events import Error, Finished, Progress  # noqa: E402
from training_backend.inference import load_model, predict_with_config  # noqa: E402
from training_backend.metrics import mean_dice  # noqa: E402
from training_backend.phantom import phantom_as_nifti  # noqa: E402
from training_backend.simulate import slices_for_fraction, sparse_labels  # noqa: E402
from training_backend.trainer import TrainingJob, TrainingVolume, train  # noqa: E402

AXIS = 2


def train_once(image, annotation, spacing, device, mixed, iterations, batch, run_dir, method):
    """Train; return (median it/s over the progress windows after the first, model path)."""
    config = CriiConfig()
    config.model.num_classes = 3
    config.train.method = method
    config.train.iterations = iterations
    config.train.seconds = None
    config.train.device = device
    config.train.mixed_precision = mixed
    config.train.batch_size = batch
    config.train.preview_seconds = 0.0
    config.train.log_every = max(1, iterations // 10)
    config.train.axis = AXIS
    job = TrainingJob(config, [TrainingVolume(image, annotation, spacing, "phantom")], run_dir)
    marks: list[tuple[int, float]] = []
    model_path = None
    for event in train(job):
        if isinstance(event, Progress):
            marks.append((event.iteration, event.seconds))
        elif isinstance(event, Error):
            raise RuntimeError(event.message)
        elif isinstance(event, Finished):
            model_path = event.model_path
    windows = itertools.pairwise(marks[1:])
    rates = [(i2 - i1) / (s2 - s1) for (i1, s1), (i2, s2) in windows if s2 > s1]
    return statistics.median(rates), model_path


def inference_seconds(model_path, image, device, mixed, repeats=5):
    model, data = load_model(model_path, torch.device(device))
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        data.config.train.mixed_precision = mixed
        prediction = predict_with_config(model, data.config, image, AXIS, torch.device(device))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), prediction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--cpu-iterations", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="crii")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/crii-gpu-check"))
    args = parser.parse_args()

    image, truth, geometry = phantom_as_nifti(seed=0)
    slices = slices_for_fraction(truth, AXIS, 0.04)
    labels = sparse_labels(truth, AXIS, slices)
    annotation = SparseAnnotation.from_labels(labels, image.shape, AXIS, num_classes=3)
    rows = []
    settings = [("cpu", False, args.cpu_iterations)]
    if torch.cuda.is_available():
        settings += [("cuda", False, args.iterations), ("cuda", True, args.iterations)]
    for device, mixed, iterations in settings:
        rate, model_path = train_once(image, annotation, geometry.zooms, device, mixed,
                                      iterations, args.batch,
                                      args.run_dir / f"{device}-{mixed}", args.method)  # fmt: skip
        seconds, prediction = inference_seconds(model_path, image, device, mixed)
        row = {
            "device": device,
            "mixed_precision": mixed,
            "method": args.method,
            "batch": args.batch,
            "iterations": iterations,
            "iterations_per_second": round(rate, 2),
            "inference_seconds_whole_volume": round(seconds, 4),
            "dice_after_training": round(mean_dice(prediction.refined, truth, 3), 4),
        }
        if device == "cuda":
            row["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "volume_shape": list(image.shape),
        "annotated_slices": slices,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "rows": rows,
    }
    cpu_rate = rows[0]["iterations_per_second"]
    for row in rows[1:]:
        row["speedup_vs_cpu"] = round(row["iterations_per_second"] / cpu_rate, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
