"""Shape-based interpolation between annotated slices: a soft shape prior and a baseline.

Each foreground class is described on every annotated slice by its 2D signed distance (mm,
negative inside). Between consecutive annotated slices the distances are interpolated linearly
along the slice axis, as 3D Slicer's "fill between slices" and ITK-SNAP's interpolation do.
By default the two outlines are first moved onto each other (their centroids travel linearly
from one slice to the next), so a cross-section that drifts in the plane, as a curved
structure's does, is carried along instead of fading out where the outlines do not overlap.
Beyond the outermost annotated slices the object can be extrapolated as a shrinking cap
(docs/method.md: extrapolation helped on left atrium and hippocampus).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training_backend.errors import AnnotationError

CONFIDENCE_DECAY_SLICES = 4.0
"""Confidence off the annotated slices falls as exp(-slices to the nearest one / this)."""

_CHUNK_SLICES = 16  # slices computed at once: bounds memory to 16 x K slices of float32


@dataclass
class ShapePrior:
    """The prior interpolated from the annotated slices, in the volume's own axis order.

    ``probabilities`` (float32, ``(K, *shape)``) sums to 1 over classes; ``labels`` is its
    argmax (the hard interpolation); ``confidence`` (float32 in [0, 1]) says how much to trust
    the prior per voxel: 1 on annotated slices, decaying away from them, ~0 near the
    interpolated boundary and 0 where there is no prior at all.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray


@dataclass
class _Slice:
    """Signed distances of every foreground class on one annotated slice."""

    index: int
    distance: np.ndarray  # float32 (K-1, A, B), mm, negative inside
    depth: np.ndarray  # float64 (K-1,): deepest inside distance (inscribed radius), 0 if absent
    radius: np.ndarray  # float64 (K-1,): sqrt(area / pi) in mm, 0 if absent
    centre: np.ndarray  # float64 (K-1, 2): centroid in pixels, NaN if absent


@dataclass
class _Setup:
    """Validated inputs with the slice axis moved first."""

    labels: np.ndarray  # (Z, A, B), a view: only annotated slices are read
    annotated: np.ndarray  # (Z,) bool
    axis: int
    num_classes: int
    dz: float
    plane: tuple[float, float]
    far: float  # distance standing for "class absent on this slice" (in-plane diagonal, mm)
    align: bool  # move each class's outlines onto each other before blending them


def shape_prior(
    labels: np.ndarray,
    annotated: np.ndarray,
    axis: int,
    num_classes: int,
    extrapolate: bool = True,
    spacing: tuple[float, float, float] | None = None,
    softness: float = 1.5,
    align: bool = True,
) -> ShapePrior:
    """Soft prior, hard labels and per-voxel confidence interpolated from the annotated slices.

    ``labels`` is the full volume; ``annotated`` has one bool per slice along ``axis`` (zeros on
    an annotated slice are background; labels on other slices are ignored). ``spacing`` is the
    voxel size in mm per array axis (default 1.0). Probabilities are a softmax of logits
    ``-d_k / softness`` for each foreground class and 0 for background, so for one class
    ``p = sigmoid(-d / softness)`` and the argmax equals the hard rule (class with the most
    negative distance, background where none is negative; float ties on the boundary aside).
    Without ``align`` classes never compete: on a painted slice ``d_i + d_j >= 0`` for two
    classes, and blending and growing keep it. Aligned outlines move independently and may
    overlap; the deeper class (more negative distance) takes such a voxel. On annotated slices
    the prior is the annotation itself (one-hot). Confidence elsewhere is
    ``exp(-slices to nearest annotated / 4) * (1 - exp(-margin / softness))`` with ``margin``
    the mm distance to the decision boundary (gap between the two highest logits x softness).
    With ``extrapolate=False`` slices outside the annotated range are background with
    confidence 0. Extrapolation and ``align``: see :func:`interpolate_labels`.
    """
    if not (np.isfinite(softness) and softness > 0):
        raise AnnotationError(f"softness must be a positive number of mm, got {softness}.")
    setup = _setup(labels, annotated, axis, num_classes, spacing, align)
    z_count = setup.labels.shape[0]
    plane_shape = setup.labels.shape[1:]
    probabilities = np.zeros((num_classes, z_count, *plane_shape), dtype=np.float32)
    hard = np.zeros(setup.labels.shape, dtype=_label_dtype(num_classes))
    confidence = np.zeros(setup.labels.shape, dtype=np.float32)
    steps = _slices_to_annotated(setup.annotated)
    for start, stop, distance in _distance_chunks(setup, extrapolate):
        if distance is None:  # no prior here: background, confidence 0
            probabilities[0, start:stop] = 1.0
            continue
        logits = np.concatenate(
            [np.zeros((stop - start, 1, *plane_shape), np.float32), -distance / softness], axis=1
        )
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        probabilities[:, start:stop] = np.moveaxis(weights, 1, 0)
        hard[start:stop] = _decide(distance)
        top_two = np.partition(logits, num_classes - 2, axis=1)[:, -2:]
        margin = (top_two[:, 1] - top_two[:, 0]) * softness
        decay = np.exp(-steps[start:stop] / CONFIDENCE_DECAY_SLICES).astype(np.float32)
        confidence[start:stop] = decay[:, None, None] * -np.expm1(-margin / softness)
    for z in np.flatnonzero(setup.annotated):
        hard[z] = setup.labels[z]
        probabilities[:, z] = np.arange(num_classes)[:, None, None] == setup.labels[z][None]
        confidence[z] = 1.0
    return ShapePrior(
        probabilities=np.ascontiguousarray(np.moveaxis(probabilities, 1, axis + 1)),
        labels=np.ascontiguousarray(np.moveaxis(hard, 0, axis)),
        confidence=np.ascontiguousarray(np.moveaxis(confidence, 0, axis)),
    )


