"""Layers derived from the image: the empty annotations layer and the prediction layers.

Every derived layer carries the image's scale, translate and ``metadata["crii"]`` (the
geometry helper of :mod:`napari_crii._geometry`), so it stays aligned with the image and exports
in the source's geometry. Prediction layers are updated in place: one slice while training
(no copy of the volume), the whole volume once at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QTimer

from napari_crii import _geometry
from training_backend.errors import VolumeError

COARSE = "crii coarse"
REFINED = "crii refined"
HARDNESS = "crii hardness"
PREDICTION_NAMES = (COARSE, REFINED, HARDNESS)
STAGGER_MS = 50
HARDNESS_CONTRAST = (0.05, 0.5)
"""Hardness lies in [0, 1] on an absolute scale; on the phantom 90% of voxels lie below 0.05
(black, adds nothing over the image) and 0.5 is beyond the 99.9th percentile, so the hard
boundary stands out."""


def derived_layer_kwargs(image: Layer, name: str) -> dict[str, Any]:
    """``name``, ``scale``, ``translate`` and ``metadata`` for a layer aligned with ``image``."""
    try:
        kwargs = _geometry.layer_kwargs_for(image.metadata, name)
    except VolumeError:  # an image opened without napari-crii: its napari geometry is the truth
        scale, translate = tuple(image.scale), tuple(image.translate)
        meta = _geometry.identity_metadata(scale, translate)
        return {
            "name": name,
            "scale": scale,
            "translate": translate,
            "metadata": {_geometry.METADATA_KEY: meta},
        }
    kwargs["scale"] = tuple(image.scale)
    kwargs["translate"] = tuple(image.translate)
    return kwargs


def align_with(layer: Layer, image: Layer) -> None:
    """Give an existing ``layer`` the scale, translate and metadata of ``image`` (if it differs:
    each change makes napari redraw)."""
    kwargs = derived_layer_kwargs(image, layer.name)
    for key in ("scale", "translate"):
        if not np.allclose(getattr(layer, key), kwargs[key]):
            setattr(layer, key, kwargs[key])
    if layer.metadata != kwargs["metadata"]:
        layer.metadata = copy.deepcopy(kwargs["metadata"])


def empty_annotations(image: Layer, name: str | None = None) -> Labels:
    """A new, empty Labels layer that fits ``image`` (shape, scale, translate, metadata)."""
    kwargs = derived_layer_kwargs(image, name or f"{image.name} annotations")
    return Labels(np.zeros(image.data.shape, dtype=np.uint8), **kwargs)


def current_slice(viewer: Any, image: Layer | None) -> int:
    """The index along ``image``'s axis 0 of the slice the viewer shows."""
    if image is None:
        return int(viewer.dims.current_step[0])
    index = round(float(image.world_to_data(viewer.dims.point)[0]))
    return min(max(index, 0), image.data.shape[0] - 1)


def go_to_slice(viewer: Any, image: Layer | None, index: int) -> None:
    """Move the slider to slice ``index`` of ``image``'s axis 0."""
    if image is None:
        viewer.dims.set_current_step(0, index)
        return
    world = image.data_to_world([index, 0, 0])
    viewer.dims.set_point(viewer.dims.ndim - 3, float(world[0]))


def copy_slice_undoable(labels: Labels, values: np.ndarray, index: int) -> int:
    """Write ``values`` into slice ``index`` of ``labels`` as one step of the layer's own undo
    history (Ctrl-Z or ``labels.undo()`` restores it); return the number of voxels changed."""
    changed = np.nonzero(np.asarray(labels.data[index]) != values)
    if changed[0].size:
        indices = (np.full(changed[0].size, index), *changed)
        with labels.block_history():
            labels.data_setitem(indices, values[changed].astype(labels.data.dtype))
    return int(changed[0].size)


@contextmanager
def keep_selection(viewer: Any) -> Iterator[None]:
    """Adding a layer selects it: give the user back the layer they were painting on."""
    selection = viewer.layers.selection
    active, selected = selection.active, set(selection)
    try:
        yield
    finally:
        selection.clear()
        selection.update({layer for layer in selected if layer in viewer.layers})
        if active is not None and active in viewer.layers:
            selection.active = active


