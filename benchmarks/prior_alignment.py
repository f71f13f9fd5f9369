"""Shape-based interpolation with and without aligned outlines, on every ``train`` case.

    python -m benchmarks.prior_alignment > benchmarks/results/prior-alignment.txt

No learning: the truth is painted on k evenly spread axial slices, interpolated between them
(and beyond, ``extrapolated``), and scored against the whole truth. Tuning data only.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from benchmarks.cases import AXIAL, NUM_CLASSES, load_case, painted, split_names
from benchmarks.real_data import machine
from training_backend.metrics import dice_per_class
from training_backend.prior import interpolate_labels
from training_backend.simulate import spread_slices

SLICE_COUNTS = (2, 3, 5)


def scores(case_names: list[str]) -> dict[tuple[int, bool, bool], np.ndarray]:
    """Per (k, extrapolate, align): Dice per case and foreground class, shape (cases, K-1)."""
    out: dict[tuple[int, bool, bool], list[list[float]]] = {}
    for name in case_names:
        case = load_case(name)
        for k in SLICE_COUNTS:
            labels, annotation = painted(case, spread_slices(case.truth, AXIAL, k))
            for extrapolate, align in itertools.product((False, True), repeat=2):
                result = interpolate_labels(labels, annotation.annotated, AXIAL, NUM_CLASSES,
                                            extrapolate, case.spacing, align)  # fmt: skip
                dice = dice_per_class(result, case.truth, NUM_CLASSES)
                out.setdefault((k, extrapolate, align), []).append(
                    [dice[c] for c in range(1, NUM_CLASSES)]
                )
    return {key: np.array(rows) for key, rows in out.items()}


def table(results: dict[tuple[int, bool, bool], np.ndarray]) -> str:
    lines = [
        "| k | extrapolated | aligned | cases | Dice anterior | Dice posterior | mean Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for (k, extrapolate, align), dice in sorted(results.items()):
        anterior, posterior = dice.mean(axis=0)
        lines.append(
            f"| {k} | {'yes' if extrapolate else 'no'} | {'yes' if align else 'no'} | "
            f"{len(dice)} | {anterior:.3f} | {posterior:.3f} | {dice.mean():.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, help="only the first N train cases")
    args = parser.parse_args(argv)
    names = split_names("train")[: args.cases]
    print(f"python -m benchmarks.prior_alignment ({len(names)} train cases, {machine()})\n")
    print(table(scores(names)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