def interpolate_labels(
    labels: np.ndarray,
    annotated: np.ndarray,
    axis: int,
    num_classes: int,
    extrapolate: bool = False,
    spacing: tuple[float, float, float] | None = None,
    align: bool = True,
) -> np.ndarray:
    """Hard labels by signed-distance interpolation between annotated slices (the baseline).

    Annotated slices are reproduced exactly. Between two annotated slices a class present on
    only one of them shrinks to nothing halfway (its missing side gets the present side's
    distance plus twice its inscribed radius). With ``align`` a class present on both slices is
    shifted in the plane before the blend: at fraction ``t`` of the way the first outline is
    moved by ``t`` times the offset between the two centroids and the second one back by
    ``1 - t`` times it, so the blended outline travels from one centroid to the other. Only
    where that shift makes the two outlines overlap better (IoU): when one of several pieces
    ends or a new one appears, the centroid jumps although nothing moved, and those are left
    as they are. On the hippocampus ``train`` split, the posterior class interpolated and
    extrapolated from 2 slices went from Dice 0.33 to 0.53. Outside the annotated range:
    background with
    ``extrapolate=False``; otherwise the outer slice's distance grows as
    ``d + r * s / L`` (``s`` mm beyond the slice, ``r = sqrt(area / pi)`` of the class on that
    slice, ``L = max(2 slices, mean gap between annotated slices, r)`` in mm): a disc tapers to
    a cone that vanishes ``L`` beyond the outer slice, a thinner shape sooner. With evenly spread
    slices the structure ends about half a gap beyond the outer one; the cone's volume matches
    that best among the lengths we tried on the hippocampus ``train`` split.
    """
    setup = _setup(labels, annotated, axis, num_classes, spacing, align)
    hard = np.zeros(setup.labels.shape, dtype=_label_dtype(num_classes))
    for start, stop, distance in _distance_chunks(setup, extrapolate):
        if distance is not None:
            hard[start:stop] = _decide(distance)
    annotated_slices = setup.annotated
    hard[annotated_slices] = setup.labels[annotated_slices]
    return np.ascontiguousarray(np.moveaxis(hard, 0, axis))


def leave_one_out_reliability(
    labels: np.ndarray, annotated: np.ndarray, axis: int, num_classes: int, align: bool = True
) -> float | None:
    """Mean foreground Dice of re-predicting each inner annotated slice from its neighbours.

    Every annotated slice holding foreground, except the first and last, is left out in turn and
    interpolated from the annotated slices on either side; per slice the Dice is averaged over
    the foreground classes present in the annotation or the prediction. ``None`` when fewer
    than 3 annotated slices hold foreground (nothing to leave out). Uses no ground truth beyond
    the annotation, so it can weigh the prior at run time. It is pessimistic: the left-out slice
    sits twice as far from its neighbours as unannotated slices do (3 slices on a hippocampus,
    whose two ends hold different classes, score about 0).
    """
    setup = _setup(labels, annotated, axis, num_classes, None, align)
    indices = np.flatnonzero(setup.annotated)
    holding = [i for i, z in enumerate(indices) if setup.labels[z].any()]
    if len(holding) < 3:
        return None
    scores = []
    for position in holding[1:-1]:
        before = _slice(setup, int(indices[position - 1]))
        after = _slice(setup, int(indices[position + 1]))
        z = int(indices[position])
        t = np.array([(z - before.index) / (after.index - before.index)])
        predicted = _decide(_between(before, after, t, setup.align))[0]
        truth = setup.labels[z]
        dices = []
        for k in range(1, num_classes):
            total = np.count_nonzero(predicted == k) + np.count_nonzero(truth == k)
            if total:
                overlap = np.count_nonzero((predicted == k) & (truth == k))
                dices.append(2.0 * overlap / total)
        scores.append(float(np.mean(dices)))
    return float(np.mean(scores))


