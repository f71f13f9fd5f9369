"""Errors a person can act on. Every message says what was wrong and what to do."""


class CriiError(Exception):
    """Base class of every error the backend raises on purpose."""


class VolumeError(CriiError):
    """A file that is not a readable 3D volume, or a volume we cannot use."""


class AnnotationError(CriiError):
    """Labels that do not fit the image, or no usable annotation."""


class CheckpointError(CriiError):
    """A model file that is not ours, is broken, or does not fit the data."""


class ConfigError(CriiError):
    """A configuration value out of range or unknown."""


class TrainingError(CriiError):
    """Training cannot go on (a non-finite loss, for instance)."""
