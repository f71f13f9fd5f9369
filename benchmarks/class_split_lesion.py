"""Does splitting the classes by the shape prior erase a lesion? Checked on the phantom.

    python -m benchmarks.class_split_lesion [--seeds 0 1 2] [--slices 3] [--iterations 600]

The phantom (``training_backend.phantom``: an organ with a low-contrast lesion inside, 2 mm
slices) is the case the class split is risky for: the lesion is painted on at most one of a
few annotated slices, and the prior, interpolated between them, fades it out midway while
the organ goes on. Per phantom seed, ``crii`` is trained once on k evenly spread slices; the
same network output is finished with the late blend alone, with the classes split by the
prior everywhere (``predict.prior_class_max_contrast=null``), only between classes that look
alike (the product's default rule), only for the classes the prior holds within a reach
(mm), and only where the network is unsure (it keeps the split where it gives one class a
share of at least 0.7 to 0.95). Prints per finishing the Dice of the organ
and of the lesion, and the share of the lesion's voxels found; writes the table to
``benchmarks/results/class-split-lesion-kK.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.cases import AXIAL, Case, painted
from benchmarks.real_data import RESULTS, machine
from benchmarks.runs import make_config, predict_case, train_round
from training_backend.annotations import SparseAnnotation
from training_backend.config import PredictConfig
from training_backend.metrics import dice_per_class
from training_backend.phantom import phantom_as_nifti
from training_backend.postprocess import (
    alike_classes,
    blend_with_prior,
    class_contrast,
    keep_annotated_components,
    split_by_prior,
)
from training_backend.prior import shape_prior
from training_backend.simulate import spread_slices
from training_backend.trainer import TrainingVolume

LESION = 2
REACHES = (3.0, 6.0, 10.0)
"""Reaches (mm) tried for the limited split: about one, two and three 2 mm slices and more."""
SURE = (0.7, 0.8, 0.9, 0.95)
"""Shares of the foreground above which the network's own split is kept."""
MAX_CONTRAST = PredictConfig().prior_class_max_contrast or 0.0
"""The product's contrast limit (its default is set: a limit of 0 would split nothing)."""


def within_reach(
    regions: np.ndarray, reach: float, spacing: tuple[float, float, float] | None = None
) -> np.ndarray:
    """Per class (first axis), the voxels at most ``reach`` mm from that class's region
    (nowhere for a class with no region)."""
    near = np.zeros(regions.shape, dtype=bool)
    for index, region in enumerate(regions):
        if region.any():
            distance = ndimage.distance_transform_edt(~region, sampling=spacing)
            near[index] = distance <= reach
    return near


def sure_of_class(probabilities: np.ndarray, share: float) -> np.ndarray:
    """Where ``probabilities`` (K, ...) give one foreground class at least ``share`` of
    their foreground."""
    foreground = np.maximum(probabilities[1:].sum(0), 1e-6)
    return probabilities[1:].max(0) / foreground >= share


def phantom_case(seed: int) -> Case:
    image, truth, geometry = phantom_as_nifti(seed)
    return Case(f"phantom-{seed}", image, truth.astype(np.int64), tuple(geometry.zooms))


def finished(
    probabilities: np.ndarray, annotation: SparseAnnotation, case: Case
) -> dict[str, np.ndarray]:
    """Finishing name -> final labels of the same network output: the late blend (weight 0.5)
    alone, with the classes split by the prior everywhere, only between classes the image
    does not tell apart (the product's rule, ``predict.prior_class_max_contrast``), only
    within a reach of the classes the prior holds, and only where the network is unsure."""
    prior = shape_prior(annotation.labels, annotation.annotated, AXIAL, 3, extrapolate=True,
                        spacing=case.spacing, align=True)  # fmt: skip
    plain = 0.5 * probabilities + 0.5 * prior.probabilities
    prior_classes = prior.probabilities[1:]
    groups = alike_classes(class_contrast(case.image, annotation), MAX_CONTRAST)
    blends = {
        "blend-0.5": plain,
        "class-split-1": split_by_prior(plain, prior_classes, 1.0),
        f"class-split-1-alike-{MAX_CONTRAST:g}": blend_with_prior(
            probabilities.copy(), annotation, 0.5, case.spacing, True, 1.0, groups
        ),
    }
    for reach in REACHES:
        near = within_reach(prior_classes >= 0.5, reach, case.spacing)
        blends[f"class-split-1-reach-{reach:g}mm"] = split_by_prior(
            plain, prior_classes, 1.0, speaks_for=near
        )
    for sure in SURE:
        blends[f"class-split-1-keep-{sure:g}"] = split_by_prior(
            plain, prior_classes, 1.0, keep=sure_of_class(probabilities, sure)
        )
    return {
        name: keep_annotated_components(blended.argmax(0).astype(np.uint8), annotation)
        for name, blended in blends.items()
    }


