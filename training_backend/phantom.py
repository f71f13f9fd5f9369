"""A synthetic MRI-like sample volume with a known truth: organ, low-contrast lesion, clutter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training_backend.io import Geometry

ORGAN_INTENSITY = 600.0
LESION_CONTRAST = 0.15
"""The lesion is this fraction darker than the organ: hard to see, as in the paper's lesions."""


@dataclass
class Phantom:
    """``image`` float32 (Z, Y, X); ``truth`` uint8 (0 background, 1 organ, 2 lesion);
    ``spacing`` mm per array axis; ``affine`` 4x4 voxel-to-mm with a non-zero origin."""

    image: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def make_phantom(shape: tuple[int, int, int] = (48, 96, 96), seed: int = 0) -> Phantom:
    """Build a deterministic phantom of ``shape`` (Z, Y, X) for ``seed``.

    The organ is a lobed, bending tube that tapers at both ends and spans the middle ~65% of the
    slices; the lesion is an ellipsoid well inside it, 15% darker. The background is textured,
    with a dark band and a dark tube nearby; edges are blurred, a smooth multiplicative bias field
    and Rician noise are applied. Spacing is (2, 1, 1) mm: slices thicker than pixels.
    """
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes of at least 8 voxels, got {shape}.")
    rng = np.random.default_rng(seed)
    z_count, height, width = shape
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, z_count, dtype=np.float32),
        np.linspace(-1, 1, height, dtype=np.float32),
        np.linspace(-1, 1, width, dtype=np.float32),
        indexing="ij",
        sparse=True,
    )
    phases = rng.uniform(0, 2 * np.pi, size=6).astype(np.float32)

    # Organ: along z its centre bends, its cross-section is lobed (non-convex) and tapers.
    along = z / 0.65  # -1..1 over the organ's extent
    centre_y = 0.12 * np.sin(1.6 * along + phases[0])
    centre_x = 0.18 * along**2 - 0.06
    dy, dx = y - centre_y, x - centre_x
    angle = np.arctan2(dy, dx)
    lobes = 1 + 0.22 * np.sin(3 * angle + phases[1] + along) + 0.1 * np.cos(2 * angle + phases[2])
    taper = np.sqrt(np.clip(1 - along**2, 0, None))
    reach = np.sqrt((dy / 0.5) ** 2 + (dx / 0.42) ** 2) / lobes
    organ = reach < taper

    lesion_y = centre_y + 0.05 * np.cos(phases[3])
    lesion_x = centre_x + 0.05 * np.sin(phases[3])
    ellipsoid = ((z - 0.05) / 0.3) ** 2 + ((y - lesion_y) / 0.17) ** 2
    ellipsoid = ellipsoid + ((x - lesion_x) / 0.2) ** 2
    lesion = (ellipsoid < 1) & (reach < 0.7 * taper)

    truth = organ.astype(np.uint8)
    truth[lesion] = 2

    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1, 3, 3))
    texture *= 60 / max(float(texture.std()), 1e-6)
    image = 320 + texture
    band = np.abs(np.hypot(y / 0.9, x / 0.95) - 0.9) < 0.05  # dark rim, like fat or bone
    tube = np.hypot(y + 0.6 - 0.1 * z, x - 0.45 + 0.05 * np.sin(3 * z + phases[4])) < 0.1
    image = np.where(band | tube, 110.0, image)
    image = np.where(organ, ORGAN_INTENSITY + 0.3 * texture, image)
    image = np.where(lesion, ORGAN_INTENSITY * (1 - LESION_CONTRAST) + 0.3 * texture, image)
    image = ndimage.gaussian_filter(image.astype(np.float32), (0.6, 1.2, 1.2))

    bias = 1 + 0.1 * np.sin(1.3 * x + phases[5]) * np.cos(0.9 * y) + 0.05 * z
    image = image * bias
    sigma = 20.0
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.hypot(real, imaginary).astype(np.float32)

    spacing = (2.0, 1.0, 1.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-0.5 * z_count * spacing[0], -0.5 * height * spacing[1], 12.5)
    return Phantom(image=image, truth=truth, spacing=spacing, affine=affine)


SAMPLE_SHAPE = (64, 96, 96)
"""The demo and napari sample volume: 64 axial slices of 96 x 96."""


def phantom_as_nifti(seed: int = 0) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """The phantom in NIfTI array order (X, Y, Z), axial slices along axis 2."""
    phantom = make_phantom(SAMPLE_SHAPE, seed=seed)
    order = (2, 1, 0)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([phantom.spacing[a] for a in order])
    affine[:3, 3] = phantom.affine[:3, 3][list(order)]
    geometry = Geometry(affine, tuple(phantom.spacing[a] for a in order), "nifti")
    image = np.ascontiguousarray(phantom.image.transpose(order))
    truth = np.ascontiguousarray(phantom.truth.transpose(order))
    return image, truth, geometry
