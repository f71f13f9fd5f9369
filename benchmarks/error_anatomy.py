"""Where the far errors of a method lie: wrong class, or outside the structure.

    python -m benchmarks.error_anatomy --cases 8 > benchmarks/results/error-anatomy.txt

For the first N ``train`` cases (tuning data: what this shows may guide a change), k axial
slices are painted from the truth; ``crii`` and ``supervised`` train at the iterations of the
``long`` setting (60 s rounds on the 2-core CPU), interpolation runs beside them. For each
foreground class, the false-positive voxels more than ``--margin`` mm from that class in the
truth are split by what the truth holds there: the other foreground class (the two classes
confused inside the structure) or background (a spill outside it). HD95 per class is shown
beside the HD95 of the foreground with the classes merged: where the merged one is small and
the per-class one large, the far errors are class confusion, not stray voxels.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.cases import AXIAL, NUM_CLASSES, load_case, painted, split_names
from benchmarks.protocols import Rates
from benchmarks.real_data import RESULTS, machine
from benchmarks.runs import interpolate_case, make_config, predict_case, train_round
from training_backend.metrics import hausdorff95
from training_backend.simulate import spread_slices
from training_backend.trainer import TrainingVolume

LEARNED = ("crii", "supervised")
INTERPOLATION = "interpolation-extrapolated"


@dataclass(frozen=True)
class FarErrors:
    """One class's false positives, and those of them farther than the margin from the class
    in the truth, split by the truth's label there."""

    false_positive: int
    far: int
    far_in_other_class: int
    far_in_background: int


def far_errors(
    prediction: np.ndarray,
    truth: np.ndarray,
    label: int,
    spacing: tuple[float, ...],
    margin_mm: float,
) -> FarErrors:
    """:class:`FarErrors` of class ``label``; with the class absent from the truth, every
    false positive counts as far."""
    wrong = (prediction == label) & (truth != label)
    if np.any(truth == label):
        distance = ndimage.distance_transform_edt(truth != label, sampling=spacing)
        far = wrong & (distance > margin_mm)
    else:
        far = wrong
    in_background = int(np.count_nonzero(far & (truth == 0)))
    count = int(np.count_nonzero(far))
    return FarErrors(int(np.count_nonzero(wrong)), count, count - in_background, in_background)


def anatomy(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], margin_mm: float
) -> dict[str, Any]:
    """Per class: far errors and HD95; and the HD95 of the merged foreground."""
    classes = range(1, NUM_CLASSES)
    return {
        "far": [far_errors(prediction, truth, c, spacing, margin_mm) for c in classes],
        "hd95": [hausdorff95(prediction, truth, c, spacing) for c in classes],
        "hd95_foreground": hausdorff95(
            (prediction > 0).astype(np.uint8), (truth > 0).astype(np.uint8), 1, spacing
        ),
    }


def long_rates() -> Rates:
    """The rates of the ``long`` setting: its rows and these runs train the same iterations."""
    stored = json.loads((RESULTS / "long" / "rates.json").read_text())
    return Rates(
        stored["iterations_per_second"], stored["setup_seconds"], stored["case"], stored["slices"]
    )


def run(names: list[str], k: int, seed: int, margin_mm: float, run_dir: Path) -> list[dict]:
    rates = long_rates()
    rows = []
    for name in names:
        case = load_case(name)
        labels, annotation = painted(case, spread_slices(case.truth, AXIAL, k))
        predictions = {INTERPOLATION: interpolate_case(INTERPOLATION, labels, annotation, case)}
        volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
        for method in LEARNED:
            config = make_config(method, rates.iterations(method, 60.0), seed)
            predictions[method] = predict_case(train_round(config, [volume], run_dir), case,
                                               annotation)  # fmt: skip
        for method, predicted in predictions.items():
            result = anatomy(predicted.labels, case.truth, case.spacing, margin_mm)
            rows.append({"case": name, "method": method, **result})
    return rows


def _mean(values: list[float | None]) -> str:
    defined = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.mean(defined):.2f}" if defined else "–"


def table(rows: list[dict], margin_mm: float) -> str:
    lines = [
        f"| method | class | false positives | of them > {margin_mm:g} mm from the class "
        "| … in the other class | … in background | HD95 mm (class) | HD95 mm (foreground) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in [*LEARNED, INTERPOLATION]:
        chosen = [r for r in rows if r["method"] == method]
        for index in range(NUM_CLASSES - 1):
            far = [r["far"][index] for r in chosen]
            lines.append(
                f"| {method} | {index + 1} | {sum(f.false_positive for f in far)} | "
                f"{sum(f.far for f in far)} | {sum(f.far_in_other_class for f in far)} | "
                f"{sum(f.far_in_background for f in far)} | "
                f"{_mean([r['hd95'][index] for r in chosen])} | "
                f"{_mean([r['hd95_foreground'] for r in chosen])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="the first N train cases")
    parser.add_argument("--slices", type=int, default=2, help="annotated axial slices (k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=5.0, help="mm; farther is 'far'")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/error-anatomy"))
    args = parser.parse_args(argv)
    names = split_names("train")[: args.cases]
    rows = run(names, args.slices, args.seed, args.margin, args.run_dir)
    print(
        f"python -m benchmarks.error_anatomy --cases {args.cases} --slices {args.slices} "
        f"--seed {args.seed} --margin {args.margin:g} ({len(names)} train cases, {machine()}; "
        "sums over cases, HD95 means over cases)\n"
    )
    print(table(rows, args.margin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