def lesion_found(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of the lesion's voxels labeled lesion."""
    lesion = truth == LESION
    return float((labels[lesion] == LESION).mean())


def network_output(
    case: Case,
    annotation: SparseAnnotation,
    iterations: int,
    seed: int,
    run_dir: Path,
    keep: Path | None,
) -> np.ndarray:
    """The trained network's probabilities, read from ``keep`` when an earlier run with the
    same case, slices, iterations and seed stored them there (to try finishings alone)."""
    slices = np.flatnonzero(annotation.annotated)
    stored = None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        stored = keep / f"{case.name}-{'-'.join(map(str, slices))}-{iterations}-{seed}.npy"
        if stored.is_file():
            return np.load(stored)
    volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
    trained = train_round(make_config("crii", iterations, seed), [volume], run_dir)
    probabilities = predict_case(trained, case, annotation).extra["probabilities"]
    if stored is not None:
        np.save(stored, probabilities)
    return probabilities


def run_seed(
    seed: int, slice_count: int, iterations: int, run_dir: Path, keep: Path | None
) -> list[dict]:
    case = phantom_case(seed)
    slices = spread_slices(case.truth, AXIAL, slice_count)
    _, annotation = painted(case, slices)
    painted_with_lesion = [s for s in slices if np.any(case.truth[..., s] == LESION)]
    probabilities = network_output(case, annotation, iterations, seed, run_dir, keep)
    contrast = float(class_contrast(case.image, annotation)[0, 1])
    rows = []
    for name, labels in finished(probabilities, annotation, case).items():
        dice = dice_per_class(labels, case.truth, 3)
        rows.append(
            {
                "case": case.name,
                "finishing": name,
                "slices": slices,
                "lesion_slices_painted": len(painted_with_lesion),
                "contrast": round(contrast, 3),
                "organ_dice": round(dice[1], 4),
                "lesion_dice": round(dice[2], 4),
                "lesion_found": round(lesion_found(labels, case.truth), 4),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| finishing | organ Dice | lesion Dice | lesion voxels found | lesion Dice per seed |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["finishing"] for r in rows):
        chosen = [r for r in rows if r["finishing"] == name]
        per_seed = " / ".join(f"{r['lesion_dice']:.3f}" for r in chosen)
        lines.append(
            f"| {name} | {np.mean([r['organ_dice'] for r in chosen]):.3f} | "
            f"{np.mean([r['lesion_dice'] for r in chosen]):.3f} | "
            f"{np.mean([r['lesion_found'] for r in chosen]):.3f} | {per_seed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--out", type=Path, help="default: results/class-split-lesion-kK.md")
    parser.add_argument(
        "--keep", type=Path, help="store the network outputs here and reuse them on a rerun"
    )
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / f"class-split-lesion-k{args.slices}.md"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            rows += run_seed(
                seed, args.slices, args.iterations, Path(scratch) / str(seed), args.keep
            )
    painted_counts = ", ".join(
        f"{r['case']} {r['lesion_slices_painted']} (organ-lesion contrast {r['contrast']:.2f})"
        for r in rows
        if r["finishing"] == "blend-0.5"
    )
    text = [
        f"# Class split and the phantom's lesion: crii, k = {args.slices}, "
        f"{args.iterations} iterations",
        "",
        f"Made by `python -m benchmarks.class_split_lesion --seeds "
        f"{' '.join(map(str, args.seeds))} --slices {args.slices} --iterations "
        f"{args.iterations}` on {machine()}. Annotated slices holding lesion: {painted_counts}.",
        "",
        *table(rows),
        "",
    ]
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
