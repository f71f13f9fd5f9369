"""napari writer: a labels layer to NIfTI or TIFF in the geometry of its source image."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_crii import _geometry
from training_backend.errors import VolumeError
from training_backend.io import format_for, write_volume


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write labels ``data`` (display order) to ``path`` in the stored order of its source.

    ``meta`` is the layer's attributes as napari passes them (``metadata``, ``scale``...). The
    NIfTI header (codes, units, description) is re-read from the source file when it still
    exists. A layer without CRII metadata is written as displayed, with its napari scale and
    translate as the affine, and a warning. Refuses to overwrite the source image.
    """
    out = Path(os.fspath(path))
    format_for(out)  # an unsupported extension fails before anything else
    labels = _integer_labels(np.asarray(data), out)
    crii = _geometry.crii_metadata(meta)
    if crii is None:
        warnings.warn(
            f"Layer {meta.get('name', '')!r} has no CRII geometry (it was not opened with "
            f"napari-crii): '{out}' is written in display order with the layer's scale and "
            "translate as its affine.",
            UserWarning,
            stacklevel=2,
        )
        if labels.ndim == 2:
            labels = labels[np.newaxis]
        crii = _geometry.identity_metadata(
            _three(meta.get("scale"), 1.0), _three(meta.get("translate"), 0.0)
        )
    _refuse_source(out, crii)
    geometry = _geometry.geometry_from_metadata(crii)
    write_volume(out, _geometry.to_source(labels, crii), geometry)
    return [str(out)]


def _three(values: Any, fill: float) -> list[float] | None:
    """The last three of napari's per-axis values, ``fill`` first for a 2D layer."""
    if values is None:
        return None
    floats = [float(v) for v in values]
    return ([fill] * 3 + floats)[-3:] if len(floats) >= 2 else None


def _refuse_source(out: Path, crii: dict[str, Any]) -> None:
    source = crii.get("source_path")
    if not source:
        return
    if out.resolve() == Path(source).resolve():
        raise VolumeError(
            f"Refusing to overwrite the source image '{source}' with labels. Choose another "
            "file name, e.g. '<name>_labels.nii.gz'."
        )


def _integer_labels(data: np.ndarray, out: Path) -> np.ndarray:
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype.kind in "iu":
        return data
    whole = data.dtype.kind == "f" and np.all(np.isfinite(data))
    if whole and np.array_equal(data, np.round(data)):
        return data.astype(np.int64)
    raise VolumeError(
        f"Cannot write '{out}': labels must be whole numbers, got data type {data.dtype}."
    )
