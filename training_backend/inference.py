"""Whole-volume prediction, the hard-boundary map and the ranked slice suggestions."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training_backend import losses
from training_backend.annotations import SparseAnnotation
from training_backend.checkpoint import CheckpointData, load_checkpoint
from training_backend.config import CriiConfig, LossConfig, PredictConfig
from training_backend.devices import autocast_for
from training_backend.model import CRIINet, build_model
from training_backend.postprocess import (
    alike_classes,
    blend_with_prior,
    class_contrast,
    keep_annotated_components,
)
from training_backend.volumes import context_stack, normalize_intensity, round_up

SUGGESTION_REACH_SLICES = 1
"""Slices beyond the predicted structure that suggestions may still pick (its ends)."""


@dataclass
class VolumePrediction:
    """Outputs in the array order of the input volume."""

    refined: np.ndarray  # uint8 labels
    coarse: np.ndarray  # uint8 labels
    probabilities: np.ndarray  # float32 (K, *shape): refined softmax (blended once finished)
    hardness: np.ndarray  # float32 in [0, 1]

    def slice_scores(self, axis: int, reach: int = SUGGESTION_REACH_SLICES) -> np.ndarray:
        """Mean hardness of each slice along ``axis``; 0 on slices more than ``reach`` slices
        from any slice where the refined labels hold foreground (all count when none does).

        Unsure background far beyond the structure scored high and drew suggestions there,
        where an annotation teaches little (benchmarks/results: annotate-next)."""
        other = tuple(a for a in range(3) if a != axis)
        scores = self.hardness.mean(axis=other)
        holding = np.any(self.refined != 0, axis=other)
        if holding.any():
            near = holding.copy()
            for shift in range(1, min(reach, holding.size - 1) + 1):
                near[shift:] |= holding[:-shift]
                near[:-shift] |= holding[shift:]
            scores = np.where(near, scores, 0.0)
        return scores


def load_model(
    path: str | Path, device: torch.device, num_classes: int | None = None
) -> tuple[CRIINet, CheckpointData]:
    """Rebuild the network from a checkpoint, in eval mode on ``device``."""
    data = load_checkpoint(path, num_classes=num_classes)
    model = build_model(data.config.model, device)
    model.load_state_dict(data.model_state)
    return model.eval(), data


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    image: np.ndarray,
    indices: Sequence[int],
    context: int,
    device: torch.device,
    autocast: Callable[[], object],
    axis: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse and refined probabilities (N, K, A, B), float32 on ``device``, for planes along
    ``axis`` of a normalised volume; planes are padded to the network's multiple and cropped
    back."""
    multiple = 2 ** (model.config.levels - 1)
    height, width = (n for a, n in enumerate(image.shape) if a != axis)
    stack = torch.from_numpy(np.ascontiguousarray(context_stack(image, indices, context, axis)))
    pad = (0, round_up(width, multiple) - width, 0, round_up(height, multiple) - height)
    stack = F.pad(stack, pad).to(device, memory_format=torch.channels_last)
    with autocast():
        out = model(stack)
    coarse = torch.softmax(out.coarse.float(), dim=1)[..., :height, :width]
    refined = torch.softmax(out.refined.float(), dim=1)[..., :height, :width]
    return coarse, refined


