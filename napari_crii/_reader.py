"""napari reader: NIfTI and TIFF volumes as image or labels layers in display order.

A file is opened as a **labels** layer when its values are whole numbers >= 0 and either its
file or folder name says so (a name token starting with ``label``, or one of ``seg``,
``segmentation``, ``mask``, ``annotation``, ``gt``, ``truth``...) or it holds at most
:data:`MAX_UNNAMED_LABELS` distinct values. Anything else is an image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_crii import _geometry
from training_backend.errors import VolumeError
from training_backend.io import Volume, oblique_warning, read_volume

LayerData = tuple[Any, ...]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

SUFFIXES = (".nii.gz", ".nii", ".tiff", ".tif")
MAX_UNNAMED_LABELS = 32
_CHUNK = 1 << 20
_LABEL_TOKENS = frozenset(
    {
        "seg",
        "segs",
        "segmentation",
        "segmentations",
        "mask",
        "masks",
        "annotation",
        "annotations",
        "annot",
        "gt",
        "truth",
        "groundtruth",
        "aseg",
    }
)


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """A function reading ``path`` (one file or a list), or None unless all are ours."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(_is_ours(p) for p in paths):
        return None
    return read_layers


def _is_ours(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and os.fspath(path).lower().endswith(SUFFIXES)


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """Layer data tuples for each file; a file that cannot be read is reported, not raised.

    Returns napari's "read, nothing to add" value ``[(None,)]`` when no file could be read, so
    napari does not raise a second error after the notification.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            volume = read_volume(p)
            data = layer_data_for(volume)
        except VolumeError as exc:
            _show_error(f"napari-crii could not open {Path(os.fspath(p)).name}: {exc}")
            continue
        warning = oblique_warning(volume)
        if warning is not None:
            _show_warning(warning)
        layers.append(data)
    return layers or [(None,)]


def _show_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _show_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def layer_name(path: str | os.PathLike[str]) -> str:
    """The file name without its volume suffix (``case_001.nii.gz`` -> ``case_001``)."""
    name = Path(os.fspath(path)).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def layer_data_for(volume: Volume) -> LayerData:
    """An image or labels layer data tuple for ``volume``, in display order."""
    meta = _geometry.metadata_for_volume(volume)
    path = volume.path if volume.path is not None else Path("volume")
    kwargs = _geometry.layer_kwargs_for(meta, layer_name(path))
    data = _geometry.to_display(volume.array, meta)
    if is_label_volume(volume.array, path):
        return (as_label_array(data), kwargs, "labels")
    kwargs["colormap"] = "gray"
    return (data, kwargs, "image")


def has_label_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name or its folder's name marks a label volume."""
    p = Path(os.fspath(path))
    words = re.split(r"[^a-z]+", f"{layer_name(p)} {p.parent.name}".lower())
    return any(w.startswith("label") or w in _LABEL_TOKENS for w in words if w)


def is_label_volume(array: np.ndarray, path: str | os.PathLike[str]) -> bool:
    """Whole numbers >= 0, and a label-like name or few distinct values (see module doc)."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return True
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        return False
    limit = None if has_label_name(path) else MAX_UNNAMED_LABELS
    flat = arr.reshape(-1)
    # A strided sample rejects most images cheaply before the whole volume is looked at.
    sample = flat[:: max(1, flat.size // 65536)]
    return _label_like(sample, limit) and _label_like(flat, limit)


def _label_like(flat: np.ndarray, limit: int | None) -> bool:
    """Whole numbers in 0..2**31-1 and, given ``limit``, at most that many distinct values."""
    seen: set[Any] = set()
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if chunk.dtype.kind == "f" and not (
            np.all(np.isfinite(chunk)) and np.array_equal(chunk, np.floor(chunk))
        ):
            return False
        if chunk.min() < 0 or chunk.max() > np.iinfo(np.int32).max:
            return False
        if limit is not None:
            seen.update(np.unique(chunk).tolist())
            if len(seen) > limit:
                return False
    return True


def as_label_array(data: np.ndarray) -> np.ndarray:
    """``data`` with an integer dtype napari's Labels accepts (whole-valued floats cast)."""
    if data.dtype.kind in "iu":
        return data
    top = int(data.max()) if data.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32
    return data.astype(dtype)
