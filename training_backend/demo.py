"""``crii demo``: the whole loop on the synthetic phantom, with known truth.

Makes the phantom, annotates about 4% of its axial slices from the truth, trains CRII-Net,
predicts, writes NIfTI volumes and one PNG figure, and prints the Dice against the truth
beside shape-based interpolation between the same slices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from training_backend.annotations import SparseAnnotation
from training_backend.config import CriiConfig
from training_backend.console import ConsoleReporter
from training_backend.devices import resolve_device
from training_backend.errors import TrainingError
from training_backend.events import Error, Finished
from training_backend.inference import (
    describe_class_borders,
    load_model,
    predict_final,
    suggest_slices,
)
from training_backend.io import write_volume
from training_backend.metrics import dice_per_class
from training_backend.phantom import phantom_as_nifti
from training_backend.prior import interpolate_labels
from training_backend.simulate import slices_for_fraction, sparse_labels
from training_backend.trainer import TrainingJob, TrainingVolume, train

CLASS_NAMES = {1: "organ", 2: "lesion"}


def run_demo(out: Path, seconds: float = 60.0, device: str = "auto", seed: int = 0) -> dict:
    """Run the demo; return the Dice figures. Files land in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    axis = 2
    image, truth, geometry = phantom_as_nifti(seed)
    slices = slices_for_fraction(truth, axis, fraction=0.04)
    labels = sparse_labels(truth, axis, slices)
    for name, array in (("image", image), ("truth", truth), ("annotations", labels)):
        write_volume(out / f"{name}.nii.gz", array, geometry)
    annotation = SparseAnnotation.from_labels(labels, image.shape, axis, num_classes=3)
    config = CriiConfig()
    config.model.num_classes = 3
    config.train.seconds = seconds
    config.train.device = device
    config.train.seed = seed
    config.train.axis = axis
    print(
        f"phantom {image.shape}, annotated axial slices {slices} "
        f"({len(slices)} of {image.shape[axis]}, {100 * len(slices) / image.shape[axis]:.1f}%)",
        file=sys.stderr,
    )
    job = TrainingJob(
        config=config,
        volumes=[TrainingVolume(image, annotation, geometry.zooms, "phantom")],
        run_dir=out / "run",
    )
    reporter = ConsoleReporter()
    model_path = None
    for event in train(job):
        reporter(event)
        if isinstance(event, Error):
            raise TrainingError(event.message)
        if isinstance(event, Finished):
            model_path = event.model_path
    torch_device = resolve_device(device)
    model, _ = load_model(model_path, torch_device)
    prediction = predict_final(model, config, image, axis, torch_device, annotation, geometry.zooms)
    for name in ("refined", "coarse", "hardness"):
        write_volume(out / f"{name}.nii.gz", getattr(prediction, name), geometry)
    scores = prediction.slice_scores(axis)
    suggestions = suggest_slices(scores, annotation.annotated, count=5)
    interpolated = interpolate_labels(
        labels, annotation.annotated, axis, 3, extrapolate=True, spacing=geometry.zooms
    )
    results = {
        "refined": dice_per_class(prediction.refined, truth, 3),
        "coarse": dice_per_class(prediction.coarse, truth, 3),
        "interpolation": dice_per_class(interpolated, truth, 3),
    }
    figure = save_figure(
        out / "demo.png", image, truth, prediction, scores, slices, suggestions, axis
    )
    print("\nDice against the truth (organ, lesion, mean):")
    for name, per_class in results.items():
        values = [per_class[k] for k in (1, 2)]
        print(f"  {name:14s} {values[0]:.3f}  {values[1]:.3f}  {np.mean(values):.3f}")
    borders = describe_class_borders(config, annotation, image)
    if borders:
        print(borders)
    print(f"annotate next: {[s for s, _ in suggestions]}")
    print(f"wrote {out}/{{image,truth,annotations,refined,coarse,hardness}}.nii.gz, {figure}")
    return results


def save_figure(path, image, truth, prediction, scores, annotated, suggestions, axis) -> Path:
    """One PNG: image, coarse, refined, hardness on an unannotated slice, and slice scores."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    # an unannotated slice through the middle of the structure: where the network's work shows
    other = tuple(a for a in range(3) if a != axis)
    area = (truth > 0).sum(axis=other).astype(float)
    area[list(annotated)] = -1.0
    index = int(np.argmax(area))
    take = lambda volume: np.take(volume, index, axis=axis).T  # noqa: E731
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    panels = [
        ("image", take(image), "gray", None),
        ("coarse", take(prediction.coarse), "viridis", (0, 2)),
        ("refined", take(prediction.refined), "viridis", (0, 2)),
        ("hardness", take(prediction.hardness), "inferno", (0, 0.5)),
    ]
    for ax, (title, data, cmap, limits) in zip(axes, panels, strict=False):
        ax.imshow(
            data,
            cmap=cmap,
            origin="lower",
            vmin=None if limits is None else limits[0],
            vmax=None if limits is None else limits[1],
            interpolation="nearest",
        )
        ax.contour(take(truth) > 0, levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"{title} (slice {index})")
        ax.axis("off")
    ax = axes[4]
    ax.plot(scores, color="black", lw=1)
    for s in annotated:
        ax.axvline(s, color="tab:green", lw=1.5)
    for s, v in suggestions:
        ax.plot(s, v, "o", color="tab:red")
    ax.set_title("slice hardness; annotated (green), next (red)", fontsize=9)
    ax.set_xlabel("axial slice")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
