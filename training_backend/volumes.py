"""Training data: intensity normalisation, 2.5D slice stacks, batches and augmentations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from training_backend.errors import VolumeError

_PERCENTILE_SAMPLE = 2_000_000


def normalize_intensity(array: np.ndarray, source: str = "image") -> np.ndarray:
    """Return a float32 copy clipped to the 0.5-99.5 percentiles and scaled to zero mean, unit std.

    Works for any dtype and range (uint8, int16 CT, float MRI). Non-finite voxels (NaN, Inf)
    take the lowest normalised value. A constant image becomes all zeros.
    """
    data = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        raise VolumeError(f"{source}: no finite intensity value (all NaN or Inf)")
    values = data[finite]
    if values.size > _PERCENTILE_SAMPLE:
        values = values[:: values.size // _PERCENTILE_SAMPLE + 1]
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        return np.zeros(data.shape, dtype=np.float32)
    clipped = np.clip(values, low, high)
    mean, std = float(clipped.mean()), float(clipped.std())
    std = std if std > 0 else float(high - low)
    out = (np.clip(np.where(finite, data, low), low, high) - mean) / std
    return out.astype(np.float32, copy=False)


def slice_major(array: np.ndarray, axis: int) -> np.ndarray:
    """View of a volume with the slice axis first: (S, H, W)."""
    return np.moveaxis(array, axis, 0)


def context_stack(
    image: np.ndarray, indices: Sequence[int] | np.ndarray, context: int, axis: int = 0
) -> np.ndarray:
    """2.5D input: for each index along ``axis``, the plane and ``context`` neighbours on each
    side. ``image`` is 3D; returns (N, 2*context+1, A, B) with A, B the other two axes in order.
    Neighbours beyond the volume repeat the edge plane.
    """
    indices = np.asarray(indices, dtype=np.int64)
    offsets = np.arange(-context, context + 1)
    rows = np.clip(indices[:, None] + offsets[None, :], 0, image.shape[axis] - 1)
    return np.moveaxis(image, axis, 0)[rows]


@dataclass
class SliceVolume:
    """One training volume in slice-major order, ready for sampling.

    ``annotated`` marks labeled slices; ``prior`` (K, S, H, W) and ``prior_weight`` (S, H, W)
    hold the shape prior from the annotated slices, when one is used.
    """

    image: np.ndarray
    labels: np.ndarray | None
    annotated: np.ndarray
    prior: np.ndarray | None = None
    prior_weight: np.ndarray | None = None

    @property
    def labeled_indices(self) -> np.ndarray:
        return np.flatnonzero(self.annotated)

    @property
    def unlabeled_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.annotated)


@dataclass
class Batch:
    """A training batch; the first ``num_labeled`` items are labeled slices."""

    image: torch.Tensor  # (B, C, H, W) float32
    target: torch.Tensor  # (B, H, W) int64
    label_mask: torch.Tensor  # (B, H, W) bool: pixels that carry a label
    valid: torch.Tensor  # (B, H, W) bool: pixels inside the volume (not padding)
    num_labeled: int
    prior: torch.Tensor | None = None  # (B, K, H, W)
    prior_weight: torch.Tensor | None = None  # (B, H, W)

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            move(self.image),
            move(self.target),
            move(self.label_mask),
            move(self.valid),
            self.num_labeled,
            move(self.prior),
            move(self.prior_weight),
        )


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class BatchSampler:
    """Draws batches that mix labeled and unlabeled slices from several volumes.

    With ``all_orientations`` the labeled items are also cut across the slice axis: such a
    plane crosses every annotated slice along a fully labeled line, and only those lines carry
    a label (the loss is masked to them). They teach the network the through-plane shape.
    Every plane is padded to a common size (a multiple of the network's downsampling) and
    randomly cropped when larger than ``crop_size``; padding is marked invalid.
    """

    def __init__(
        self,
        volumes: Sequence[SliceVolume],
        batch_size: int,
        labeled_fraction: float,
        crop_size: int,
        context: int,
        size_multiple: int,
        seed: int,
        all_orientations: bool = False,
    ) -> None:
        self.volumes = list(volumes)
        self.context = context
        self.rng = np.random.default_rng(seed)
        labeled_axes = (0, 1, 2) if all_orientations else (0,)
        self.labeled: dict[int, list[tuple[int, int]]] = {
            axis: [
                (v, i)
                for v, vol in enumerate(self.volumes)
                if vol.labels is not None and vol.annotated.any()
                for i in (vol.labeled_indices if axis == 0 else range(vol.image.shape[axis]))
            ]
            for axis in labeled_axes
        }
        self.unlabeled = [
            (v, i) for v, vol in enumerate(self.volumes) for i in vol.unlabeled_indices
        ]
        if not self.labeled[0]:
            raise VolumeError("no annotated slice in any training volume")
        self.labeled_fraction = labeled_fraction
        self.set_batch_size(batch_size)
        axes = (1, 2) if not all_orientations else (0, 1, 2)
        largest = max(vol.image.shape[a] for vol in self.volumes for a in axes)
        # Planes smaller than the network's downsampling are padded so that its coarsest
        # level keeps at least 2 x 2 pixels (batch norm needs more than one value).
        smallest = 2 * size_multiple
        if all_orientations:
            side = max(min(round_up(largest, size_multiple), crop_size), smallest)
            self.height = self.width = side
        else:
            height = max(vol.image.shape[1] for vol in self.volumes)
            width = max(vol.image.shape[2] for vol in self.volumes)
            self.height = max(min(round_up(height, size_multiple), crop_size), smallest)
            self.width = max(min(round_up(width, size_multiple), crop_size), smallest)
        self.has_prior = any(vol.prior is not None for vol in self.volumes)

    @property
    def batch_size(self) -> int:
        return self.num_labeled + self.num_unlabeled

    def set_batch_size(self, batch_size: int) -> None:
        """Items per batch from now on; at least one labeled item in each."""
        size = max(1, int(batch_size))
        self.num_labeled = (
            size if not self.unlabeled else max(1, min(size, round(size * self.labeled_fraction)))
        )
        self.num_unlabeled = size - self.num_labeled

    def sample(self) -> Batch:
        axes = list(self.labeled)
        labeled_axes = [axes[k] for k in self.rng.integers(0, len(axes), size=self.num_labeled)]
        picks = [(axis, *self._draw(self.labeled[axis])) for axis in labeled_axes]
        picks += [(0, *self._draw(self.unlabeled)) for _ in range(self.num_unlabeled)]
        items = [
            self._item(self.volumes[v], axis, i, n < self.num_labeled)
            for n, (axis, v, i) in enumerate(picks)
        ]
        image, target, label_mask, valid, prior, prior_weight = (
            np.stack([item[k] for item in items]) if items[0][k] is not None else None
            for k in range(6)
        )
        return Batch(
            torch.from_numpy(image),
            torch.from_numpy(target),
            torch.from_numpy(label_mask),
            torch.from_numpy(valid),
            self.num_labeled,
            None if prior is None else torch.from_numpy(prior),
            None if prior_weight is None else torch.from_numpy(prior_weight),
        )

    def _draw(self, pool: list[tuple[int, int]]) -> tuple[int, int]:
        return pool[int(self.rng.integers(0, len(pool)))]

    def _item(
        self, vol: SliceVolume, axis: int, index: int, labeled: bool
    ) -> list[np.ndarray | None]:
        plane_shape = [n for a, n in enumerate(vol.image.shape) if a != axis]
        top = int(self.rng.integers(0, max(plane_shape[0] - self.height, 0) + 1))
        left = int(self.rng.integers(0, max(plane_shape[1] - self.width, 0) + 1))
        crop = (slice(top, top + self.height), slice(left, left + self.width))

        def plane(array: np.ndarray, lead: int = 0) -> np.ndarray:
            return np.take(array, index, axis=axis + lead)[(slice(None),) * lead + crop]

        image = context_stack(vol.image, [index], self.context, axis)[0][(slice(None), *crop)]
        shape = image.shape[1:]
        if labeled and vol.labels is not None:
            target = plane(vol.labels)
            if axis == 0:
                label_mask = np.ones(shape, bool)
            else:  # the rows that cross annotated slices
                label_mask = np.broadcast_to(vol.annotated[crop[0], None], shape).copy()
        else:
            target = np.zeros(shape, np.int64)
            label_mask = np.zeros(shape, bool)
        prior = prior_weight = None
        if self.has_prior:
            if vol.prior is not None:
                prior = plane(vol.prior, lead=1)
                prior_weight = plane(vol.prior_weight)
            else:
                prior_weight = np.zeros(shape, np.float32)
                prior = np.zeros((self._num_prior_classes(), *shape), np.float32)
        pieces = [image, target, label_mask, np.ones(shape, bool), prior, prior_weight]
        return [None if p is None else self._pad(p) for p in pieces]

    def _num_prior_classes(self) -> int:
        return next(vol.prior.shape[0] for vol in self.volumes if vol.prior is not None)

    def _pad(self, array: np.ndarray) -> np.ndarray:
        pad_h = self.height - array.shape[-2]
        pad_w = self.width - array.shape[-1]
        if pad_h == 0 and pad_w == 0:
            return np.ascontiguousarray(array)
        widths = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
        return np.pad(array, widths)


def random_flips(batch: Batch, generator: torch.Generator) -> Batch:
    """Flip each item along H and/or W at random: image, labels, masks and prior together."""
    size = batch.image.shape[0]
    flips = torch.rand(size, 2, generator=generator) < 0.5

    def flip(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        out = t.clone()
        for item in range(size):
            dims = [d for d, on in zip((-2, -1), flips[item].tolist(), strict=True) if on]
            if dims:
                out[item] = torch.flip(t[item], dims)
        return out

    return Batch(
        flip(batch.image),
        flip(batch.target),
        flip(batch.label_mask),
        flip(batch.valid),
        batch.num_labeled,
        flip(batch.prior),
        flip(batch.prior_weight),
    )


def intensity_jitter(
    image: torch.Tensor, generator: torch.Generator, strength: float = 1.0
) -> torch.Tensor:
    """Strong view: random contrast, brightness, gamma-like curvature and noise per item.

    Geometry is unchanged, so predictions on this view align with the original pixels.
    Random numbers are drawn on the CPU generator, then moved to the image's device.
    """
    size = image.shape[0]
    draw = torch.rand(size, 4, generator=generator).to(image.device)
    contrast = 1.0 + strength * (draw[:, 0] - 0.5) * 0.5
    brightness = strength * (draw[:, 1] - 0.5) * 0.4
    curvature = strength * (draw[:, 2] - 0.5) * 0.2
    noise_level = strength * draw[:, 3] * 0.15
    noise = torch.randn(image.shape, generator=generator).to(image.device)
    view = lambda t: t.view(size, 1, 1, 1)  # noqa: E731
    out = view(contrast) * image + view(brightness) + view(curvature) * image * image.abs()
    return out + view(noise_level) * noise


def affine_theta(
    angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor, aspect: float
) -> torch.Tensor:
    """The (B, 2, 3) matrices of ``F.affine_grid`` for a rotation by ``angle`` (radians) and a
    zoom, both in pixel units, and a ``shift`` (B, 2) in normalised coordinates (x, y).
    ``affine_grid`` works in coordinates normalised per axis, so a plain rotation matrix there
    would shear a plane whose ``aspect`` (height / width) is not 1; rescaling the off-diagonal
    terms by the aspect makes it a rotation of the pixels."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack(
        [
            torch.stack([cos, -sin * aspect, shift[:, 0]], dim=1),
            torch.stack([sin / aspect, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )


def random_affine(
    batch: Batch,
    generator: torch.Generator,
    degrees: float = 15.0,
    scale: float = 0.1,
    shift: float = 0.05,
    pixel_units: bool = False,
) -> Batch:
    """Rotate (up to ``degrees``), scale (by up to ``1 ± scale``) and shift (up to ``shift`` of
    the plane) each item at random. The rotation is made in the plane's normalised [-1, 1]
    coordinates, so on a non-square plane it carries a shear, or with ``pixel_units`` in
    pixels, a true rotation (:func:`affine_theta`). One transform per item moves the
    image and the prior bilinearly, labels and masks by nearest neighbour. Pixels brought in
    from outside the plane are invalid and unlabeled. Unlike flips, small rotations keep which
    side is anterior, so class names that depend on position (anterior / posterior) stay
    right. Random numbers come from the CPU generator; the work runs on the batch's device.
    """
    size = batch.image.shape[0]
    device = batch.image.device
    draw = (torch.rand(size, 4, generator=generator) * 2.0 - 1.0).to(device)
    height, width = batch.image.shape[-2:]
    theta = affine_theta(
        draw[:, 0] * math.radians(degrees),
        1.0 + draw[:, 1] * scale,
        draw[:, 2:] * 2.0 * shift,
        height / width if pixel_units else 1.0,
    )
    grid = F.affine_grid(theta, list(batch.image.shape), align_corners=False)

    def warp(t: torch.Tensor | None, mode: str) -> torch.Tensor | None:
        if t is None:
            return None
        lead = t.dim() == 3  # (B, H, W) -> (B, 1, H, W)
        source = t.unsqueeze(1) if lead else t
        out = F.grid_sample(source.float(), grid, mode=mode, padding_mode="zeros",
                            align_corners=False)  # fmt: skip
        out = out.squeeze(1) if lead else out
        return out.to(t.dtype) if not t.dtype.is_floating_point else out

    valid = warp(batch.valid, "nearest")
    return Batch(
        warp(batch.image, "bilinear").contiguous(memory_format=torch.channels_last),
        warp(batch.target, "nearest"),
        warp(batch.label_mask, "nearest") & valid,
        valid,
        batch.num_labeled,
        warp(batch.prior, "bilinear"),
        warp(batch.prior_weight, "bilinear"),
    )


def augment(batch: Batch, kind: str, generator: torch.Generator, device: torch.device) -> Batch:
    """The training augmentation ``kind`` (``train.augment``), the batch moved to ``device``.
    Flips happen on the CPU; the affine warp on ``device``, in pixel units for the
    ``pixel-affine`` kinds."""
    if "flips" in kind:
        batch = random_flips(batch, generator)
    batch = batch.to(device)
    if "affine" in kind:
        batch = random_affine(batch, generator, pixel_units=kind.startswith("pixel-"))
    return batch
