"""Quick real-data comparison: k annotated axial slices per hippocampus case, one method, a
fixed iteration budget; Dice of the refined and coarse masks beside shape-based interpolation.

    python benchmarks/sparse_slices.py --method crii --iterations 300 --cases 4 --split train \
        [--set train.orientations=all ...] [--out benchmarks/results/NAME.jsonl]

Reads ../shared/data/hippocampus (split.json). Tune on ``train``; report on ``test``.
Prints one line per case and the mean; with --out, appends one JSON object per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training_backend.annotations import SparseAnnotation  # noqa: E402
from training_backend.cli import _parse_value  # noqa: E402
from training_backend.config import CriiConfig  # noqa: E402
from training_backend.events import Error, Finished  # noqa: E402
from training_backend.inference import load_model, predict_with_config  # noqa: E402
from training_backend.io import read_volume  # noqa: E402
from training_backend.metrics import mean_dice  # noqa: E402
from training_backend.prior import interpolate_labels  # noqa: E402
from training_backend.simulate import sparse_labels, spread_slices  # noqa: E402
from training_backend.trainer import TrainingJob, TrainingVolume, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hippocampus"
AXIAL = 2


def run_case(name: str, args: argparse.Namespace, run_dir: Path) -> dict:
    image = read_volume(DATA / "images" / f"{name}.nii.gz")
    truth = read_volume(DATA / "labels" / f"{name}.nii.gz").array.astype(np.int64)
    slices = spread_slices(truth, AXIAL, args.slices)
    painted = sparse_labels(truth, AXIAL, slices)
    annotation = SparseAnnotation.from_labels(painted, truth.shape, AXIAL, num_classes=3)
    config = CriiConfig().to_dict()
    config["model"]["num_classes"] = 3
    config["train"].update(
        method=args.method,
        iterations=args.iterations,
        seconds=None,
        device="cpu",
        seed=args.seed,
        preview_seconds=0.0,
        axis=AXIAL,
    )
    for item in args.set:
        key, _, raw = item.partition("=")
        section, _, field = key.partition(".")
        config[section][field] = _parse_value(raw)
    config = CriiConfig.from_dict(config)
    volume = TrainingVolume(image.array, annotation, image.geometry.zooms, name)
    start = time.perf_counter()
    finished = None
    for event in train(TrainingJob(config, [volume], run_dir)):
        if isinstance(event, Error):
            raise RuntimeError(event.message)
        if isinstance(event, Finished):
            finished = event
    seconds = time.perf_counter() - start
    model, _ = load_model(finished.model_path, torch.device("cpu"))
    prediction = predict_with_config(model, config, image.array, AXIAL, torch.device("cpu"))
    interpolated = interpolate_labels(painted, annotation.annotated, AXIAL, 3, extrapolate=True,
                                      spacing=image.geometry.zooms)  # fmt: skip
    return {
        "case": name,
        "method": args.method,
        "settings": args.set,
        "slices": slices,
        "iterations": finished.iteration,
        "train_seconds": round(seconds, 1),
        "refined": round(mean_dice(prediction.refined, truth, 3), 4),
        "coarse": round(mean_dice(prediction.coarse, truth, 3), 4),
        "interpolation": round(mean_dice(interpolated, truth, 3), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="crii")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/crii-sparse-slices"))
    args = parser.parse_args()
    if not (DATA / "split.json").is_file():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    names = json.loads((DATA / "split.json").read_text())[args.split][: args.cases]
    rows = []
    for name in names:
        row = run_case(name, args, args.run_dir)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as stream:
                stream.write(json.dumps(row) + "\n")
    means = {k: round(float(np.mean([r[k] for r in rows])), 4)
             for k in ("refined", "coarse", "interpolation")}  # fmt: skip
    print(f"MEAN {args.method} {' '.join(args.set)}: {means}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
