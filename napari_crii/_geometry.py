"""The one place that converts between a source volume and napari's display order.

A volume is kept by :mod:`training_backend.io` in the order its file stores it (NIfTI as
nibabel gives it, TIFF as (Z, Y, X)). napari shows it in *display order*: for NIfTI the slice
axis closest to superior-inferior (:func:`~training_backend.io.default_slice_axis`) comes
first, so axial slices are on the slider, and the other two axes follow in stored order; for
TIFF display order is stored order.

Every layer of one volume (image, annotations, predictions, maps) carries the same
``scale`` (voxel sizes in display order), ``translate`` (always 0: layers of one volume share
one voxel grid; the world position lives in the affine, which napari does not use) and
``metadata["crii"]``, a JSON-able dict::

    {"geometry": Geometry.to_json(), "display_axes": [source axis of each display axis],
     "source_path": str | None, "nifti_header_path": str | None}

``nifti_header_path`` is the NIfTI file to re-read the full header from when exporting.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training_backend.errors import VolumeError
from training_backend.io import Geometry, Volume, default_slice_axis

METADATA_KEY = "crii"
TRANSLATE = (0.0, 0.0, 0.0)


def display_axes_for(geometry: Geometry) -> list[int]:
    """Source axis shown on each display axis: slice axis first for NIfTI, stored for TIFF."""
    if geometry.source_format == "tiff":
        return [0, 1, 2]
    axial = default_slice_axis(geometry)
    return [axial, *(a for a in range(3) if a != axial)]


def metadata_for(
    geometry: Geometry,
    source_path: str | os.PathLike[str] | None = None,
    display_axes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The ``crii`` metadata of a volume with ``geometry`` read from ``source_path``."""
    axes = display_axes_for(geometry) if display_axes is None else [int(a) for a in display_axes]
    _check_axes(axes)
    path = None if source_path is None else str(Path(os.fspath(source_path)).resolve())
    return {
        "geometry": geometry.to_json(),
        "display_axes": axes,
        "source_path": path,
        "nifti_header_path": path if geometry.source_format == "nifti" else None,
    }


def metadata_for_volume(volume: Volume) -> dict[str, Any]:
    """The ``crii`` metadata of a volume read by :func:`training_backend.io.read_volume`."""
    return metadata_for(volume.geometry, volume.path)


def crii_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``crii`` dict from a layer's ``metadata``, a writer's ``meta`` or the dict itself."""
    if not meta:
        return None
    if "display_axes" in meta and "geometry" in meta:
        return dict(meta)
    inner = meta.get(METADATA_KEY)
    if isinstance(inner, Mapping):
        return crii_metadata(inner)
    nested = meta.get("metadata")  # a writer's ``meta`` holds the layer metadata here
    if isinstance(nested, Mapping):
        return crii_metadata(nested)
    return None


def _require(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    crii = crii_metadata(meta)
    if crii is None:
        raise VolumeError(
            "This layer carries no CRII geometry (metadata['crii']); open the image with the "
            "napari-crii reader or make the layer from one that was."
        )
    return crii


def _check_axes(axes: Sequence[int]) -> None:
    if sorted(axes) != [0, 1, 2]:
        raise VolumeError(f"Invalid display_axes {list(axes)}: expected a permutation of 0, 1, 2.")


def display_axes(meta: Mapping[str, Any]) -> list[int]:
    """The validated ``display_axes`` of ``meta``."""
    axes = [int(a) for a in _require(meta)["display_axes"]]
    _check_axes(axes)
    return axes


def _check_3d(array: np.ndarray, what: str) -> None:
    if array.ndim != 3:
        raise VolumeError(f"Expected a 3D {what} array, got shape {array.shape}.")


def to_display(array: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """A source-order array in display order (a C-contiguous copy when axes move)."""
    arr = np.asarray(array)
    _check_3d(arr, "source-order")
    return np.ascontiguousarray(np.transpose(arr, display_axes(meta)))


def to_source(array: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """A display-order array back in the source file's stored order."""
    arr = np.asarray(array)
    _check_3d(arr, "display-order")
    return np.transpose(arr, np.argsort(display_axes(meta)))


def display_shape(source_shape: Sequence[int], meta: Mapping[str, Any]) -> tuple[int, ...]:
    """The display-order shape of a source-order shape."""
    return tuple(int(source_shape[a]) for a in display_axes(meta))


def display_scale(meta: Mapping[str, Any]) -> tuple[float, float, float]:
    """Voxel sizes in display order."""
    crii = _require(meta)
    zooms = [float(z) for z in crii["geometry"]["zooms"]]
    a, b, c = display_axes(crii)
    return (zooms[a], zooms[b], zooms[c])


def layer_kwargs_for(meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``name``, ``scale``, ``translate`` and ``metadata`` for any layer of this volume."""
    crii = _require(meta)
    return {
        "name": name,
        "scale": display_scale(crii),
        "translate": TRANSLATE,
        "metadata": {METADATA_KEY: copy.deepcopy(crii)},
    }


def geometry_from_metadata(meta: Mapping[str, Any]) -> Geometry:
    """The source :class:`Geometry`, with the full NIfTI header re-read when the file exists.

    The header is used only when the file's affine still matches the recorded one; otherwise
    (file moved, replaced or unreadable) the geometry comes from the JSON record alone.
    """
    crii = _require(meta)
    geometry = Geometry.from_json(crii["geometry"])
    header_path = crii.get("nifti_header_path")
    if geometry.source_format != "nifti" or not header_path:
        return geometry
    header = _read_header(Path(header_path))
    if header is None:
        return geometry
    if not np.allclose(header.get_best_affine(), geometry.affine, rtol=0, atol=1e-5):
        warnings.warn(
            f"'{header_path}' no longer has the affine this layer was read with; writing with "
            "the recorded affine and a fresh header.",
            UserWarning,
            stacklevel=2,
        )
        return geometry
    geometry.nifti_header = header
    return geometry


def _read_header(path: Path) -> Any:
    """The NIfTI header of ``path`` (data not read), or None when it cannot be read."""
    import nibabel
    from nibabel.nifti1 import Nifti1Image

    if not path.is_file():
        return None
    try:
        img = nibabel.load(path)
    except Exception:
        return None
    return img.header.copy() if isinstance(img, Nifti1Image) else None


def identity_metadata(
    scale: Sequence[float] | None = None, translate: Sequence[float] | None = None
) -> dict[str, Any]:
    """``crii`` metadata for a layer with no source volume: display order is stored order.

    The affine is napari's own mapping of the layer (``scale`` on the diagonal, ``translate``
    as origin); either falls back to 1 / 0 unless it has three values.
    """
    zooms = _three(scale, 1.0)
    origin = _three(translate, 0.0)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = origin
    geometry = Geometry(affine, (zooms[0], zooms[1], zooms[2]), "nifti")
    return metadata_for(geometry, None, display_axes=[0, 1, 2])


def _three(values: Sequence[float] | None, default: float) -> list[float]:
    if values is None or len(values) != 3:
        return [default] * 3
    return [float(v) for v in values]
