"""napari sample data: the backend's phantom with 4% of its axial slices annotated."""

from __future__ import annotations

from typing import Any

from napari_crii import _geometry
from training_backend.phantom import phantom_as_nifti
from training_backend.simulate import slices_for_fraction, sparse_labels

ANNOTATED_FRACTION = 0.04


def make_sample_data(seed: int = 0) -> list[tuple[Any, dict[str, Any], str]]:
    """An image layer ``phantom`` and a labels layer ``phantom annotations``, ready to train.

    The phantom comes in NIfTI order (X, Y, Z) with axial slices along Z; it is shown like a
    NIfTI file (slice axis first). It has no file: the geometry lives in the JSON metadata.
    """
    image, truth, geometry = phantom_as_nifti(seed)
    meta = _geometry.metadata_for(geometry, None)
    axial = meta["display_axes"][0]
    annotations = sparse_labels(truth, axial, slices_for_fraction(truth, axial, ANNOTATED_FRACTION))
    image_kwargs = _geometry.layer_kwargs_for(meta, "phantom")
    image_kwargs["colormap"] = "gray"
    return [
        (_geometry.to_display(image, meta), image_kwargs, "image"),
        (
            _geometry.to_display(annotations, meta),
            _geometry.layer_kwargs_for(meta, "phantom annotations"),
            "labels",
        ),
    ]