def _predict_planes(
    model: CRIINet,
    volume: np.ndarray,
    axis: int,
    context: int,
    device: torch.device,
    autocast: Callable[[], object],
    batch_size: int,
    loss_config: LossConfig | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Coarse and refined probabilities (K, *volume.shape) from planes along ``axis``, and the
    hardness map of those planes when ``loss_config`` is given."""
    num_classes = model.config.num_classes
    count = volume.shape[axis]
    plane_shape = tuple(n for a, n in enumerate(volume.shape) if a != axis)
    coarse_all = np.empty((count, num_classes, *plane_shape), np.float32)
    refined_all = np.empty((count, num_classes, *plane_shape), np.float32)
    hardness = None if loss_config is None else np.empty((count, *plane_shape), np.float32)
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        coarse, refined = predict_slices(model, volume, indices, context, device, autocast, axis)
        stop = start + len(indices)
        if hardness is not None:  # on the device: the largest tensor work of inference
            hardness[start:stop] = (
                losses.pixel_hardness(
                    refined,
                    coarse,
                    patch_size=loss_config.patch_size,
                    hard_pixels=loss_config.hard_pixels,
                    margin=loss_config.margin,
                )
                .cpu()
                .numpy()
            )
        coarse_all[start:stop] = coarse.cpu().numpy()
        refined_all[start:stop] = refined.cpu().numpy()
    # (S, K, A, B) -> (K, *volume.shape) with S back at ``axis``
    to_volume = lambda a: np.moveaxis(np.moveaxis(a, 1, 0), 1, axis + 1)  # noqa: E731
    return (
        to_volume(coarse_all),
        to_volume(refined_all),
        None if hardness is None else np.moveaxis(hardness, 0, axis),
    )


def predict_volume(
    model: CRIINet,
    image: np.ndarray,
    axis: int,
    context: int,
    device: torch.device,
    batch_size: int = 16,
    mixed_precision: bool = True,
    loss_config: LossConfig | None = None,
    normalized: bool = False,
    all_orientations: bool = False,
) -> VolumePrediction:
    """Predict every slice along ``axis`` in batches; returns labels, probabilities, hardness.

    With ``all_orientations`` the probabilities are the mean of the predictions along the
    three axes (for a model trained on all orientations); hardness comes from ``axis``.
    """
    loss_config = loss_config or LossConfig()
    was_training = model.training
    model.eval()
    autocast = autocast_for(device, mixed_precision)
    volume = image if normalized else normalize_intensity(image)
    coarse, refined, hardness = _predict_planes(
        model, volume, axis, context, device, autocast, batch_size, loss_config
    )
    if all_orientations:
        for other in (a for a in range(3) if a != axis):
            more_coarse, more_refined, _ = _predict_planes(
                model, volume, other, context, device, autocast, batch_size, None
            )
            coarse += more_coarse
            refined += more_refined
        coarse /= 3.0
        refined /= 3.0
    model.train(was_training)
    return VolumePrediction(
        refined=refined.argmax(0).astype(np.uint8),
        coarse=coarse.argmax(0).astype(np.uint8),
        probabilities=refined,
        hardness=hardness,
    )


def predict_with_config(
    model: CRIINet, config: CriiConfig, image: np.ndarray, axis: int, device: torch.device
) -> VolumePrediction:
    """:func:`predict_volume` with the context, precision, losses and orientations a model was
    trained with."""
    return predict_volume(
        model,
        image,
        axis,
        config.train.context,
        device,
        mixed_precision=config.train.mixed_precision,
        loss_config=config.loss,
        all_orientations=config.train.orientations == "all",
    )


def predict_final(
    model: CRIINet,
    config: CriiConfig,
    image: np.ndarray,
    axis: int,
    device: torch.device,
    annotation: SparseAnnotation | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> VolumePrediction:
    """The mask a person sees: :func:`predict_with_config`, then :func:`finish_prediction`."""
    prediction = predict_with_config(model, config, image, axis, device)
    return finish_prediction(prediction, config, axis, annotation, spacing, image)


def finish_prediction(
    prediction: VolumePrediction,
    config: CriiConfig,
    axis: int,
    annotation: SparseAnnotation | None,
    spacing: tuple[float, float, float] | None = None,
    image: np.ndarray | None = None,
) -> VolumePrediction:
    """When the annotation of the image is known: the late average with its shape prior
    (``crii`` with the prior) and the removal of components that touch no annotated voxel
    (``config.predict``). Coarse labels and hardness stay the network's own. Returns a new
    prediction; ``prediction`` is left as it was. The prior splits the foreground among the
    classes (``predict.prior_class_split``) only between classes that look alike in ``image``
    (:func:`class_groups`); without the image, only where no contrast limit is set."""
    if annotation is None or annotation.axis != axis or not annotation.annotated.any():
        return prediction
    settings = config.predict
    probabilities, refined = prediction.probabilities, prediction.refined
    if blends_with_prior(config):
        probabilities = blend_with_prior(
            probabilities,
            annotation,
            settings.prior_blend,
            spacing,
            config.loss.prior_align,
            settings.prior_class_split,
            class_groups(settings, annotation, image) if settings.prior_class_split > 0 else [],
        )
        refined = probabilities.argmax(0).astype(np.uint8)
    if settings.keep_annotated_components:
        refined = keep_annotated_components(refined, annotation)
    return dataclasses.replace(prediction, probabilities=probabilities, refined=refined)


def blends_with_prior(config: CriiConfig) -> bool:
    """Whether the final mask averages the network with the shape prior: ``crii`` with the
    prior (it is part of that method) and a blend weight above 0."""
    return (
        config.train.method == "crii" and config.loss.use_prior and config.predict.prior_blend > 0
    )


def class_groups(
    settings: PredictConfig, annotation: SparseAnnotation, image: np.ndarray | None
) -> list[list[int]] | None:
    """The groups of classes the prior's class split acts within (None: all classes)."""
    if settings.prior_class_max_contrast is None:
        return None
    if image is None:
        return []  # the contrast cannot be judged: the classes keep the network's border
    return alike_classes(class_contrast(image, annotation), settings.prior_class_max_contrast)


def describe_class_borders(
    config: CriiConfig, annotation: SparseAnnotation | None, image: np.ndarray | None
) -> str | None:
    """Who draws the border between the foreground classes in :func:`finish_prediction`, in
    words for the person; None where the network alone does and there is nothing to explain
    (one foreground class, no annotation, a method without the shape prior, or no split)."""
    settings = config.predict
    if annotation is None or annotation.num_classes < 3 or not annotation.annotated.any():
        return None
    if not blends_with_prior(config) or settings.prior_class_split <= 0.0:
        return None
    if settings.prior_class_max_contrast is None:
        return "class borders: from the annotated outlines, between all classes"
    if image is None:
        return None
    limit = settings.prior_class_max_contrast
    contrast = class_contrast(image, annotation)
    group_of = {k: tuple(g) for g in alike_classes(contrast, limit) for k in g}
    parts = []
    for a, b in itertools.combinations(range(1, len(contrast) + 1), 2):
        value = contrast[a - 1, b - 1]
        measured = "no contrast measured" if np.isnan(value) else f"contrast {value:.2f}"
        if a in group_of and group_of[a] == group_of.get(b):
            linked = "" if value < limit else ", linked through classes that look alike"
            how = f"the annotated outlines' border ({measured}{linked})"
        elif np.isnan(value):
            how = "the network's border (too few annotated voxels to compare them)"
        else:
            how = f"the network's border (they look different: {measured} >= {limit:g})"
        parts.append(f"classes {a} and {b}: {how}")
    return "class borders: " + "; ".join(parts)


def suggest_slices(
    scores: np.ndarray,
    annotated: np.ndarray,
    count: int = 5,
    min_gap: int | None = None,
    spread: float = 0.0,
) -> list[tuple[int, float]]:
    """Rank unannotated slices by score, keeping picks ``min_gap`` slices from each other and
    from annotated slices (default: about 5% of the slices, at least 2). Slices scoring 0 are
    never picked, so fewer than ``count`` may come back.

    With ``spread`` > 0 the picks are made one at a time, each by score times (distance in
    slices to the nearest annotated or already picked slice) ** ``spread``, so that a hard
    slice far from every annotation beats an equally hard one beside it. The returned score is
    the slice's own score either way."""
    scores = np.asarray(scores, dtype=np.float64)
    annotated = np.asarray(annotated, dtype=bool)
    total = scores.shape[0]
    gap = max(2, round(0.05 * total)) if min_gap is None else max(0, min_gap)
    taken = list(np.flatnonzero(annotated))
    positions = np.arange(total)
    picks: list[tuple[int, float]] = []
    while len(picks) < count:
        allowed = (scores > 0.0) & ~annotated  # a zero score is a slice ruled out, not a pick
        if taken:
            distance = np.min(np.abs(positions[:, None] - np.asarray(taken)[None, :]), axis=1)
            allowed &= distance >= max(gap, 1)  # never the same slice twice
        else:
            distance = np.full(total, total, dtype=np.int64)
        if not allowed.any():
            break
        weighted = scores * np.power(distance.astype(np.float64), spread) if spread else scores
        index = int(np.argmax(np.where(allowed, weighted, -np.inf)))  # the first of equals
        picks.append((index, float(scores[index])))
        taken.append(index)
    return picks
