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

from napari_crii import _geometry
from training_backend.errors import VolumeError

COARSE = "crii coarse"
REFINED = "crii refined"
HARDNESS = "crii hardness"
PREDICTION_NAMES = (COARSE, REFINED, HARDNESS)


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
    """Give an existing ``layer`` the scale, translate and metadata of ``image``."""
    kwargs = derived_layer_kwargs(image, layer.name)
    layer.scale = kwargs["scale"]
    layer.translate = kwargs["translate"]
    layer.metadata = copy.deepcopy(kwargs["metadata"])


def empty_annotations(image: Layer, name: str | None = None) -> Labels:
    """A new, empty Labels layer that fits ``image`` (shape, scale, translate, metadata)."""
    kwargs = derived_layer_kwargs(image, name or f"{image.name} annotations")
    return Labels(np.zeros(image.data.shape, dtype=np.uint8), **kwargs)


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

    def ensure(self, image: Layer) -> None:
        """Make sure the three layers exist, fit ``image`` and sit above it."""
        shape = tuple(image.data.shape)
        with keep_selection(self.viewer):
            for name in PREDICTION_NAMES:
                layer = self.get(name)
                if layer is not None and tuple(layer.data.shape) == shape:
                    align_with(layer, image)
                    continue
                if layer is not None:
                    self.viewer.layers.remove(layer)
                self.viewer.add_layer(self._new_layer(name, image, shape))

    def _new_layer(self, name: str, image: Layer, shape: tuple[int, ...]) -> Layer:
        kwargs = derived_layer_kwargs(image, name)
        if name == HARDNESS:
            return Image(
                np.zeros(shape, dtype=np.float32),
                colormap="inferno",
                blending="additive",
                opacity=0.6,
                contrast_limits=(0.0, 1.0),
                **kwargs,
            )
        labels = Labels(np.zeros(shape, dtype=np.uint8), opacity=0.5, **kwargs)
        labels.visible = name == REFINED
        return labels

    def set_slice(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one slice (along axis 0) of each array into its layer and redraw that layer."""
        for name, array in arrays.items():
            layer = self.get(name)
            if layer is None or not 0 <= index < layer.data.shape[0]:
                continue
            if tuple(layer.data.shape[1:]) != tuple(array.shape):
                continue
            layer.data[index] = array
            layer.refresh()

    def set_volumes(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace each layer's data with the whole-volume array of the same shape."""
        for name, array in arrays.items():
            layer = self.get(name)
            if layer is None or tuple(layer.data.shape) != tuple(array.shape):
                continue
            if name == HARDNESS:
                layer.data = array.astype(np.float32, copy=False)
            else:
                layer.data = array.astype(np.uint8, copy=False)

    def slice_of(self, name: str, index: int) -> np.ndarray | None:
        layer = self.get(name)
        if layer is None or not 0 <= index < layer.data.shape[0]:
            return None
        return np.asarray(layer.data[index])


PREVIEW_KEYS = {"refined": REFINED, "coarse": COARSE, "hardness": HARDNESS}
VOLUME_KEYS = PREVIEW_KEYS


def read_preview(path: str) -> dict[str, np.ndarray]:
    """The arrays of a ``preview.npz`` keyed by layer name (empty if the file is gone)."""
    try:
        with np.load(path) as data:
            return {PREVIEW_KEYS[k]: np.asarray(data[k]) for k in PREVIEW_KEYS if k in data}
    except (OSError, ValueError, KeyError):
        return {}


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
