"""Segmentation metrics on whole volumes."""

from __future__ import annotations

import numpy as np


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[int, float]:
    """Dice of each foreground class 1..num_classes-1; a class absent from both scores 1."""
    scores = {}
    for k in range(1, num_classes):
        p, t = prediction == k, truth == k
        denominator = int(p.sum()) + int(t.sum())
        scores[k] = 1.0 if denominator == 0 else 2.0 * int((p & t).sum()) / denominator
    return scores


def mean_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean of :func:`dice_per_class` over the foreground classes."""
    scores = dice_per_class(prediction, truth, num_classes)
    return float(np.mean(list(scores.values())))