def _setup(
    labels: np.ndarray,
    annotated: np.ndarray,
    axis: int,
    num_classes: int,
    spacing: Sequence[float] | None,
    align: bool,
) -> _Setup:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise AnnotationError(f"labels must be a 3D volume, got shape {labels.shape}.")
    if not -3 <= axis <= 2:
        raise AnnotationError(f"axis must be 0, 1 or 2 for a 3D volume, got {axis}.")
    axis %= 3
    if num_classes < 2:
        raise AnnotationError(f"num_classes must count background and >= 1 class: {num_classes}.")
    flags = np.asarray(annotated)
    if flags.shape != (labels.shape[axis],):
        raise AnnotationError(
            f"annotated needs one flag per slice along axis {axis} ({labels.shape[axis]} "
            f"slices), got shape {flags.shape}."
        )
    if flags.dtype != bool:
        if not np.isin(flags, (0, 1)).all():
            raise AnnotationError("annotated must hold booleans (or 0/1) marking slices.")
        flags = flags.astype(bool)
    if not flags.any():
        raise AnnotationError("No slice is marked as annotated: annotate at least one slice.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if not np.array_equal(labels, np.round(labels)):
            raise AnnotationError("labels must hold whole class numbers, found fractions.")
    moved = np.moveaxis(labels, axis, 0)
    painted = moved[flags]
    if painted.size and (painted.min() < 0 or painted.max() >= num_classes):
        raise AnnotationError(
            f"Annotated slices hold label values {painted.min()}..{painted.max()}, outside "
            f"0..{num_classes - 1}: raise num_classes or fix the labels."
        )
    sizes = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
        raise AnnotationError(f"spacing must be 3 positive mm values, got {spacing}.")
    plane = tuple(sizes[i] for i in range(3) if i != axis)
    extent = [n * s for n, s in zip(moved.shape[1:], plane, strict=True)]
    return _Setup(
        labels=moved,
        annotated=flags,
        axis=axis,
        num_classes=num_classes,
        dz=sizes[axis],
        plane=(plane[0], plane[1]),
        far=float(np.hypot(*extent)),
        align=bool(align),
    )


def _label_dtype(num_classes: int) -> type[np.integer]:
    return np.uint8 if num_classes <= 256 else np.int64


def _slice(setup: _Setup, z: int) -> _Slice:
    """Signed distance (mm) of each foreground class on annotated slice ``z``."""
    plane = setup.labels[z]
    count = setup.num_classes - 1
    distance = np.full((count, *plane.shape), setup.far, dtype=np.float32)
    depth = np.zeros(count)
    radius = np.zeros(count)
    centre = np.full((count, 2), np.nan)
    pixel_area = setup.plane[0] * setup.plane[1]
    for k in range(1, setup.num_classes):
        mask = plane == k
        area = np.count_nonzero(mask)
        if area == 0:
            continue
        if area == mask.size:
            distance[k - 1] = -setup.far
        else:
            outside = ndimage.distance_transform_edt(~mask, sampling=setup.plane)
            inside = ndimage.distance_transform_edt(mask, sampling=setup.plane)
            distance[k - 1] = outside - inside
        depth[k - 1] = -float(distance[k - 1].min())
        radius[k - 1] = np.sqrt(area * pixel_area / np.pi)
        centre[k - 1] = [float(np.mean(axis_indices)) for axis_indices in np.nonzero(mask)]
    return _Slice(index=z, distance=distance, depth=depth, radius=radius, centre=centre)


def _between(before: _Slice, after: _Slice, t: np.ndarray, align: bool) -> np.ndarray:
    """Linear blend of two slices' distances at fractions ``t`` (n,) -> (n, K-1, A, B).

    A class present on one side only gets, on the other side, the present side's distance plus
    twice its inscribed radius, so it shrinks and vanishes halfway between the two slices.
    With ``align`` a class present on both sides is blended after moving both outlines to the
    centroid interpolated at ``t``, where that move makes the two outlines overlap better.
    """
    start = before.distance
    stop = after.distance
    only_before = (before.depth > 0) & (after.depth == 0)
    only_after = (after.depth > 0) & (before.depth == 0)
    if only_before.any() or only_after.any():
        start, stop = start.copy(), stop.copy()
        stop[only_before] = start[only_before] + 2 * before.depth[only_before, None, None]
        start[only_after] = stop[only_after] + 2 * after.depth[only_after, None, None]
    w = t.astype(np.float32)[:, None, None, None]
    blended = (1 - w) * start[None] + w * stop[None]
    if align:
        both = np.flatnonzero((before.depth > 0) & (after.depth > 0))
        for k in both:
            offset = after.centre[k] - before.centre[k]
            if not np.any(np.abs(offset) >= 0.5):  # under half a pixel: the plain blend
                continue
            if not _shift_improves_overlap(before.distance[k] < 0, after.distance[k] < 0, offset):
                continue  # e.g. one of several pieces ends: the centroid jump is no motion
            for i, fraction in enumerate(t.astype(np.float64)):
                moved_start = _shifted(start[k], fraction * offset)
                moved_stop = _shifted(stop[k], (fraction - 1.0) * offset)
                blended[i, k] = (1 - fraction) * moved_start + fraction * moved_stop
    return blended


def _shift_improves_overlap(first: np.ndarray, second: np.ndarray, offset: np.ndarray) -> bool:
    """Whether ``first`` moved by ``offset`` pixels overlaps ``second`` better (IoU) than where
    it lies: the outline moved, rather than a piece appearing or ending elsewhere."""
    moved = ndimage.shift(first.astype(np.float32), offset, order=1, mode="constant") >= 0.5
    return _iou(moved, second) > _iou(first, second)


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.count_nonzero(first | second)
    return np.count_nonzero(first & second) / union if union else 0.0


def _shifted(distance: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``distance`` (A, B) moved by ``offset`` pixels (linear interpolation; the edge values
    continue beyond the border, which keeps the sign of far-away distances)."""
    return ndimage.shift(distance, offset, order=1, mode="nearest")


def _beyond(outer: _Slice, steps: np.ndarray, dz: float, gap: float) -> np.ndarray:
    """The outer slice's distance grown by ``r * s / L`` at ``steps`` slices beyond it.

    ``steps`` (n,) -> (n, K-1, A, B); ``r`` is sqrt(area / pi), ``L = max(2 dz, gap, r)`` mm.
    """
    length = np.maximum(np.maximum(2 * dz, gap), outer.radius)
    growth = outer.radius[None, :] * (steps[:, None] * dz) / length[None, :]
    return outer.distance[None] + growth[:, :, None, None].astype(np.float32)


def _distance_chunks(
    setup: _Setup, extrapolate: bool
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Yield ``(start, stop, distances)`` over all slices; ``None`` where there is no prior."""
    z_count = setup.labels.shape[0]
    indices = np.flatnonzero(setup.annotated)
    first, last = int(indices[0]), int(indices[-1])
    gap = float(np.diff(indices).mean()) * setup.dz if indices.size > 1 else 0.0
    previous = _slice(setup, first)
    outer_first = previous
    for start in range(0, first, _CHUNK_SLICES):
        stop = min(start + _CHUNK_SLICES, first)
        if extrapolate:
            steps = first - np.arange(start, stop, dtype=np.float64)
            yield start, stop, _beyond(outer_first, steps, setup.dz, gap)
        else:
            yield start, stop, None
    yield first, first + 1, previous.distance[None]
    for z in indices[1:]:
        current = _slice(setup, int(z))
        span = current.index - previous.index
        for start in range(previous.index + 1, current.index, _CHUNK_SLICES):
            stop = min(start + _CHUNK_SLICES, current.index)
            t = (np.arange(start, stop) - previous.index) / span
            yield start, stop, _between(previous, current, t, setup.align)
        yield current.index, current.index + 1, current.distance[None]
        previous = current
    for start in range(last + 1, z_count, _CHUNK_SLICES):
        stop = min(start + _CHUNK_SLICES, z_count)
        if extrapolate:
            steps = np.arange(start, stop, dtype=np.float64) - last
            yield start, stop, _beyond(previous, steps, setup.dz, gap)
        else:
            yield start, stop, None


def _decide(distance: np.ndarray) -> np.ndarray:
    """Hard labels from (n, K-1, ...) distances: most negative class, background if none < 0."""
    winner = np.argmin(distance, axis=1)
    inside = np.take_along_axis(distance, winner[:, None], axis=1)[:, 0] < 0
    return np.where(inside, winner + 1, 0)


def _slices_to_annotated(annotated: np.ndarray) -> np.ndarray:
    """Per slice, the number of slices to the nearest annotated one (0 on annotated slices)."""
    positions = np.arange(annotated.size)
    marked = np.flatnonzero(annotated)
    return np.abs(positions[:, None] - marked[None, :]).min(axis=1).astype(np.float64)
