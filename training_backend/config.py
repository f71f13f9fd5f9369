"""One validated dataclass tree for a training run; saved inside every checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from training_backend.errors import ConfigError

METHODS = ("crii", "supervised", "mean-teacher")
DEVICES = ("auto", "cpu", "cuda", "mps")
TEACHERS = ("self", "ema", "same-pass")
ORIENTATIONS = ("slice", "all")
AUGMENTATIONS = ("none", "affine", "flips", "affine+flips", "pixel-affine", "pixel-affine+flips")


@dataclass
class ModelConfig:
    """Shape of CRIINet. ``in_channels`` is 2 * context + 1 (2.5D input)."""

    in_channels: int = 3
    num_classes: int = 2
    base_width: int = 16
    levels: int = 4
    refine_width: int = 16


@dataclass
class LossConfig:
    """Weights and hyper-parameters of the CRII-Net losses (docs/method.md)."""

    coarse_weight: float = 0.5
    lambda_intra: float = 0.1
    lambda_inter: float = 0.1
    lambda_cr_max: float = 1.0
    ramp_fraction: float = 0.4
    margin: float = 0.3
    patch_size: int = 16
    hard_pixels: int = 8
    use_prior: bool = True
    prior_extrapolate: bool = True  # the training target uses the prior beyond the outer slices
    prior_align: bool = True  # interpolate outlines moved onto each other (prior.py)
    teacher: str = "ema"
    ema_decay: float = 0.99


@dataclass
class TrainConfig:
    """The loop: method, budget, batches, optimiser, device."""

    method: str = "crii"
    iterations: int | None = None
    seconds: float | None = 60.0
    batch_size: int = 8
    labeled_fraction: float = 0.5
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    crop_size: int = 128
    context: int = 1
    orientations: str = "slice"
    augment: str = "affine"
    axis: int | None = None
    device: str = "auto"
    mixed_precision: bool = True
    preview_seconds: float = 3.0
    checkpoint_every: int = 250
    log_every: int = 10


@dataclass
class PredictConfig:
    """How the network's output becomes the final mask (training_backend.postprocess).

    ``prior_blend`` is the weight of the shape prior of the annotated slices in a late average
    with the network's probabilities; it applies to ``crii`` with ``loss.use_prior`` (the
    prior is part of that method). ``prior_class_split`` is the share of the prior's split of
    the foreground among the classes, where the prior holds foreground (0: the blend's own
    split; the foreground itself is never changed by it); it acts within that blend, so only
    where the blend does, and only between classes whose intensities on the annotated slices
    lie less than ``prior_class_max_contrast`` pooled robust standard deviations apart
    (:func:`~training_backend.postprocess.class_contrast`; None: between all classes).
    Classes the image tells apart (a lesion in an organ) keep the network's border; parts of
    one structure that look alike (the head and body of the hippocampus) get the border of
    the annotated outlines. ``keep_annotated_components`` drops, per class, 3D components
    that touch no annotated voxel of the class.
    """

    prior_blend: float = 0.5
    prior_class_split: float = 1.0
    prior_class_max_contrast: float | None = 1.5
    keep_annotated_components: bool = True


@dataclass
class CriiConfig:
    """Everything a run needs to be repeated."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriiConfig:
        """Build from a plain dict; unknown keys are an error naming the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        parts = {
            "model": ModelConfig,
            "loss": LossConfig,
            "train": TrainConfig,
            "predict": PredictConfig,
        }
        unknown = set(data) - set(parts)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; valid: {sorted(parts)}")
        built = {}
        for name, kind in parts.items():
            values = data.get(name, {}) or {}
            valid = {f.name for f in dataclasses.fields(kind)}
            bad = set(values) - valid
            if bad:
                raise ConfigError(f"unknown {name} settings {sorted(bad)}; valid: {sorted(valid)}")
            built[name] = kind(**values)
        config = cls(**built)
        config.validate()
        return config

    def validate(self) -> CriiConfig:
        """Raise ConfigError naming the first value out of range; return self."""
        m, lo, t = self.model, self.loss, self.train
        _positive_int("model.in_channels", m.in_channels)
        if m.in_channels % 2 != 1:
            raise ConfigError(f"model.in_channels must be odd (2*context+1), got {m.in_channels}")
        _int_in("model.num_classes", m.num_classes, 2, 255)
        _int_in("model.base_width", m.base_width, 4, 256)
        _int_in("model.levels", m.levels, 2, 6)
        _int_in("model.refine_width", m.refine_width, 4, 256)
        for name in ("coarse_weight", "lambda_intra", "lambda_inter", "lambda_cr_max"):
            _float_in(f"loss.{name}", getattr(lo, name), 0.0, 100.0)
        _float_in("loss.ramp_fraction", lo.ramp_fraction, 0.0, 1.0)
        _float_in("loss.margin", lo.margin, 0.0, 1.0)
        _int_in("loss.patch_size", lo.patch_size, 2, 256)
        _int_in("loss.hard_pixels", lo.hard_pixels, 1, 1024)
        _choice("loss.teacher", lo.teacher, TEACHERS)
        _float_in("loss.ema_decay", lo.ema_decay, 0.0, 0.99999)
        _choice("train.method", t.method, METHODS)
        _choice("train.device", t.device, DEVICES)
        if t.iterations is None and t.seconds is None:
            raise ConfigError("give a budget: train.iterations or train.seconds")
        if t.iterations is not None:
            _int_in("train.iterations", t.iterations, 1, 10_000_000)
        if t.seconds is not None:
            _float_in("train.seconds", t.seconds, 0.1, 30 * 24 * 3600.0)
        _int_in("train.batch_size", t.batch_size, 1, 4096)
        _float_in("train.labeled_fraction", t.labeled_fraction, 0.05, 1.0)
        _float_in("train.learning_rate", t.learning_rate, 1e-7, 1.0)
        _float_in("train.weight_decay", t.weight_decay, 0.0, 1.0)
        _int_in("train.seed", t.seed, 0, 2**31 - 1)
        _int_in("train.crop_size", t.crop_size, 16, 4096)
        if t.crop_size % 16:
            raise ConfigError(f"train.crop_size must be a multiple of 16, got {t.crop_size}")
        _int_in("train.context", t.context, 0, 8)
        if m.in_channels != 2 * t.context + 1:
            raise ConfigError(
                f"model.in_channels ({m.in_channels}) must equal 2*train.context+1 "
                f"({2 * t.context + 1})"
            )
        _choice("train.orientations", t.orientations, ORIENTATIONS)
        _choice("train.augment", t.augment, AUGMENTATIONS)
        if t.axis is not None:
            _int_in("train.axis", t.axis, 0, 2)
        _float_in("predict.prior_blend", self.predict.prior_blend, 0.0, 1.0)
        _float_in("predict.prior_class_split", self.predict.prior_class_split, 0.0, 1.0)
        if self.predict.prior_class_max_contrast is not None:
            _float_in(
                "predict.prior_class_max_contrast",
                self.predict.prior_class_max_contrast,
                0.0,
                math.inf,
            )
        for name, value in (
            ("loss.use_prior", lo.use_prior),
            ("loss.prior_extrapolate", lo.prior_extrapolate),
            ("loss.prior_align", lo.prior_align),
            ("train.mixed_precision", t.mixed_precision),
            ("predict.keep_annotated_components", self.predict.keep_annotated_components),
        ):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        _float_in("train.preview_seconds", t.preview_seconds, 0.0, 3600.0)
        _int_in("train.checkpoint_every", t.checkpoint_every, 1, 10_000_000)
        _int_in("train.log_every", t.log_every, 1, 1_000_000)
        return self


def _positive_int(name: str, value: Any) -> None:
    _int_in(name, value, 1, 1_000_000)


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")


def _float_in(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
