"""One benchmark run: train a method (or interpolate), predict the volume, score it.

Learned methods go through the product's own path: ``training_backend.trainer.train`` with a
:class:`CriiConfig`, then :func:`training_backend.inference.finish_prediction`: the masks
the plugin and the ``crii`` command show. Budgets are iterations, so a figure does not depend
on how busy the machine was; equal wall-clock comparisons convert seconds to iterations with
rates measured side by side (:mod:`benchmarks.protocols`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cases import AXIAL, NUM_CLASSES, Case
from training_backend.annotations import SparseAnnotation
from training_backend.config import CriiConfig
from training_backend.events import Error, Finished
from training_backend.inference import finish_prediction, load_model, predict_with_config
from training_backend.metrics import dice_per_class, hausdorff95_per_class
from training_backend.prior import interpolate_labels
from training_backend.trainer import TrainingJob, TrainingVolume, train

INTERPOLATION_METHODS = (
    "interpolation",
    "interpolation-extrapolated",
    "interpolation-unaligned",
    "interpolation-extrapolated-unaligned",
)
"""Shape-based interpolation between the painted slices: within their range only or also
beyond it (``extrapolated``), with the outlines aligned (the default of
:func:`~training_backend.prior.interpolate_labels`) or blended where they lie (``unaligned``,
the plain signed-distance blend)."""
DEVICE = "cpu"
"""Where learned methods train and predict; ``--device`` of the runner sets it."""


@dataclass
class Trained:
    """A finished training round: its model and what it cost."""

    model_path: Path
    config: CriiConfig
    iterations: int
    train_seconds: float


@dataclass
class Predicted:
    """Labels for one volume, the slice scores for suggestions, and the seconds it took."""

    labels: np.ndarray
    slice_scores: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def make_config(
    method: str, iterations: int, seed: int, overrides: dict[str, Any] | None = None
) -> CriiConfig:
    """The product's defaults with an iteration budget, on :data:`DEVICE`, without previews,
    and without the prior's class split (``predict.prior_class_split``): the rows named
    ``crii`` were all made without it, and it is reported as a row of its own
    (``benchmarks.protocols.REFINISHED``)."""
    data = CriiConfig().to_dict()
    data["model"]["num_classes"] = NUM_CLASSES
    data["predict"]["prior_class_split"] = 0.0
    data["train"].update(
        method=method,
        iterations=int(iterations),
        seconds=None,
        device=DEVICE,
        seed=int(seed),
        preview_seconds=0.0,
        axis=AXIAL,
        log_every=50,
        checkpoint_every=1_000_000,
    )
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        data[section][name] = value
    return CriiConfig.from_dict(data)


def train_round(
    config: CriiConfig,
    volumes: list[TrainingVolume],
    run_dir: Path,
    init_model: Path | None = None,
) -> Trained:
    """Train; raise on an ``Error`` event."""
    start = time.perf_counter()
    finished = None
    job = TrainingJob(config, volumes, Path(run_dir), init_model=init_model)
    for event in train(job):
        if isinstance(event, Error):
            raise RuntimeError(f"training failed: {event.message}")
        if isinstance(event, Finished):
            finished = event
    if finished is None:
        raise RuntimeError("training ended without a Finished event")
    return Trained(
        Path(finished.model_path), config, finished.iteration, time.perf_counter() - start
    )


def predict_case(
    trained: Trained, case: Case, annotation: SparseAnnotation | None = None
) -> Predicted:
    """The final labels the product shows for ``case`` (with the annotation's shape prior
    where the method uses one) and per-slice hardness scores."""
    device = torch.device(DEVICE)
    model, _ = load_model(trained.model_path, device)
    start = time.perf_counter()
    network = predict_with_config(model, trained.config, case.image, AXIAL, device)
    final = finish_prediction(network, trained.config, AXIAL, annotation, case.spacing, case.image)
    seconds = time.perf_counter() - start
    extra = {"network": network.refined, "probabilities": network.probabilities}
    return Predicted(final.refined, final.slice_scores(AXIAL), seconds, extra)


def interpolate_case(
    method: str, painted_labels: np.ndarray, annotation: SparseAnnotation, case: Case
) -> Predicted:
    """Shape-based interpolation between the painted slices (see
    :data:`INTERPOLATION_METHODS`)."""
    start = time.perf_counter()
    labels = interpolate_labels(
        painted_labels,
        annotation.annotated,
        AXIAL,
        NUM_CLASSES,
        extrapolate="extrapolated" in method,
        spacing=case.spacing,
        align=not method.endswith("-unaligned"),
    )
    return Predicted(labels, None, time.perf_counter() - start)


def score(labels: np.ndarray, case: Case) -> dict[str, Any]:
    """Dice per class and mean, HD95 per class and mean in mm (``None`` where one side is
    empty and the distance is undefined)."""
    dice = dice_per_class(labels, case.truth, NUM_CLASSES)
    hd95 = hausdorff95_per_class(labels, case.truth, NUM_CLASSES, case.spacing)
    finite = [h for h in hd95 if np.isfinite(h)]
    return {
        "dice": [round(dice[k], 4) for k in range(1, NUM_CLASSES)],
        "mean_dice": round(float(np.mean(list(dice.values()))), 4),
        "hd95": [round(float(h), 3) if np.isfinite(h) else None for h in hd95],
        "mean_hd95": round(float(np.mean(finite)), 3) if len(finite) == len(hd95) else None,
    }
