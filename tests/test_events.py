import pytest

from training_backend.events import (
    Checkpoint,
    Error,
    EventDecodeError,
    Finished,
    Notice,
    Prediction,
    Preview,
    Progress,
    Started,
    Suggestions,
    decode,
    encode,
)

EXAMPLES = [
    Started(
        method="crii",
        device="cpu",
        num_classes=3,
        total_iterations=None,
        budget_seconds=60.0,
        annotated_slices=[3, 9],
        run_dir="run",
    ),
    Progress(
        iteration=10,
        total_iterations=100,
        seconds=1.5,
        eta_seconds=13.5,
        iterations_per_second=6.7,
        losses={"total": 0.5, "supervised": 0.4},
    ),
    Preview(iteration=10, slice_index=4, path="run/preview.npy"),
    Checkpoint(iteration=10, path="run/model.pt"),
    Prediction(refined="r.npy", coarse="c.npy", hardness="h.npy", probabilities=None),
    Prediction(
        refined="r.npy",
        coarse="c.npy",
        hardness="h.npy",
        probabilities="p.npy",
        class_borders="class borders: classes 1 and 2: the annotated outlines' border",
    ),
    Suggestions(slices=[5, 12], scores=[0.4, 0.3], axis=2),
    Notice(message="out of memory on cuda:0: the batch size is now 4, training goes on"),
    Error(message="no annotated slice", error_type="AnnotationError"),
    Finished(
        iteration=100, seconds=12.0, model_path="run/model.pt", stopped_early=True, reason="stopped"
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_round_trip(event):
    line = encode(event)
    assert "\n" not in line
    assert decode(line) == event


def test_wire_names_the_event():
    assert encode(EXAMPLES[1]).startswith('{"event":"progress"')


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("not json", "not a JSON event"),
        ('{"iteration": 3}', "without an 'event'"),
        ('{"event": "launch"}', "unknown event"),
        ('{"event": "checkpoint", "iteration": 1}', "malformed"),
        ("[1, 2]", "without an 'event'"),
    ],
)
def test_bad_lines_raise(line, fragment):
    with pytest.raises(EventDecodeError, match=fragment):
        decode(line)


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError):
        encode(
            Progress(
                iteration=1,
                total_iterations=None,
                seconds=float("nan"),
                eta_seconds=None,
                iterations_per_second=0.0,
            )
        )
