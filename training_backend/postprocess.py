"""What turns the network's probabilities into the mask a person sees (docs/method.md).

- :func:`blend_with_prior`: a late average with the soft shape prior interpolated from the
  annotated slices. It keeps the network's detail inside the annotated range and stops it
  from inventing structure far beyond the outermost annotated slices. Optionally the prior
  also says how the foreground splits among the classes (:func:`split_by_prior`), within
  groups of classes that look alike in the image (:func:`class_contrast`,
  :func:`alike_classes`).
- :func:`keep_annotated_components`: per class, drop the 3D connected components that touch
  no annotated voxel of that class (false blobs). Components are kept, not only the largest
  one: the largest once picked a false blob and zeroed a class on hippocampus.
"""

from __future__ import annotations

import itertools

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
    class_groups: list[list[int]] | None = None,
) -> np.ndarray:
    """``(1 - weight) * probabilities + weight * prior`` over ``(K, *shape)`` float32
    (``align``: see :func:`~training_backend.prior.interpolate_labels`), then, with
    ``class_split`` > 0, its foreground split among the classes by :func:`split_by_prior`:
    among the classes of each group of ``class_groups`` (1-based, see :func:`alike_classes`),
    or among all of them with None."""
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
    if prior_classes is None:
        return blended
    if class_groups is None:
        return split_by_prior(blended, prior_classes, class_split)
    for group in class_groups:
        speaks_for = np.zeros((len(prior_classes),) + (1,) * (blended.ndim - 1), dtype=bool)
        speaks_for[[k - 1 for k in group]] = True
        blended = split_by_prior(blended, prior_classes, class_split, speaks_for)
    return blended


def split_by_prior(
    probabilities: np.ndarray,
    prior_classes: np.ndarray,
    share: float,
    speaks_for: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """``probabilities`` (K, ...) with the same background, its foreground split among the
    classes by ``share`` of the prior's split (``prior_classes``: the prior's K - 1 foreground
    probabilities) and 1 - ``share`` of its own, where the prior holds foreground of the
    classes it speaks for (elsewhere its own). The two classes of a structure are often
    confused far from their border (the head against the body of the hippocampus); the
    outlines painted on the annotated slices, carried through the volume by the prior, say
    where that border lies.

    ``speaks_for`` (boolean, broadcast to ``prior_classes``) limits the prior to some classes
    (or voxels of them): it then divides only the share the probabilities give those classes,
    and the others keep theirs. Voxels where ``keep`` (the volume's shape) is true keep their
    own split."""
    foreground = probabilities[1:].sum(0, keepdims=True)
    own = probabilities[1:] / np.maximum(foreground, 1e-6)
    if speaks_for is None:
        speaks_for = np.ones((len(prior_classes),) + (1,) * (prior_classes.ndim - 1), bool)
    speaks_for = np.broadcast_to(speaks_for, prior_classes.shape)
    spoken_for = np.where(speaks_for, own, 0.0).sum(0, keepdims=True)
    prior_here = np.where(speaks_for, prior_classes, 0.0)
    prior_foreground = prior_here.sum(0, keepdims=True)
    prior_split = np.where(
        prior_foreground > 1e-3, spoken_for * prior_here / np.maximum(prior_foreground, 1e-6), own
    )
    split = np.where(speaks_for, (1.0 - share) * own + share * prior_split, own)
    if keep is not None:
        split = np.where(keep[None], own, split)
    return np.concatenate([probabilities[:1], foreground * split]).astype(probabilities.dtype)


MIN_CLASS_VOXELS = 20
"""Below this many annotated voxels a class's intensities are not compared (not alike)."""


def class_contrast(image: np.ndarray, annotation: SparseAnnotation) -> np.ndarray:
    """``(K - 1, K - 1)``: how far apart the image's intensities of each two foreground classes
    lie on the annotated slices, in pooled robust standard deviations (the difference of the
    medians over the root of the mean of the two squared scaled MADs); NaN where a class has
    fewer than :data:`MIN_CLASS_VOXELS` annotated finite voxels. Each class's outline, whose voxels
    mix it with its neighbours, is left out (one voxel in the slice) where enough remain."""
    planes: list[slice | np.ndarray] = [slice(None)] * annotation.labels.ndim
    planes[annotation.axis] = annotation.annotated
    values = np.asarray(image)[tuple(planes)].astype(np.float64)
    labels = annotation.labels[tuple(planes)]
    in_plane = ndimage.generate_binary_structure(labels.ndim, 1)
    in_plane[tuple(0 if a == annotation.axis else 1 for a in range(labels.ndim))] = False
    in_plane[tuple(2 if a == annotation.axis else 1 for a in range(labels.ndim))] = False
    count = annotation.num_classes - 1
    stats: list[tuple[float, float] | None] = []
    for k in range(1, count + 1):
        region = labels == k
        inner = ndimage.binary_erosion(region, in_plane)
        chosen = values[inner if inner.sum() >= MIN_CLASS_VOXELS else region]
        chosen = chosen[np.isfinite(chosen)]
        if chosen.size < MIN_CLASS_VOXELS:
            stats.append(None)
            continue
        median = float(np.median(chosen))
        stats.append((median, 1.4826 * float(np.median(np.abs(chosen - median)))))
    contrast = np.full((count, count), np.nan)
    for a, b in itertools.combinations(range(count), 2):
        first, second = stats[a], stats[b]
        if first is None or second is None:
            continue
        gap = abs(first[0] - second[0])
        pooled = np.sqrt((first[1] ** 2 + second[1] ** 2) / 2.0)
        contrast[a, b] = contrast[b, a] = gap / pooled if pooled > 0 else (np.inf if gap else 0.0)
    np.fill_diagonal(contrast, 0.0)
    return contrast


def alike_classes(contrast: np.ndarray, max_contrast: float) -> list[list[int]]:
    """Groups of two or more foreground classes (1-based) joined by a contrast below
    ``max_contrast``: classes the image does not tell apart, whose border the annotated
    outlines are left to draw."""
    count = len(contrast)
    group = list(range(count))

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for a, b in itertools.combinations(range(count), 2):
        if contrast[a, b] < max_contrast:  # NaN compares false: not alike
            group[root(b)] = root(a)
    members: dict[int, list[int]] = {}
    for k in range(count):
        members.setdefault(root(k), []).append(k + 1)
    return [m for m in members.values() if len(m) > 1]


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
