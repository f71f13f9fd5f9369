"""What turns the network's probabilities into the mask a person sees (docs/method.md).

- :func:`blend_with_prior`: a late average with the soft shape prior interpolated from the
  annotated slices. It keeps the network's detail inside the annotated range and stops it
  from inventing structure far beyond the outermost annotated slices. Optionally the prior
  also says how the foreground splits among the classes (:func:`split_by_prior`).
- :func:`keep_annotated_components`: per class, drop the 3D connected components that touch
  no annotated voxel of that class (false blobs). Components are kept, not only the largest
  one: the largest once picked a false blob and zeroed a class on hippocampus.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from training_backend.annotations import SparseAnnotation
from training_backend.prior import shape_prior


def blend_with_prior(
    probabilities: np.ndarray,
    annotation: SparseAnnotation,
    weight: float,
    spacing: tuple[float, float, float] | None = None,
    align: bool = True,
    class_split: float = 0.0,
) -> np.ndarray:
    """``(1 - weight) * probabilities + weight * prior`` over ``(K, *shape)`` float32
    (``align``: see :func:`~training_backend.prior.interpolate_labels`), then, with
    ``class_split`` > 0, its foreground split among the classes by :func:`split_by_prior`."""
    if weight <= 0.0 or not annotation.annotated.any():
        return probabilities
    prior = shape_prior(
        annotation.labels,
        annotation.annotated,
        annotation.axis,
        probabilities.shape[0],
        extrapolate=True,
        spacing=spacing,
        align=align,
    )
    prior_classes = prior.probabilities[1:].copy() if class_split > 0.0 else None
    blended = prior.probabilities
    blended *= weight
    blended += (1.0 - weight) * probabilities
    if prior_classes is not None:
        blended = split_by_prior(blended, prior_classes, class_split)
    return blended


def split_by_prior(
    probabilities: np.ndarray, prior_classes: np.ndarray, share: float
) -> np.ndarray:
    """``probabilities`` (K, ...) with the same background, its foreground split among the
    classes by ``share`` of the prior's split (``prior_classes``: the prior's K - 1 foreground
    probabilities) and 1 - ``share`` of its own, where the prior holds foreground (elsewhere
    its own). The two classes of a structure are often confused far from their border (the
    head against the body of the hippocampus); the outlines painted on the annotated slices,
    carried through the volume by the prior, say where that border lies."""
    foreground = probabilities[1:].sum(0, keepdims=True)
    own = probabilities[1:] / np.maximum(foreground, 1e-6)
    prior_foreground = prior_classes.sum(0, keepdims=True)
    prior_split = np.where(
        prior_foreground > 1e-3, prior_classes / np.maximum(prior_foreground, 1e-6), own
    )
    split = (1.0 - share) * own + share * prior_split
    return np.concatenate([probabilities[:1], foreground * split]).astype(probabilities.dtype)


def keep_annotated_components(labels: np.ndarray, annotation: SparseAnnotation) -> np.ndarray:
    """``labels`` without the components (6-connected) of each class that no annotated voxel
    of that class touches. A class is left as it is when the annotation never shows it, or
    when none of its components touches its annotated voxels (nothing to anchor on)."""
    out = np.array(labels, copy=True)
    planes = [slice(None)] * 3
    planes[annotation.axis] = annotation.annotated
    painted = annotation.labels[tuple(planes)]
    structure = ndimage.generate_binary_structure(3, 1)
    for k in np.unique(labels):
        if k == 0 or not np.any(painted == k):
            continue
        components, count = ndimage.label(labels == k, structure=structure)
        if count <= 1:
            continue
        anchored = np.unique(components[tuple(planes)][painted == k])
        anchored = anchored[anchored > 0]
        if anchored.size == 0:
            continue  # nothing to anchor on: removing every component would erase the class
        out[(components > 0) & ~np.isin(components, anchored)] = 0
    return out