class PredictionLayers:
    """The coarse, refined and hardness layers of one image, created on demand."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer

    def get(self, name: str) -> Layer | None:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def ensure(self, image: Layer, names: tuple[str, ...] = PREDICTION_NAMES) -> None:
        """Make sure the layers called ``names`` exist, fit ``image`` and sit above it."""
        shape = tuple(image.data.shape)
        with keep_selection(self.viewer):
            for name in names:
                layer = self.get(name)
                if layer is not None and tuple(layer.data.shape) == shape:
                    align_with(layer, image)
                    continue
                if layer is not None:
                    self.viewer.layers.remove(layer)
                self.viewer.add_layer(self._new_layer(name, image, shape))

    def ensure_soon(self, image: Layer, names: tuple[str, ...] = PREDICTION_NAMES) -> None:
        """:meth:`ensure` one layer at a time, with the event loop running in between: adding
        a layer costs napari a few hundred ms (visuals, overlays), three in a row would freeze
        the window for a second."""
        if not names or image not in self.viewer.layers:
            return
        self.ensure(image, names[:1])
        QTimer.singleShot(STAGGER_MS, lambda: self.ensure_soon(image, names[1:]))

    def _new_layer(self, name: str, image: Layer, shape: tuple[int, ...]) -> Layer:
        kwargs = derived_layer_kwargs(image, name)
        if name == HARDNESS:
            return Image(
                np.zeros(shape, dtype=np.float32),
                colormap="inferno",
                blending="additive",
                opacity=0.6,
                contrast_limits=HARDNESS_CONTRAST,
                **kwargs,
            )
        labels = Labels(np.zeros(shape, dtype=np.uint8), opacity=0.5, **kwargs)
        labels.visible = name == REFINED
        return labels

    def set_slice(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one slice (along axis 0) of each array into its layer; redraw the layer if
        that slice is on screen (napari reads the others when the slider gets there)."""
        for name, array in arrays.items():
            layer = self.get(name)
            if layer is None or not 0 <= index < layer.data.shape[0]:
                continue
            if tuple(layer.data.shape[1:]) != tuple(array.shape):
                continue
            layer.data[index] = array
            if current_slice(self.viewer, layer) == index:
                _redraw_slice(layer)

    def set_volumes(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy each whole-volume array into its layer (in place: napari's data setter would
        re-examine the whole volume) and redraw."""
        for name, array in arrays.items():
            layer = self.get(name)
            if layer is None or tuple(layer.data.shape) != tuple(array.shape):
                continue
            np.copyto(layer.data, array, casting="unsafe")
            layer.refresh()

    def slice_of(self, name: str, index: int) -> np.ndarray | None:
        layer = self.get(name)
        if layer is None or not 0 <= index < layer.data.shape[0]:
            return None
        return np.asarray(layer.data[index])


def _redraw_slice(layer: Layer) -> None:
    """Redraw the displayed slice only: the extent, thumbnail and highlight have not changed."""
    try:
        layer.refresh(extent=False, thumbnail=False, highlight=False)
    except TypeError:  # napari before the keyword arguments of refresh()
        layer.refresh()


PREVIEW_KEYS = {"refined": REFINED, "coarse": COARSE, "hardness": HARDNESS}
VOLUME_KEYS = PREVIEW_KEYS


def read_preview(path: str, slice_index: int) -> tuple[int, dict[str, np.ndarray]]:
    """The slice index and arrays of a ``preview.npz`` keyed by layer name (no arrays if the
    file is gone). The index stored in the file wins over the event's: a newer preview may
    have replaced the file since the event was sent."""
    try:
        with np.load(path) as data:
            if "slice_index" in data:
                slice_index = int(data["slice_index"])
            return slice_index, {
                PREVIEW_KEYS[k]: np.asarray(data[k]) for k in PREVIEW_KEYS if k in data
            }
    except (OSError, ValueError, KeyError):
        return slice_index, {}


def read_volumes(paths: dict[str, str]) -> dict[str, np.ndarray]:
    """The whole-volume ``.npy`` outputs keyed by layer name (missing files left out)."""
    arrays = {}
    for key, name in VOLUME_KEYS.items():
        path = paths.get(key)
        if not path:
            continue
        try:
            arrays[name] = np.load(path)
        except (OSError, ValueError):
            continue
    return arrays
