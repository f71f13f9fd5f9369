"""The ``crii`` command: train, predict, suggest, demo. Outside tools call it: keep it stable."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import numpy as np

from training_backend import __version__, distributed, memory
from training_backend.annotations import SparseAnnotation
from training_backend.config import DEVICES, METHODS, CriiConfig
from training_backend.devices import resolve_device
from training_backend.errors import AnnotationError, ConfigError, CriiError
from training_backend.events import Error, Event, encode
from training_backend.inference import (
    describe_class_borders,
    load_model,
    predict_final,
    suggest_slices,
)
from training_backend.io import (
    Volume,
    default_slice_axis,
    oblique_warning,
    read_volume,
    write_volume,
)
from training_backend.trainer import STOP_FILE, StopSignal, TrainingJob, TrainingVolume, train

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
MAX_LABEL = 254
"""The highest class label (the network segments at most 255 classes, background included)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crii",
        description="CRII-Net: segment a 3D volume from a few annotated slices.",
    )
    parser.add_argument("--version", action="version", version=f"napari-crii {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train a model from sparse annotations")
    t.add_argument(
        "--image",
        action="append",
        required=True,
        type=Path,
        help="image volume (.nii, .nii.gz, .tif, .tiff); repeat with --labels",
    )
    t.add_argument(
        "--labels",
        action="append",
        required=True,
        type=Path,
        help="label volume of the preceding --image (0 = background, 1..K classes)",
    )
    t.add_argument(
        "--background-slices",
        action="append",
        default=None,
        metavar="SLICES",
        help="annotated slices that hold only background, for the matching --labels "
        "(e.g. '0,5,10-12'); 'all' marks every slice annotated (a fully "
        "labeled volume); repeat once per --labels, '' for none",
    )
    t.add_argument(
        "--unlabeled",
        action="append",
        default=[],
        type=Path,
        help="further unannotated volume used as unlabeled data (repeatable)",
    )
    t.add_argument("--out", required=True, type=Path, help="run folder (model.pt, train.log)")
    t.add_argument("--method", choices=METHODS, help="default: crii (or the resumed model's)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, help="budget in training iterations")
    budget.add_argument("--seconds", type=float, help="budget in seconds (default 60)")
    t.add_argument("--device", choices=DEVICES, help="default: auto (CUDA, then MPS, then CPU)")
    t.add_argument("--seed", type=int, help="default: 0")
    t.add_argument(
        "--axis",
        type=int,
        choices=(0, 1, 2),
        help="slice axis of the array (default: axial for NIfTI, 0 for TIFF)",
    )
    t.add_argument("--init", type=Path, help="warm start from this model (a previous round)")
    t.add_argument("--resume", type=Path, help="continue this checkpoint (optimiser included)")
    t.add_argument("--events", help="write JSON events, one per line, to FILE or '-' (stdout)")
    t.add_argument("--config", type=Path, help="JSON file of settings {model, loss, train}")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set train.learning_rate=0.001",
    )
    t.add_argument("--preview-slice", type=int, help="slice to preview while training")
    t.add_argument(
        "--predict",
        action="store_true",
        help="at the end, write whole-volume predictions and suggestions (.npy)",
    )
    t.add_argument(
        "--no-mixed-precision",
        action="store_true",
        help="train in float32 (mixed precision is used on CUDA and on CPUs with native bf16)",
    )

    p = commands.add_parser("predict", help="segment a volume with a trained model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="refined mask (.nii.gz, .nii, .tif)")
    p.add_argument("--coarse", type=Path, help="also write the coarse mask")
    p.add_argument(
        "--probabilities",
        type=Path,
        help="refined foreground probability (1 - p_background); .npy keeps all "
        "classes as (K, ...)",
    )
    p.add_argument("--hardness", type=Path, help="also write the hard-boundary map")
    p.add_argument(
        "--labels",
        type=Path,
        help="the annotations the model was trained from: the mask then gets the same "
        "finishing as at the end of training (shape prior, components; see predict settings)",
    )
    p.add_argument(
        "--background-slices",
        metavar="SLICES",
        help="with --labels: the annotated slices that hold only background, as in training",
    )
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--axis", type=int, choices=(0, 1, 2))

    s = commands.add_parser("suggest", help="rank the slices worth annotating next (JSON)")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--image", required=True, type=Path)
    s.add_argument("--labels", required=True, type=Path)
    s.add_argument(
        "--background-slices",
        metavar="SLICES",
        help="the annotated slices that hold only background, as in training",
    )
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--axis", type=int, choices=(0, 1, 2))

    commands.add_parser("devices", help="list the devices present (JSON on stdout)")

    d = commands.add_parser("demo", help="train and predict on the synthetic phantom")
    d.add_argument("--out", type=Path, default=Path("crii-demo"))
    d.add_argument("--seconds", type=float, default=60.0)
    d.add_argument("--device", choices=DEVICES, default="auto")
    d.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": run_train,
        "predict": run_predict,
        "suggest": run_suggest,
        "demo": run_demo,
        "devices": run_devices,
    }
    try:
        return handlers[args.command](args)
    except CriiError as exc:
        print(f"crii {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"crii {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: keep the traceback, end with one line
        traceback.print_exc()
        print(f"crii {args.command}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def parse_slices(text: str | None, count: int) -> list[int]:
    """'0,5,10-12' -> [0, 5, 10, 11, 12]; 'all' -> every slice; '' or None -> []."""
    if not text:
        return []
    if text.strip().lower() == "all":
        return list(range(count))
    found: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                found.extend(range(int(low), int(high) + 1))
            elif part:
                found.append(int(part))
        except ValueError as exc:
            raise AnnotationError(
                f"cannot read slice list {text!r}: use indices and ranges like '0,5,10-12'"
            ) from exc
    return found


def build_config(args: argparse.Namespace) -> CriiConfig:
    """Defaults (or the resumed model's settings), then --config, then explicit flags, then
    --set overrides."""
    data = CriiConfig().to_dict()
    if getattr(args, "resume", None) is not None:  # a resumed run goes on as it was set up
        from training_backend.checkpoint import load_checkpoint

        data = load_checkpoint(args.resume).config.to_dict()
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{args.config}: cannot read the settings file: {exc}") from exc
        for section, values in (loaded or {}).items():
            data.setdefault(section, {}).update(values if isinstance(values, dict) else {})
    train = data["train"]
    for name in ("method", "device", "seed"):
        if getattr(args, name) is not None:
            train[name] = getattr(args, name)
    if args.iterations is not None:
        train.update(iterations=args.iterations, seconds=None)
    elif args.seconds is not None:
        train.update(seconds=args.seconds, iterations=None)
    if args.no_mixed_precision:
        train["mixed_precision"] = False
    for item in args.set:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if not name or section not in data:
            raise ConfigError(
                f"--set {item!r}: use SECTION.KEY=VALUE with SECTION in {sorted(data)}"
            )
        data[section][name] = _parse_value(raw)
    data["model"]["in_channels"] = 2 * int(data["train"]["context"]) + 1
    return CriiConfig.from_dict(data)


def read_checked(path: Path) -> Volume:
    """Read a volume; an oblique one is read as is, with a warning on stderr."""
    volume = read_volume(path)
    warning = oblique_warning(volume)
    if warning is not None and distributed.is_main():
        print(f"crii: warning: {warning}", file=sys.stderr)
    return volume


def _parse_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_training_volumes(
    args: argparse.Namespace, num_classes: int | None
) -> tuple[list[TrainingVolume], int]:
    """Read images, labels and unlabeled volumes; return them and the slice axis."""
    if len(args.image) != len(args.labels):
        raise AnnotationError(
            f"{len(args.image)} --image but {len(args.labels)} --labels: give one --labels "
            "per annotated --image (use --unlabeled for images without labels)"
        )
    backgrounds = args.background_slices or []
    if len(backgrounds) > len(args.labels):
        raise AnnotationError("more --background-slices than --labels: give one per --labels")
    pairs = []
    for image_path, label_path in zip(args.image, args.labels, strict=True):
        pairs.append((read_checked(image_path), read_volume(label_path)))
    first_image = pairs[0][0]
    axis = args.axis if args.axis is not None else default_slice_axis(first_image.geometry)
    if num_classes is None:
        for _, labels in pairs:
            top = float(np.nanmax(labels.array, initial=0))
            if top > MAX_LABEL:
                raise AnnotationError(
                    f"{labels.path}: holds the label value {top:g}, but labels go from 0 "
                    f"(background) to at most {MAX_LABEL}. Is it an image rather than a label "
                    "volume? Otherwise relabel the classes 1, 2, 3..."
                )
        num_classes = max(2, *(int(np.max(labels.array, initial=0)) + 1 for _, labels in pairs))
    volumes = []
    for index, (image, labels) in enumerate(pairs):
        count = image.array.shape[axis]
        annotation = SparseAnnotation.from_labels(
            labels.array,
            image.array.shape,
            axis,
            background_slices=parse_slices(
                backgrounds[index] if index < len(backgrounds) else None, count
            ),
            num_classes=num_classes,
            source=str(labels.path),
        )
        volumes.append(
            TrainingVolume(image.array, annotation, image.geometry.zooms, str(image.path))
        )
    for path in args.unlabeled:
        volume = read_checked(path)
        volumes.append(TrainingVolume(volume.array, None, volume.geometry.zooms, str(path)))
    return volumes, axis


def adopt_model_shape(config: CriiConfig, args: argparse.Namespace) -> int | None:
    """With --init or --resume, the network shape and 2.5D context come from that model (its
    weights only fit that shape); return its class count, or None without a model."""
    from training_backend.checkpoint import load_checkpoint

    source = args.resume or args.init
    if source is None:
        return None
    stored = load_checkpoint(source).config
    config.model = dataclasses.replace(stored.model)
    config.train.context = stored.train.context
    return stored.model.num_classes


def run_train(args: argparse.Namespace) -> int:
    events_to_stdout = args.events == "-"
    with ExitStack() as stack:
        event_stream: TextIO | None = None
        if events_to_stdout:
            event_stream = sys.stdout
        elif args.events:
            event_stream = stack.enter_context(open(args.events, "w", encoding="utf-8"))
        emit = _emitter(event_stream, quiet=events_to_stdout)
        try:
            config = build_config(args)
            model_classes = adopt_model_shape(config, args)
            volumes, axis = load_training_volumes(args, model_classes)
            config.model.num_classes = volumes[0].annotation.num_classes
            config.train.axis = axis
            config.validate()
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / STOP_FILE).unlink(missing_ok=True)
        except CriiError as exc:
            emit(Error(message=str(exc), error_type=type(exc).__name__))
            return EXIT_USER_ERROR
        except OSError as exc:
            emit(
                Error(
                    message=f"cannot prepare the run folder {args.out}: {exc}", error_type="OSError"
                )
            )
            return EXIT_USER_ERROR
        stop = StopSignal(args.out / STOP_FILE)
        _install_stop_handlers(stop)
        job = TrainingJob(
            config=config,
            volumes=volumes,
            run_dir=args.out,
            init_model=args.init,
            resume=args.resume,
            preview_slice=args.preview_slice,
            predict_at_end=args.predict,
            stop=stop,
        )
        log = None
        if distributed.is_main():
            (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            log = stack.enter_context(open(args.out / "train.log", "a", encoding="utf-8"))
        failed = False
        ended = False  # False also for Ctrl-C and SystemExit, which pass the handlers below
        try:
            for event in train(job):
                if log is not None:
                    log.write(encode(event) + "\n")
                    log.flush()
                emit(event)
                failed = failed or isinstance(event, Error)
            ended = True
        except CriiError as exc:  # a process other than rank 0 (rank 0 gets an Error event)
            print(f"crii train: process {distributed.rank()}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception as exc:  # an internal error: tell the reader, keep the traceback
            detail = traceback.format_exc()
            if log is not None:
                log.write(detail)
            if not distributed.is_main():  # no log and no events here: stderr is all there is
                print(f"crii train: process {distributed.rank()}: internal error\n{detail}",
                      file=sys.stderr)  # fmt: skip
            peers = (
                " Under torchrun this often means that another process stopped first: its "
                "message is above."
                if distributed.active() and distributed.inside_training_loop()
                else ""
            )
            emit(
                Error(
                    message=f"internal error ({type(exc).__name__}: {exc}); details in "
                    f"{args.out / 'train.log'}.{peers}",
                    error_type=type(exc).__name__,
                )
            )
            return EXIT_INTERNAL_ERROR
        finally:
            distributed.shutdown(failed=failed or not ended)
        return EXIT_USER_ERROR if failed else 0


def _emitter(stream: TextIO | None, quiet: bool) -> Callable[[Event], None]:
    """Send each event to the JSON stream and/or a human-readable console reporter."""
    from training_backend.console import ConsoleReporter

    console = None if quiet else ConsoleReporter()

    def emit(event: Event) -> None:
        if not distributed.is_main():
            return
        if stream is not None:
            stream.write(encode(event) + "\n")
            stream.flush()
        if console is not None:
            console(event)

    return emit


def _install_stop_handlers(stop: StopSignal) -> None:
    """SIGINT and SIGTERM ask for a clean stop after the current step (a second one kills).
    Under torchrun every process gets them, and they agree on the step to stop at."""

    def handler(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request()

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def run_predict(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, data = load_model(args.model, device)
    volume = read_checked(args.image)
    axis = _prediction_axis(args.axis, data.axis, volume)
    _check_prediction_memory(volume, data.config)
    annotation = None
    if args.labels is not None:
        annotation = _read_annotation(args, volume, axis, data.num_classes)
    elif args.background_slices:
        raise AnnotationError("--background-slices needs --labels (the annotations they extend)")
    prediction = predict_final(
        model, data.config, volume.array, axis, device, annotation, volume.geometry.zooms
    )
    written = [write_volume(args.out, prediction.refined, volume.geometry)]
    if args.coarse:
        written.append(write_volume(args.coarse, prediction.coarse, volume.geometry))
    if args.hardness:
        written.append(write_volume(args.hardness, prediction.hardness, volume.geometry))
    if args.probabilities:
        if args.probabilities.suffix == ".npy":
            np.save(args.probabilities, prediction.probabilities)
            written.append(args.probabilities)
        else:
            foreground = 1.0 - prediction.probabilities[0]
            written.append(write_volume(args.probabilities, foreground, volume.geometry))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    borders = describe_class_borders(data.config, annotation, volume.array)
    if borders:
        print(borders, file=sys.stderr)
    return 0


def _read_annotation(
    args: argparse.Namespace, image: Volume, axis: int, num_classes: int
) -> SparseAnnotation:
    """The annotation of ``--labels`` and ``--background-slices`` as training read it, so that
    ``predict`` and ``suggest`` finish a scan the same way."""
    return SparseAnnotation.from_labels(
        read_volume(args.labels).array,
        image.array.shape,
        axis,
        background_slices=parse_slices(args.background_slices, image.array.shape[axis]),
        num_classes=num_classes,
        source=str(args.labels),
    )


def _check_prediction_memory(volume: Volume, config: CriiConfig) -> None:
    orientations = 3 if config.train.orientations == "all" else 1
    shape = volume.array.shape
    needed = memory.prediction_bytes(shape, config.model.num_classes, orientations)
    memory.check_fits(needed, "predicting", str(volume.path), shape)


def _prediction_axis(requested: int | None, trained: int | None, volume) -> int:
    if requested is not None:
        return requested
    if trained is not None:
        return trained
    return default_slice_axis(volume.geometry)


def run_suggest(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, data = load_model(args.model, device)
    image = read_checked(args.image)
    axis = _prediction_axis(args.axis, data.axis, image)
    annotation = _read_annotation(args, image, axis, data.num_classes)
    _check_prediction_memory(image, data.config)
    prediction = predict_final(
        model, data.config, image.array, axis, device, annotation, image.geometry.zooms
    )
    picks = suggest_slices(prediction.slice_scores(axis), annotation.annotated, args.count)
    result = {
        "axis": axis,
        "annotated": annotation.annotated_indices,
        "slices": [{"index": index, "score": round(score, 6)} for index, score in picks],
    }
    print(json.dumps(result))
    return 0


def run_devices(args: argparse.Namespace) -> int:
    """``[{"name": "cuda", "description": "CUDA: <card>"}, ..., {"name": "cpu", ...}]``: the
    plugin asks this in a child process so that napari never imports torch or starts CUDA."""
    from training_backend.devices import available_devices

    print(json.dumps([{"name": n, "description": d} for n, d in available_devices()]))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from training_backend.demo import run_demo as demo

    demo(args.out, seconds=args.seconds, device=args.device, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
