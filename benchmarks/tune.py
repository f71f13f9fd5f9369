"""Method variants tried on ``train`` cases only (the test cases stay untouched for reporting).

    python -m benchmarks.tune --variant NAME --method crii --cases 6 --slices 3 \
        --iterations 500 [--set train.augment=none ...]
    python -m benchmarks.tune --summary       # every variant run so far, as a table
    python -m benchmarks.tune --finishing NAME [NAME ...]   # its finishing variants, compared

Appends one row per case to ``benchmarks/results/tuning.jsonl``: the Dice of the final mask
and of the network alone, beside interpolation, of other ways to finish the same network
output (:func:`finishing_labels`, Dice and HD95), and of the final mask made with the EMA teacher's
weights. Every variant that was run stays in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.cases import AXIAL, NUM_CLASSES, data_available, load_case, painted, split_names
from benchmarks.class_split_lesion import SURE, sure_of_class
from benchmarks.real_data import RESULTS, machine
from benchmarks.runs import DEVICE, interpolate_case, make_config, predict_case, score, train_round
from training_backend.cli import _parse_value
from training_backend.inference import load_model, predict_final
from training_backend.metrics import mean_dice
from training_backend.postprocess import keep_annotated_components, split_by_prior
from training_backend.prior import shape_prior
from training_backend.simulate import spread_slices
from training_backend.trainer import TrainingVolume


def finishing_labels(predicted, annotation, case, align: bool) -> dict[str, np.ndarray]:
    """Other ways to finish the same network output (no retraining), as label maps: the late
    blend at other weights, weighted by the prior's confidence, only inside the annotated
    range, on the foreground alone (classes split as the network does), with the classes
    split by the prior (the head/body line drawn by the annotated outlines), and none."""
    probabilities = predicted.extra["probabilities"]
    prior = shape_prior(annotation.labels, annotation.annotated, AXIAL, NUM_CLASSES,
                        extrapolate=True, spacing=case.spacing, align=align)  # fmt: skip
    weights = {
        "none": 0.0,
        "blend-0.3": 0.3,
        "blend-0.5": 0.5,
        "confidence-0.5": 0.5 * prior.confidence[None],
        "confidence-1.0": prior.confidence[None],
    }
    inside = np.zeros(annotation.annotated.shape, np.float32)
    marked = np.flatnonzero(annotation.annotated)
    inside[marked[0] : marked[-1] + 1] = 1.0
    inside = np.expand_dims(inside, tuple(a for a in range(3) if a != AXIAL))[None]
    weights["blend-0.5-inside-range"] = 0.5 * inside
    blends = {
        name: (1.0 - weight) * probabilities + weight * prior.probabilities
        for name, weight in weights.items()
    }
    blends["foreground-blend-0.5"] = _foreground_blend(probabilities, prior.probabilities, 0.5)
    for share in (0.5, 1.0):
        blends[f"blend-0.5-prior-classes-{share:g}"] = split_by_prior(
            blends["blend-0.5"], prior.probabilities[1:], share
        )
    for sure in SURE:  # the network keeps the split it is this sure of
        blends[f"blend-0.5-prior-classes-1-keep-{sure:g}"] = split_by_prior(
            blends["blend-0.5"], prior.probabilities[1:], 1.0,
            keep=sure_of_class(probabilities, sure),
        )  # fmt: skip
    return {
        name: keep_annotated_components(blended.argmax(0).astype(np.uint8), annotation)
        for name, blended in blends.items()
    }


def teacher_dice(trained, case, annotation) -> float | None:
    """Dice of the final mask made with the EMA teacher's weights instead of the student's
    (None without a teacher)."""
    device = torch.device(DEVICE)
    model, data = load_model(trained.model_path, device)
    if data.teacher_state is None:
        return None
    model.load_state_dict(data.teacher_state)
    final = predict_final(model, trained.config, case.image, AXIAL, device, annotation,
                          case.spacing)  # fmt: skip
    return round(mean_dice(final.refined, case.truth, NUM_CLASSES), 4)


def _foreground_blend(network: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """Blend only the foreground probability with the prior; split it among the classes as
    the network does."""
    foreground = (1.0 - weight) * (1.0 - network[0]) + weight * (1.0 - prior[0])
    network_foreground = network[1:].sum(0, keepdims=True)
    prior_share = prior[1:] / np.maximum(prior[1:].sum(0, keepdims=True), 1e-6)
    share = np.where(network_foreground > 1e-6,  # the prior's split where the network has none
                     network[1:] / np.maximum(network_foreground, 1e-6), prior_share)  # fmt: skip
    return np.concatenate([(1.0 - foreground)[None], foreground[None] * share])


def summary(path: Path) -> str:
    """A Markdown table of every variant in ``path``, in the order first run: cases, k,
    iterations, mean Dice of the final mask, per class, and of the network alone."""
    groups: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            groups.setdefault(row["variant"], []).append(row)
    out = [
        "| variant | method | settings | cases | k | iterations | final Dice | class 1 | "
        "class 2 | network alone |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in groups.items():
        first = rows[0]
        settings = ", ".join(f"{k}={v}" for k, v in first["settings"].items()) or "defaults"
        if first.get("note"):
            settings += f" ({first['note']})"
        iterations = sorted({r["iterations"] for r in rows})
        out.append(
            f"| {name} | {first['method']} | {settings} | {len(rows)} | {first['k']} | "
            f"{'/'.join(map(str, iterations))} | {_mean(rows, 'mean_dice'):.3f} | "
            f"{np.mean([r['dice'][0] for r in rows]):.3f} | "
            f"{np.mean([r['dice'][1] for r in rows]):.3f} | {_mean(rows, 'network_dice'):.3f} |"
        )
    return "\n".join(out)


def finishing_summary(path: Path, variants: list[str], reference: str = "blend-0.5") -> str:
    """Per row set: each way to finish the same network output, its mean Dice and HD95 (mm),
    and its Dice minus ``reference`` per case, with wins/losses (``blend-0.5`` is how the
    product finishes ``crii``; ``supervised`` it does not blend)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for variant in variants:
        chosen = [r for r in rows if r["variant"] == variant and "finishing_hd95" in r]
        if not chosen:
            out.append(f"{variant}: no rows with finishing HD95")
            continue
        first = chosen[0]
        out += ["", f"{variant}: {first['method']}, k = {first['k']}, {len(chosen)} cases, "
                f"{first['iterations']} iterations; interpolation (extrapolated) Dice "
                f"{_mean(chosen, 'interpolation_dice'):.3f}", "",
                f"| finishing | mean Dice | HD95 mm | Dice − {reference} | wins/losses |",
                "|---|---|---|---|---|"]  # fmt: skip
        names = [n for n in first["finishing_variants"]
                 if all(n in r["finishing_variants"] for r in chosen)]  # fmt: skip
        for name in names:
            dice = np.array([r["finishing_variants"][name] for r in chosen])
            base = np.array([r["finishing_variants"][reference] for r in chosen])
            hd95 = [r["finishing_hd95"][name] for r in chosen]
            finite = [h for h in hd95 if h is not None]
            distance = f"{np.mean(finite):.2f}" if len(finite) == len(hd95) else "–"
            out.append(f"| {name} | {dice.mean():.3f} | {distance} | "
                       f"{(dice - base).mean():+.3f} | {int((dice > base).sum())}/"
                       f"{int((dice < base).sum())} |")  # fmt: skip
    return "\n".join(out).strip()


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", help="a name for this row set")
    parser.add_argument("--summary", action="store_true",
                        help="print a table of every variant in --out and stop")  # fmt: skip
    parser.add_argument("--finishing", nargs="+", metavar="VARIANT",
                        help="compare the finishing of these row sets and stop")  # fmt: skip
    parser.add_argument("--method", default="crii")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--first-case", type=int, default=0)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS / "tuning.jsonl")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(args.out))
        return 0
    if args.finishing:
        print(finishing_summary(args.out, args.finishing))
        return 0
    if not args.variant:
        parser.error("--variant is required to run a variant")
    if not data_available():
        print("the hippocampus data is not beside the repository", file=sys.stderr)
        return 2
    overrides = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        overrides[key] = _parse_value(raw)
    names = split_names("train")[args.first_case : args.first_case + args.cases]
    rows = []
    for name in names:
        case = load_case(name)
        slices = spread_slices(case.truth, AXIAL, args.slices)
        labels, annotation = painted(case, slices)
        config = make_config(args.method, args.iterations, args.seed, overrides)
        volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
        with tempfile.TemporaryDirectory() as scratch:
            trained = train_round(config, [volume], Path(scratch))
            predicted = predict_case(trained, case, annotation)
            teacher = teacher_dice(trained, case, annotation)
        align = config.loss.prior_align
        interpolated = interpolate_case(
            "interpolation-extrapolated" + ("" if align else "-unaligned"), labels, annotation, case
        )
        finished = {n: score(m, case) for n, m in finishing_labels(predicted, annotation, case,
                                                                   align).items()}  # fmt: skip
        row = {
            "variant": args.variant,
            "method": args.method,
            "settings": overrides,
            "case": name,
            "k": args.slices,
            "seed": args.seed,
            "iterations": trained.iterations,
            "train_seconds": round(trained.train_seconds, 2),
            **score(predicted.labels, case),
            "network_dice": round(mean_dice(predicted.extra["network"], case.truth, 3), 4),
            "interpolation_dice": score(interpolated.labels, case)["mean_dice"],
            "finishing_variants": {n: v["mean_dice"] for n, v in finished.items()},
            "finishing_hd95": {n: v["mean_hd95"] for n, v in finished.items()},
            "teacher_dice": teacher,
            "machine": machine(),
        }
        rows.append(row)
        with open(args.out, "a") as stream:
            stream.write(json.dumps(row) + "\n")
        print(f"{name} final {row['mean_dice']:.3f} network {row['network_dice']:.3f} "
              f"interp {row['interpolation_dice']:.3f} {row['finishing_variants']} "
              f"HD95 {row['finishing_hd95']}",
              file=sys.stderr, flush=True)  # fmt: skip
    mean = sum(r["mean_dice"] for r in rows) / len(rows)
    network = sum(r["network_dice"] for r in rows) / len(rows)
    print(f"MEAN {args.variant}: final {mean:.4f} network {network:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
