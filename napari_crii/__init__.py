"""napari plugin for CRII-Net: annotate a few slices, train in the background, review, export."""

__version__ = "0.1.0"
