"""Whole-volume prediction, the hard-boundary map and the ranked slice suggestions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training_backend import losses
from training_backend.checkpoint import CheckpointData, load_checkpoint
from training_backend.config import LossConfig
from training_backend.devices import autocast_for
from training_backend.model import CRIINet, build_model
from training_backend.volumes import context_stack, normalize_intensity, round_up, slice_major


@dataclass
class VolumePrediction:
    """Outputs in the array order of the input volume."""

    refined: np.ndarray  # uint8 labels
    coarse: np.ndarray  # uint8 labels
    probabilities: np.ndarray  # float32 (K, *shape), refined softmax
    hardness: np.ndarray  # float32 in [0, 1]

    def slice_scores(self, axis: int) -> np.ndarray:
        """Mean hardness of each slice along ``axis``."""
        other = tuple(a for a in range(3) if a != axis)
        return self.hardness.mean(axis=other)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse and refined probabilities (N, K, H, W) on the CPU for slices of a normalised
    slice-major volume; slices are padded to the network's multiple and cropped back."""
    multiple = 2 ** (model.config.levels - 1)
    _, height, width = image.shape
    stack = torch.from_numpy(np.ascontiguousarray(context_stack(image, indices, context)))
    pad = (0, round_up(width, multiple) - width, 0, round_up(height, multiple) - height)
    stack = F.pad(stack, pad).to(device, memory_format=torch.channels_last)
    with autocast():
        out = model(stack)
    coarse = torch.softmax(out.coarse.float(), dim=1)[..., :height, :width]
    refined = torch.softmax(out.refined.float(), dim=1)[..., :height, :width]
    return coarse.cpu(), refined.cpu()


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
) -> VolumePrediction:
    """Predict every slice along ``axis`` in batches; returns labels, probabilities, hardness."""
    loss_config = loss_config or LossConfig()
    was_training = model.training
    model.eval()
    autocast = autocast_for(device, mixed_precision)
    volume = image if normalized else normalize_intensity(image)
    stack = slice_major(volume, axis)
    count = stack.shape[0]
    num_classes = model.config.num_classes
    probabilities = np.empty((num_classes, *stack.shape), np.float32)
    coarse_labels = np.empty(stack.shape, np.uint8)
    hardness = np.empty(stack.shape, np.float32)
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        coarse, refined = predict_slices(model, stack, indices, context, device, autocast)
        probabilities[:, start : start + len(indices)] = refined.permute(1, 0, 2, 3).numpy()
        coarse_labels[start : start + len(indices)] = coarse.argmax(1).numpy().astype(np.uint8)
        hardness[start : start + len(indices)] = losses.pixel_hardness(
            refined,
            coarse,
            patch_size=loss_config.patch_size,
            hard_pixels=loss_config.hard_pixels,
            margin=loss_config.margin,
        ).numpy()
    model.train(was_training)
    refined_labels = probabilities.argmax(0).astype(np.uint8)
    return VolumePrediction(
        refined=np.moveaxis(refined_labels, 0, axis),
        coarse=np.moveaxis(coarse_labels, 0, axis),
        probabilities=np.moveaxis(probabilities, 1, axis + 1),
        hardness=np.moveaxis(hardness, 0, axis),
    )


def suggest_slices(
    scores: np.ndarray,
    annotated: np.ndarray,
    count: int = 5,
    min_gap: int | None = None,
) -> list[tuple[int, float]]:
    """Rank unannotated slices by score, keeping picks ``min_gap`` slices from each other and
    from annotated slices (default: about 5% of the slices, at least 2)."""
    scores = np.asarray(scores, dtype=np.float64)
    annotated = np.asarray(annotated, dtype=bool)
    total = scores.shape[0]
    gap = max(2, round(0.05 * total)) if min_gap is None else max(0, min_gap)
    taken = list(np.flatnonzero(annotated))
    picks: list[tuple[int, float]] = []
    for index in np.argsort(-scores, kind="stable"):
        if len(picks) >= count:
            break
        if annotated[index] or any(abs(int(index) - t) < gap for t in taken):
            continue
        picks.append((int(index), float(scores[index])))
        taken.append(int(index))
    return picks
