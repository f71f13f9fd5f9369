"""Typed training events and their JSON-lines codec: the wire between trainer and plugin.

One event is one line of JSON with an ``"event"`` key naming its type. Both the training
process (writer) and the napari plugin (reader) use :func:`encode` and :func:`decode`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

STOP_FILE = "STOP"
"""Created in the run folder by another process: stop after the current step."""
PREVIEW_SLICE_FILE = "PREVIEW_SLICE"
"""Written in the run folder by the viewer: the slice to preview next (an integer)."""


@dataclass
class Event:
    """Base of all events; ``kind`` is the wire name."""

    kind: ClassVar[str] = "event"


@dataclass
class Started(Event):
    kind: ClassVar[str] = "started"
    method: str
    device: str
    num_classes: int
    total_iterations: int | None
    budget_seconds: float | None
    annotated_slices: list[int] = field(default_factory=list)
    run_dir: str | None = None
    world_size: int = 1


@dataclass
class Progress(Event):
    kind: ClassVar[str] = "progress"
    iteration: int
    total_iterations: int | None
    seconds: float
    eta_seconds: float | None
    iterations_per_second: float
    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class Preview(Event):
    """A prediction of one slice: an ``.npz`` with ``refined``, ``coarse`` (uint8 labels),
    ``hardness`` (float32) and ``slice_index`` (the file is overwritten by the next preview, so
    trust the index stored in it over the event's)."""

    kind: ClassVar[str] = "preview"
    iteration: int
    slice_index: int
    path: str


@dataclass
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    iteration: int
    path: str


@dataclass
class Prediction(Event):
    """Paths of whole-volume outputs (``.npy``) in the orientation of the input array."""

    kind: ClassVar[str] = "prediction"
    refined: str
    coarse: str
    hardness: str
    probabilities: str | None = None
    class_borders: str | None = None
    """Who drew the border between touching classes, in words (None: nobody but the network
    had a say, e.g. one foreground class or a method without the shape prior)."""


@dataclass
class Suggestions(Event):
    kind: ClassVar[str] = "suggestions"
    slices: list[int]
    scores: list[float]
    axis: int = 0


@dataclass
class Error(Event):
    """Something a person must act on; ``error_type`` names the exception class."""

    kind: ClassVar[str] = "error"
    message: str
    error_type: str = "CriiError"


@dataclass
class Notice(Event):
    """Training goes on, but a person should know: odd input, a fallback taken."""

    kind: ClassVar[str] = "notice"
    message: str


@dataclass
class Finished(Event):
    kind: ClassVar[str] = "finished"
    iteration: int
    seconds: float
    model_path: str | None
    stopped_early: bool = False
    reason: str = "budget"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Started,
        Progress,
        Preview,
        Checkpoint,
        Prediction,
        Suggestions,
        Notice,
        Error,
        Finished,
    )
}


class EventDecodeError(ValueError):
    """A line that is not one of our events."""


def encode(event: Event) -> str:
    """Serialise one event to a single JSON line (no trailing newline)."""
    payload: dict[str, Any] = {"event": event.kind, **dataclasses.asdict(event)}
    return json.dumps(payload, allow_nan=False, separators=(",", ":"))


def decode(line: str) -> Event:
    """Parse one JSON line back into its event; raise EventDecodeError on anything else."""
    try:
        payload = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventDecodeError(f"not a JSON event line: {line[:200]!r}") from exc
    if not isinstance(payload, dict) or "event" not in payload:
        raise EventDecodeError(f"JSON without an 'event' key: {line[:200]!r}")
    name = payload.pop("event")
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise EventDecodeError(f"unknown event {name!r}; known: {sorted(EVENT_TYPES)}")
    try:
        return cls(**payload)
    except TypeError as exc:
        raise EventDecodeError(f"malformed {name!r} event: {exc}") from exc
