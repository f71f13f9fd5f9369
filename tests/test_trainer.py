import copy

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_job

from training_backend import methods
from training_backend.checkpoint import load_checkpoint
from training_backend.events import (
    Checkpoint,
    Error,
    Finished,
    Prediction,
    Progress,
    Started,
    Suggestions,
)
from training_backend.inference import load_model, predict_volume
from training_backend.methods import ema_update
from training_backend.metrics import mean_dice
from training_backend.model import build_model
from training_backend.trainer import train


def run(job):
    return list(train(job))


def test_a_short_cpu_run_lowers_the_loss(tiny_phantom, tmp_path):
    job = tiny_job(tiny_phantom, tmp_path, iterations=60, log_every=1, method="supervised")
    events = run(job)
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    losses = [e.losses["supervised"] for e in events if isinstance(e, Progress)]
    assert len(losses) == 60
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert events[-1].iteration == 60 and not events[-1].stopped_early


@pytest.mark.parametrize("method", ["crii", "supervised", "mean-teacher"])
def test_every_method_trains_and_saves(tiny_phantom, tmp_path, method):
    events = run(tiny_job(tiny_phantom, tmp_path, iterations=6, method=method))
    finished = events[-1]
    assert isinstance(finished, Finished), events[-1]
    data = load_checkpoint(finished.model_path, num_classes=3)
    assert data.iteration == 6 and data.config.train.method == method
    progress = [e for e in events if isinstance(e, Progress)]
    assert all(np.isfinite(list(p.losses.values())).all() for p in progress)
    if method == "crii":
        assert {"intra_prl", "inter_prl", "consistency"} <= set(progress[-1].losses)


def test_same_seed_same_weights(tiny_phantom, tmp_path):
    first = run(tiny_job(tiny_phantom, tmp_path / "a", iterations=8))[-1]
    second = run(tiny_job(tiny_phantom, tmp_path / "b", iterations=8))[-1]
    a = load_checkpoint(first.model_path).model_state
    b = load_checkpoint(second.model_path).model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stop_ends_cleanly_with_a_usable_model(tiny_phantom, tmp_path):
    job = tiny_job(tiny_phantom, tmp_path, iterations=10_000, log_every=1)
    events = []
    for event in train(job):
        events.append(event)
        if isinstance(event, Progress) and event.iteration == 5:
            job.stop.request()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stopped_early
    assert finished.reason == "stopped" and finished.iteration == 5
    assert isinstance(events[-2], Checkpoint)
    model, _ = load_model(finished.model_path, torch.device("cpu"))
    assert model.config.num_classes == 3


def test_stop_file_from_another_process(tiny_phantom, tmp_path):
    from training_backend.trainer import STOP_FILE, StopSignal

    job = tiny_job(tiny_phantom, tmp_path, iterations=10_000, log_every=1)
    job.stop = StopSignal(tmp_path / STOP_FILE)
    for event in train(job):
        if isinstance(event, Progress) and event.iteration == 3:
            (tmp_path / STOP_FILE).touch()
        last = event
    assert last.stopped_early and last.iteration == 3


def test_resume_continues_the_iteration_count(tiny_phantom, tmp_path):
    first = run(tiny_job(tiny_phantom, tmp_path / "a", iterations=5))[-1]
    job = tiny_job(tiny_phantom, tmp_path / "b", iterations=4)
    job.resume = first.model_path
    second = run(job)[-1]
    assert second.iteration == 9
    assert load_checkpoint(second.model_path).optimizer_state is not None


def test_warm_start_keeps_the_quality_at_once(tiny_phantom, tmp_path):
    phantom, _, _ = tiny_phantom
    first = run(tiny_job(tiny_phantom, tmp_path / "a", iterations=60, method="supervised"))[-1]
    cpu = torch.device("cpu")

    def dice(path):
        model, data = load_model(path, cpu)
        pred = predict_volume(model, phantom.image, 0, 1, cpu, loss_config=data.config.loss)
        return mean_dice(pred.refined, phantom.truth, 3)

    job = tiny_job(
        tiny_phantom, tmp_path / "b", iterations=2, method="supervised", learning_rate=1e-4
    )
    job.init_model = first.model_path
    warm = run(job)[-1]
    cold = run(tiny_job(tiny_phantom, tmp_path / "c", iterations=2, method="supervised"))[-1]
    assert dice(warm.model_path) > dice(first.model_path) - 0.05
    assert dice(warm.model_path) > dice(cold.model_path) + 0.1


