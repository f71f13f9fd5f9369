"""The training loop as a generator of events; checkpoint, resume, warm start, stop.

``train(job)`` yields :mod:`training_backend.events` objects. A person, the napari plugin and
the ``crii`` command all consume the same stream. Under ``torchrun`` every rank trains and only
rank 0 yields events and writes files.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training_backend import distributed, losses, memory
from training_backend.annotations import SparseAnnotation
from training_backend.atomic import atomic_path
from training_backend.checkpoint import CheckpointData, load_checkpoint, save_checkpoint
from training_backend.config import CriiConfig, TrainConfig
from training_backend.devices import autocast_for, needs_grad_scaler, resolve_device
from training_backend.errors import CriiError, TrainingError, VolumeError
from training_backend.events import (
    PREVIEW_SLICE_FILE,
    Checkpoint,
    Error,
    Event,
    Finished,
    Notice,
    Prediction,
    Preview,
    Progress,
    Started,
    Suggestions,
)
from training_backend.events import (
    STOP_FILE as STOP_FILE,  # re-exported: callers name the run folder's files from here
)
from training_backend.inference import (
    describe_class_borders,
    predict_final,
    predict_slices,
    suggest_slices,
)
from training_backend.methods import TrainingMethod, build_method
from training_backend.model import build_model
from training_backend.prior import leave_one_out_reliability, shape_prior
from training_backend.volumes import (
    BatchSampler,
    SliceVolume,
    augment,
    normalize_intensity,
    slice_major,
)

MODEL_FILE = "model.pt"
FIRST_PREVIEW_SECONDS = 1.0
"""A person sees the first prediction of a round this soon after training starts."""
DEFAULT_PRIOR_RELIABILITY = 0.5
MIN_SLICES_FOR_RELIABILITY = 4
"""Leave-one-out needs at least two inner annotated slices to say anything (3 gave ~0 on the
hippocampus data whatever the prior's real quality), so below this the default is used."""


class StopSignal:
    """A polite stop request: set in-process, or by creating a file (another process)."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.stop_file = stop_file
        self._requested = False

    def request(self) -> None:
        self._requested = True

    @property
    def requested(self) -> bool:
        return self._requested or (self.stop_file is not None and self.stop_file.exists())


@dataclass
class TrainingVolume:
    """One input volume: its raw image, and its annotation (None for unlabeled data)."""

    image: np.ndarray
    annotation: SparseAnnotation | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    name: str = "volume"


@dataclass
class TrainingJob:
    """Everything one training round needs. The first volume is the one previewed."""

    config: CriiConfig
    volumes: list[TrainingVolume]
    run_dir: Path
    init_model: Path | None = None
    resume: Path | None = None
    preview_slice: int | None = None
    predict_at_end: bool = False
    suggestion_count: int = 5
    stop: StopSignal = field(default_factory=StopSignal)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices); numpy randomness comes from seeded Generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def train(job: TrainingJob) -> Iterator[Event]:
    """Run one round; yield events. Errors a person can act on end as an ``Error`` event (under
    torchrun on rank 0; the other processes raise them)."""
    try:
        yield from _train(job)
    except CriiError as exc:
        if not distributed.is_main():
            raise  # only rank 0 speaks in events; the others exit with the error on stderr
        yield Error(message=str(exc), error_type=type(exc).__name__)


def prepare_volumes(job: TrainingJob, axis: int) -> list[SliceVolume]:
    """The job's volumes as the loop samples them: normalised, slice-major along ``axis``, with
    the shape prior and its weight for ``crii``."""
    config = job.config
    use_prior = config.train.method == "crii" and config.loss.use_prior
    prepared = []
    for volume in job.volumes:
        image = slice_major(normalize_intensity(volume.image, volume.name), axis)
        annotation = volume.annotation
        if annotation is None:
            prepared.append(
                SliceVolume(np.ascontiguousarray(image), None, np.zeros(image.shape[0], bool))
            )
            continue
        if annotation.axis != axis:
            raise VolumeError(f"{volume.name}: annotated along axis {annotation.axis}, not {axis}")
        labels = np.ascontiguousarray(slice_major(annotation.labels, axis))
        prior = weight = None
        if use_prior and not annotation.annotated.all():
            built = shape_prior(
                annotation.labels,
                annotation.annotated,
                axis,
                config.model.num_classes,
                extrapolate=config.loss.prior_extrapolate,
                spacing=volume.spacing,
                align=config.loss.prior_align,
            )
            reliability = None
            if annotation.annotated.sum() >= MIN_SLICES_FOR_RELIABILITY:
                reliability = leave_one_out_reliability(
                    annotation.labels,
                    annotation.annotated,
                    axis,
                    config.model.num_classes,
                    align=config.loss.prior_align,
                )
            reliability = DEFAULT_PRIOR_RELIABILITY if reliability is None else reliability
            prior = np.ascontiguousarray(np.moveaxis(built.probabilities, axis + 1, 1))
            weight = np.ascontiguousarray(slice_major(built.confidence, axis) * reliability)
        prepared.append(
            SliceVolume(
                np.ascontiguousarray(image),
                labels,
                annotation.annotated.copy(),
                prior,
                None if weight is None else weight.astype(np.float32),
            )
        )
    return prepared


def input_notices(job: TrainingJob) -> list[str]:
    """What a person should know about the inputs before training on them: non-finite or
    constant intensities, and annotations that hold only one class."""
    notes = []
    for volume in job.volumes:
        image = np.asarray(volume.image)
        finite = np.isfinite(image) if image.dtype.kind == "f" else None
        bad = 0 if finite is None else int(finite.size - np.count_nonzero(finite))
        if bad:
            notes.append(
                f"{volume.name}: {bad} voxels are NaN or Inf; they are treated as the lowest "
                "intensity."
            )
        values = image[finite] if bad else image
        if values.size and values.min() == values.max():
            notes.append(
                f"{volume.name}: the image is constant (every voxel {values.flat[0]}): there "
                "is nothing to learn from; check that the right image is loaded."
            )
    classes: set[int] = set()
    for volume in job.volumes:
        annotation = volume.annotation
        if annotation is not None and annotation.annotated.any():
            planes = slice_major(annotation.labels, annotation.axis)[annotation.annotated]
            classes.update(int(c) for c in np.unique(planes))
    if classes == {0}:
        notes.append(
            "the annotated slices hold background only: the model can only learn to find "
            "nothing. Paint the structure on a few slices."
        )
    elif len(classes) == 1:
        notes.append(
            f"every annotated pixel is class {classes.pop()}, with no background: the model "
            "cannot learn where the structure ends. Annotate slices that also show background."
        )
    return notes


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA, MPS or the CPU allocator)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _distributed_out_of_memory(
    device: torch.device, batch_size: int, smallest: int
) -> TrainingError:
    """Under torchrun one process cannot shrink its batch alone (the others would wait for it
    in the gradient exchange), so the run stops with what to change."""
    changes = []
    if batch_size > smallest:
        changes.append(f"--set train.batch_size={max(smallest, batch_size // 2)}")
    changes.append("a smaller train.crop_size")
    if device.type == "cuda":
        changes.append("fewer processes per GPU")
    return TrainingError(
        f"out of memory on {device} in process {distributed.rank()} of "
        f"{distributed.world_size()} with {batch_size} slices per batch. Under torchrun the "
        f"batch cannot shrink on one process alone: start again with {' or '.join(changes)}. "
        "The last checkpoint, if one was written, is kept."
    )


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device)


def _check_memory(job: TrainingJob) -> None:
    """Refuse a round whose volumes (and final prediction) would not fit in memory."""
    classes = job.config.model.num_classes
    needed = sum(memory.training_bytes(v.image.shape, classes) for v in job.volumes)
    names = ", ".join(v.name for v in job.volumes)
    shape = job.volumes[0].image.shape
    memory.check_fits(needed, "training on", names, shape)
    if job.predict_at_end:
        orientations = 3 if job.config.train.orientations == "all" else 1
        needed = memory.prediction_bytes(shape, classes, orientations)
        memory.check_fits(needed, "predicting", job.volumes[0].name, shape)


def build_optimizer(network: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the configured rate and weight decay (the rate then follows the schedule)."""
    return torch.optim.AdamW(
        network.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
    )


def learning_rate_at(tc: TrainConfig, progress: float) -> float:
    """The schedule: linear from the configured rate down to a tenth of it."""
    return tc.learning_rate * (1.0 - 0.9 * progress)


def build_sampler(
    volumes: list[SliceVolume],
    method: TrainingMethod,
    tc: TrainConfig,
    size_multiple: int,
    seed: int,
) -> BatchSampler:
    """Batches of labeled slices, and unlabeled ones for the methods that use them."""
    return BatchSampler(
        volumes if method.uses_unlabeled else [v for v in volumes if v.labels is not None],
        tc.batch_size,
        tc.labeled_fraction if method.uses_unlabeled else 1.0,
        tc.crop_size,
        tc.context,
        size_multiple,
        seed=seed,
        all_orientations=tc.orientations == "all",
    )


def _train(job: TrainingJob) -> Iterator[Event]:
    config = job.config.validate()
    tc = config.train
    main = distributed.is_main()
    rank = distributed.rank()
    device = distributed.device_for_rank(resolve_device(tc.device))
    seed_everything(tc.seed + rank)
    annotated = [v for v in job.volumes if v.annotation is not None]
    if not annotated:
        raise VolumeError("no annotated volume: give at least one image with its labels")
    axis = annotated[0].annotation.axis
    _check_memory(job)
    volumes = prepare_volumes(job, axis)
    model = build_model(config.model, device)
    start_iteration = 0
    resumed: CheckpointData | None = None
    if job.resume is not None:
        resumed = load_checkpoint(job.resume, num_classes=config.model.num_classes)
        model.load_state_dict(resumed.model_state)
        start_iteration = resumed.iteration
    elif job.init_model is not None:
        model.load_state_dict(
            load_checkpoint(job.init_model, num_classes=config.model.num_classes).model_state
        )
    network = distributed.wrap(model, device)
    generator = torch.Generator().manual_seed(tc.seed + 7919 * rank)
    method = build_method(config, network, generator)
    if resumed is not None and resumed.teacher_state is not None and method.teacher is not None:
        method.teacher.load_state_dict(resumed.teacher_state)
    optimizer = build_optimizer(network, tc)
    if resumed is not None and resumed.optimizer_state is not None:
        optimizer.load_state_dict(resumed.optimizer_state)
    autocast = autocast_for(device, tc.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, tc.mixed_precision))
    sampler = build_sampler(volumes, method, tc, model.size_multiple, seed=tc.seed + 104729 * rank)
    run_dir = Path(job.run_dir)
    model_path = run_dir / MODEL_FILE
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    preview_volume = volumes[next(i for i, v in enumerate(job.volumes) if v is annotated[0])]
    preview_index = _preview_index(job.preview_slice, preview_volume)
    budget = _Budget(tc.iterations, tc.seconds, start_iteration)

    def checkpoint(iteration: int) -> Path:
        return save_checkpoint(
            model_path,
            CheckpointData(
                config=config,
                model_state=model.state_dict(),
                iteration=iteration,
                optimizer_state=optimizer.state_dict(),
                teacher_state=None if method.teacher is None else method.teacher.state_dict(),
                axis=axis,
            ),
        )

    if main:
        yield Started(
            method=tc.method,
            device=str(device),
            num_classes=config.model.num_classes,
            total_iterations=tc.iterations,
            budget_seconds=tc.seconds,
            annotated_slices=[int(i) for i in annotated[0].annotation.annotated_indices],
            run_dir=str(run_dir),
            world_size=distributed.world_size(),
        )
        for note in input_notices(job):
            yield Notice(message=note)
    network.train()
    iteration = start_iteration
    last_good_saved = False
    # the first preview comes after FIRST_PREVIEW_SECONDS, then one every preview_seconds
    last_preview = time.perf_counter() - max(0.0, tc.preview_seconds - FIRST_PREVIEW_SECONDS)
    running: dict[str, float] = {}
    reason = "budget"
    while True:
        # one progress figure for every rank (the learning rate and ramps follow it)
        stop_flag, progress = distributed.agree_max(
            [float(job.stop.requested or budget.spent(iteration)), budget.progress(iteration)]
        )
        if stop_flag:
            reason = "stopped" if job.stop.requested else "budget"
            break
        batch = augment(sampler.sample(), tc.augment, generator, device)
        optimizer.param_groups[0]["lr"] = learning_rate_at(tc, progress)
        out_of_memory = False
        try:
            named = method.losses(network, batch, progress, autocast)
            total = named["total"]
            not_finite = not bool(torch.isfinite(total.detach()))
            if distributed.agree(not_finite):
                became = (
                    f"{float(total.detach())} (not finite)"
                    if not_finite
                    else "not finite in another process"
                )
                raise TrainingError(
                    f"training stopped at iteration {iteration + 1}: the loss became {became}. "
                    + (
                        "The last good model is kept in " + str(model_path)
                        if last_good_saved
                        else "No model was saved yet."
                    )
                    + " Try a lower learning rate, or check the image for extreme values."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            smallest = 2 if method.uses_unlabeled and sampler.unlabeled else 1
            if distributed.world_size() > 1:
                raise _distributed_out_of_memory(device, sampler.batch_size, smallest) from exc
            out_of_memory = True  # recover below, once the traceback has let go of the tensors
        if out_of_memory:
            named = total = batch = None
            optimizer.zero_grad(set_to_none=True)
            _release_memory(device)
            if sampler.batch_size > smallest:
                sampler.set_batch_size(max(smallest, sampler.batch_size // 2))
                message = (
                    f"out of memory on {device}: the batch size is now {sampler.batch_size}, "
                    "training goes on"
                )
            elif device.type != "cpu":
                message = (
                    f"out of memory on {device} even with {smallest} slice(s) per batch: "
                    "training goes on on the CPU (slower)"
                )
                device = torch.device("cpu")
                model.to(device)
                if method.teacher is not None:
                    method.teacher.to(device)
                _move_optimizer(optimizer, device)
                autocast = autocast_for(device, False)
                scaler = torch.amp.GradScaler("cuda", enabled=False)
            else:
                raise TrainingError(
                    "out of memory on the CPU even with the smallest batch: close other "
                    "programs, crop the volume to the region of interest, or (command line) "
                    "lower train.crop_size."
                )
            if main:
                yield Notice(message=message)
            continue
        iteration += 1
        method.after_step(network, iteration)
        for name, value in named.items():
            number = float(value.detach())
            running[name] = 0.9 * running.get(name, number) + 0.1 * number
        if not main:
            continue
        if iteration % tc.log_every == 0 or iteration == start_iteration + 1:
            yield budget.progress_event(iteration, running)
        if iteration % tc.checkpoint_every == 0:
            yield Checkpoint(iteration=iteration, path=str(checkpoint(iteration)))
            last_good_saved = True
        now = time.perf_counter()
        if tc.preview_seconds > 0 and now - last_preview >= tc.preview_seconds:
            last_preview = now
            preview_index = read_preview_request(
                run_dir, preview_index, preview_volume.image.shape[0]
            )
            yield _preview(
                model,
                preview_volume,
                preview_index,
                tc.context,
                device,
                run_dir,
                iteration,
                autocast,
                config.loss,
            )
            network.train()
    distributed.leave_training_loop()
    if not main:
        return
    saved = checkpoint(iteration)
    yield Checkpoint(iteration=iteration, path=str(saved))
    if job.predict_at_end:
        try:
            yield from _predict_outputs(job, model, config, axis, run_dir, device)
        except (RuntimeError, MemoryError) as exc:  # the model is saved: say so, still finish
            yield Notice(
                message=f"the model is saved, but predicting the whole volume failed "
                f"({type(exc).__name__}: {str(exc)[:200]}); predict again on the CPU"
            )
    yield Finished(
        iteration=iteration,
        seconds=round(budget.elapsed(), 3),
        model_path=str(saved),
        stopped_early=reason == "stopped",
        reason=reason,
    )


def _preview_index(requested: int | None, volume: SliceVolume) -> int:
    count = volume.image.shape[0]
    if requested is not None:
        return int(min(max(requested, 0), count - 1))
    return int(volume.labeled_indices[len(volume.labeled_indices) // 2])


def read_preview_request(run_dir: Path, current: int, count: int) -> int:
    """The slice the viewer shows, written by the plugin to ``PREVIEW_SLICE`` in the run folder."""
    try:
        requested = int((run_dir / PREVIEW_SLICE_FILE).read_text().strip())
    except (OSError, ValueError):
        return current
    return min(max(requested, 0), count - 1)


def _preview(model, volume, index, context, device, run_dir, iteration, autocast, loss_config):
    """Predict one slice; save refined and coarse labels and hardness as one ``.npz``."""
    model.eval()
    coarse, refined = predict_slices(model, volume.image, [index], context, device, autocast)
    hardness = losses.pixel_hardness(
        refined, coarse, loss_config.patch_size, loss_config.hard_pixels, loss_config.margin
    )
    path = run_dir / "preview.npz"
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(
            temporary,
            slice_index=np.int64(index),
            refined=refined[0].argmax(0).cpu().numpy().astype(np.uint8),
            coarse=coarse[0].argmax(0).cpu().numpy().astype(np.uint8),
            hardness=hardness[0].cpu().numpy().astype(np.float32),
        )
    return Preview(iteration=iteration, slice_index=index, path=str(path))


def _predict_outputs(job, model, config, axis, run_dir, device) -> Iterator[Event]:
    first = next(v for v in job.volumes if v.annotation is not None)
    prediction = predict_final(
        model, config, first.image, axis, device, first.annotation, first.spacing
    )
    paths = {}
    for name in ("refined", "coarse", "hardness", "probabilities"):
        paths[name] = str(_atomic_save_npy(run_dir / f"{name}.npy", getattr(prediction, name)))
    borders = describe_class_borders(config, first.annotation, first.image)
    yield Prediction(**paths, class_borders=borders)
    picks = suggest_slices(
        prediction.slice_scores(axis), first.annotation.annotated, job.suggestion_count
    )
    yield Suggestions(slices=[p[0] for p in picks], scores=[p[1] for p in picks], axis=axis)


def _atomic_save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        np.save(stream, array)
    return path


class _Budget:
    """Iterations and/or seconds; progress in [0, 1] is the larger of the two fractions."""

    def __init__(self, iterations: int | None, seconds: float | None, start_iteration: int) -> None:
        self.iterations = iterations
        self.seconds = seconds
        self.start_iteration = start_iteration
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def progress(self, iteration: int) -> float:
        done = 0.0
        if self.iterations:
            done = max(done, (iteration - self.start_iteration) / self.iterations)
        if self.seconds:
            done = max(done, self.elapsed() / self.seconds)
        return min(done, 1.0)

    def spent(self, iteration: int) -> bool:
        if self.iterations is not None and iteration - self.start_iteration >= self.iterations:
            return True
        return self.seconds is not None and self.elapsed() >= self.seconds

    def progress_event(self, iteration: int, losses: dict[str, float]) -> Progress:
        elapsed = self.elapsed()
        done = iteration - self.start_iteration
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.iterations is not None and rate > 0:
            eta = (self.iterations - done) / rate
        if self.seconds is not None:
            remaining = max(self.seconds - elapsed, 0.0)
            eta = remaining if eta is None else min(eta, remaining)
        return Progress(
            iteration=iteration,
            total_iterations=self.iterations,
            seconds=round(elapsed, 3),
            eta_seconds=None if eta is None else round(eta, 2),
            iterations_per_second=round(rate, 3),
            losses={k: round(v, 6) for k, v in losses.items() if math.isfinite(v)},
        )