def test_a_nan_loss_stops_with_a_message(tiny_phantom, tmp_path, monkeypatch):
    original = methods.SupervisedMethod.losses
    calls = {"n": 0}

    def poisoned(self, model, batch, progress, autocast):
        calls["n"] += 1
        named = original(self, model, batch, progress, autocast)
        if calls["n"] > 3:
            named["total"] = named["total"] * float("nan")
        return named

    monkeypatch.setattr(methods.SupervisedMethod, "losses", poisoned)
    job = tiny_job(tiny_phantom, tmp_path, iterations=50, method="supervised", checkpoint_every=2)
    events = run(job)
    assert isinstance(events[-1], Error)
    assert "not finite" in events[-1].message and "last good model" in events[-1].message
    kept = load_checkpoint(tmp_path / "model.pt")
    assert kept.iteration == 2
    assert all(torch.isfinite(v).all() for v in kept.model_state.values() if v.is_floating_point())


def test_predict_at_end_writes_volumes_and_suggestions(tiny_phantom, tmp_path):
    phantom, _, slices = tiny_phantom
    job = tiny_job(tiny_phantom, tmp_path, iterations=3)
    job.predict_at_end = True
    events = run(job)
    prediction = next(e for e in events if isinstance(e, Prediction))
    suggestions = next(e for e in events if isinstance(e, Suggestions))
    refined = np.load(prediction.refined)
    hardness = np.load(prediction.hardness)
    assert refined.shape == hardness.shape == phantom.image.shape
    assert prediction.class_borders.startswith("class borders: classes 1 and 2: ")
    assert 0.0 <= hardness.min() and hardness.max() <= 1.0
    assert suggestions.slices and not set(suggestions.slices) & set(slices)


def test_previews_follow_the_requested_slice(tiny_phantom, tmp_path):
    from training_backend.events import Preview
    from training_backend.trainer import PREVIEW_SLICE_FILE

    phantom, _, _ = tiny_phantom
    job = tiny_job(tiny_phantom, tmp_path, iterations=30, preview_seconds=1e-6)
    (tmp_path).mkdir(exist_ok=True)
    previews = []
    for event in train(job):
        if isinstance(event, Preview):
            previews.append(event)
            if len(previews) == 2:
                (tmp_path / PREVIEW_SLICE_FILE).write_text("7\n")
            data = np.load(event.path)
            assert data["refined"].shape == data["coarse"].shape == phantom.image.shape[1:]
            assert data["hardness"].dtype == np.float32
            assert int(data["slice_index"]) == event.slice_index
    assert previews[0].slice_index != 7 and previews[-1].slice_index == 7


def test_crii_keeps_the_ranked_losses_when_every_slice_is_annotated(tiny_phantom, tmp_path):
    from training_backend.annotations import SparseAnnotation

    job = tiny_job(tiny_phantom, tmp_path, iterations=3, log_every=1)
    phantom = tiny_phantom[0]
    job.volumes[0].annotation = SparseAnnotation.from_labels(
        phantom.truth, phantom.image.shape, 0, background_slices=range(20), num_classes=3
    )
    progress = [e for e in run(job) if isinstance(e, Progress)]
    assert {"intra_prl", "inter_prl"} <= set(progress[-1].losses)
    assert "consistency" not in progress[-1].losses


def test_a_failed_final_prediction_still_finishes_with_the_model(tiny_phantom, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    from training_backend import trainer
    from training_backend.events import Notice

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trainer, "predict_final", fails)
    job = tiny_job(tiny_phantom, tmp_path, iterations=2)
    job.predict_at_end = True
    events = run(job)
    assert isinstance(events[-1], Finished) and events[-1].iteration == 2
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("model is saved" in n and "predict again" in n for n in notes)
    assert load_checkpoint(events[-1].model_path).iteration == 2


def test_crii_same_pass_target_runs_one_forward_per_step(tiny_phantom, tmp_path, monkeypatch):
    calls = []
    original = methods.CriiMethod.losses

    def counting(self, model, batch, progress, autocast):
        handle = model.register_forward_hook(lambda *args: calls.append(1))
        try:
            return original(self, model, batch, progress, autocast)
        finally:
            handle.remove()

    monkeypatch.setattr(methods.CriiMethod, "losses", counting)
    job = tiny_job(tiny_phantom, tmp_path, iterations=5, log_every=1)
    job.config.loss.teacher = "same-pass"
    events = run(job)
    assert isinstance(events[-1], Finished), events[-1]
    assert len(calls) == 5  # the student's pass only: no teacher, no second pass
    assert load_checkpoint(events[-1].model_path, num_classes=3).teacher_state is None
    consistency = [e.losses["consistency"] for e in events if isinstance(e, Progress)]
    assert consistency and np.isfinite(consistency).all() and max(consistency) > 0


@pytest.mark.parametrize("extrapolate", [True, False])
def test_prior_extrapolate_decides_the_target_weight_beyond_the_outer_slices(
    tiny_phantom, tmp_path, extrapolate
):
    from training_backend.trainer import prepare_volumes

    _, _, slices = tiny_phantom
    job = tiny_job(tiny_phantom, tmp_path, iterations=1)
    job.config.loss.prior_extrapolate = extrapolate
    (prepared,) = prepare_volumes(job, 0)
    beyond = np.r_[0 : min(slices), max(slices) + 1 : prepared.image.shape[0]]
    inside = [z for z in range(min(slices), max(slices) + 1) if z not in slices]
    assert prepared.prior_weight[inside].max() > 0
    assert (prepared.prior_weight[beyond].max() > 0) == extrapolate


@pytest.mark.parametrize("align", [True, False])
def test_prior_align_reaches_the_training_target(tiny_phantom, tmp_path, align):
    from training_backend.prior import shape_prior
    from training_backend.trainer import prepare_volumes

    job = tiny_job(tiny_phantom, tmp_path, iterations=1)
    job.config.loss.prior_align = align
    (prepared,) = prepare_volumes(job, 0)
    annotation = job.volumes[0].annotation
    built = [
        shape_prior(
            annotation.labels,
            annotation.annotated,
            0,
            3,
            spacing=job.volumes[0].spacing,
            align=flag,
        ).probabilities
        for flag in (align, not align)
    ]
    np.testing.assert_array_equal(prepared.prior, built[0])  # (K, Z, A, B) along axis 0
    assert not np.array_equal(built[0], built[1])  # the phantom's outlines do drift


def test_the_grouped_ema_update_gives_the_same_teacher_as_tensor_by_tensor():
    config = tiny_config()
    student = build_model(config.model, torch.device("cpu"))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for tensor in student.state_dict().values():
            if tensor.dtype.is_floating_point:
                tensor.add_(torch.randn_like(tensor))
            else:
                tensor.add_(3)
    reference = copy.deepcopy(teacher)
    with torch.no_grad():  # the update as it was written first, one tensor at a time
        for key, value in reference.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(0.9).add_(student.state_dict()[key], alpha=0.1)
            else:
                value.copy_(student.state_dict()[key])
    ema_update(teacher, student, 0.9)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


def test_the_teacher_follows_the_network_inside_a_data_parallel_wrapper():
    config = tiny_config(method="mean-teacher")
    network = build_model(config.model, torch.device("cpu"))
    wrapper = torch.nn.Module()
    wrapper.module = network  # what DistributedDataParallel looks like to the method
    method = methods.build_method(config, wrapper, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in method.teacher.parameters()]
    method.after_step(wrapper, 1)  # decay min(ema, 1 - 1/2) = 0.5
    for old, new, student in zip(
        before, method.teacher.parameters(), network.parameters(), strict=True
    ):
        assert torch.allclose(new, 0.5 * old + 0.5 * student)
