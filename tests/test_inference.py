"""The final mask: training_backend.inference.finish_prediction and predict_final."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from training_backend.annotations import SparseAnnotation
from training_backend.config import CriiConfig
from training_backend.inference import (
    VolumePrediction,
    describe_class_borders,
    finish_prediction,
    predict_final,
    predict_with_config,
    suggest_slices,
)
from training_backend.model import build_model
from training_backend.postprocess import blend_with_prior, keep_annotated_components

SHAPE = (8, 12, 12)


def make_config(method: str = "crii", **predict: object) -> CriiConfig:
    config = CriiConfig()
    config.model.num_classes = 3
    config.train.method = method
    for key, value in predict.items():
        setattr(config.predict, key, value)
    return config.validate()


@pytest.fixture()
def annotation() -> SparseAnnotation:
    """Class 1 painted on slices 1 and 5 (rows/cols 3:7); class 2 never painted."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 3:7, 3:7] = 1
    labels[5, 3:7, 3:7] = 1
    return SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=3)


@pytest.fixture()
def prediction() -> VolumePrediction:
    """A network's guess: the painted blob, a false class-1 blob in a corner, noise around."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 0.3, size=(3, *SHAPE)).astype(np.float32)
    logits[0] += 1.0
    logits[1, 0:7, 3:7, 3:7] += 3.0  # the annotated structure
    logits[1, 6:8, 9:12, 9:12] += 3.0  # a false blob, apart from it
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    refined = probabilities.argmax(0).astype(np.uint8)
    return VolumePrediction(
        refined=refined,
        coarse=refined.copy(),
        probabilities=probabilities.astype(np.float32),
        hardness=rng.random(SHAPE).astype(np.float32),
    )


def copy_of(prediction: VolumePrediction) -> VolumePrediction:
    return VolumePrediction(
        prediction.refined.copy(),
        prediction.coarse.copy(),
        prediction.probabilities.copy(),
        prediction.hardness.copy(),
    )


def assert_same(a: VolumePrediction, b: VolumePrediction) -> None:
    np.testing.assert_array_equal(a.refined, b.refined)
    np.testing.assert_array_equal(a.coarse, b.coarse)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.hardness, b.hardness)


def test_crii_with_the_prior_blends_then_cleans_components(prediction, annotation):
    config = make_config("crii", prior_blend=0.5)
    before = copy_of(prediction)
    out = finish_prediction(prediction, config, 0, annotation)
    expected = blend_with_prior(before.probabilities.copy(), annotation, 0.5)
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-6)
    assert not np.allclose(out.probabilities, before.probabilities)
    argmax = out.probabilities.argmax(0).astype(np.uint8)
    np.testing.assert_array_equal(out.refined, keep_annotated_components(argmax, annotation))
    assert not out.refined[6:8, 9:12, 9:12].any()  # the false blob is gone
    np.testing.assert_array_equal(out.refined[[1, 5]], annotation.labels[[1, 5]])
    np.testing.assert_array_equal(out.coarse, before.coarse)  # the network's own
    np.testing.assert_array_equal(out.hardness, before.hardness)
    assert_same(prediction, before)  # the original is left as it was


@pytest.mark.parametrize("align", [True, False])
def test_the_blend_follows_the_models_prior_align(align):
    # class 1 painted on slices 0 and 6, drifting 6 pixels: the two priors differ between
    labels = np.zeros((7, 16, 16), np.uint8)
    labels[0, 5:10, 2:7] = 1
    labels[6, 5:10, 8:13] = 1
    drifting = SparseAnnotation.from_labels(labels, labels.shape, 0, num_classes=2)
    probabilities = np.full((2, *labels.shape), 0.5, np.float32)
    network = VolumePrediction(labels.copy(), labels.copy(), probabilities, probabilities[0])
    config = make_config("crii", prior_blend=1.0)
    config.model.num_classes = 2
    config.loss.prior_align = align
    out = finish_prediction(network, config, 0, drifting)
    expected = blend_with_prior(probabilities.copy(), drifting, 1.0, None, align)
    other = blend_with_prior(probabilities.copy(), drifting, 1.0, None, not align)
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-6)
    assert not np.allclose(out.probabilities, other, atol=1e-3)


def test_the_blend_uses_the_spacing(prediction, annotation):
    config = make_config("crii", prior_blend=1.0)
    spacing = (3.0, 0.5, 0.5)
    out = finish_prediction(prediction, config, 0, annotation, spacing)
    expected = blend_with_prior(prediction.probabilities.copy(), annotation, 1.0, spacing)
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-6)


def two_class_case(gap: float):
    """Classes 1 and 2 painted side by side on slices 1 and 5, their intensities ``gap``
    standard deviations apart; a network that calls all of the foreground class 1."""
    rng = np.random.default_rng(1)
    labels = np.zeros(SHAPE, np.uint8)
    for z in (1, 5):
        labels[z, 2:8, 2:6] = 1
        labels[z, 2:8, 6:10] = 2
    image = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    image[:, :, 6:10] += gap
    annotation = SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=3)
    probabilities = np.full((3, *SHAPE), 0.05, np.float32)
    probabilities[0] = 0.9
    probabilities[:, 1:6, 2:8, 2:10] = np.array([0.02, 0.96, 0.02])[:, None, None, None]
    refined = probabilities.argmax(0).astype(np.uint8)
    network = VolumePrediction(refined, refined.copy(), probabilities, probabilities[0])
    return image, annotation, network


def test_the_prior_draws_the_border_between_classes_that_look_alike():
    image, annotation, network = two_class_case(gap=0.0)
    config = make_config("crii")  # the defaults: split 1.0 below a contrast of 1.5
    out = finish_prediction(network, config, 0, annotation, None, image)
    assert (out.refined[3, 2:8, 6:10] == 2).all()  # between the slices: the painted border
    unsplit = finish_prediction(network, config, 0, annotation, None, None)
    assert (unsplit.refined[3, 2:8, 6:10] == 1).all()  # no image: the network's classes
    everywhere = make_config("crii", prior_class_max_contrast=None)
    assert (finish_prediction(network, everywhere, 0, annotation).refined[3, 2:8, 6:10] == 2).all()


def test_the_person_is_told_who_draws_each_class_border():
    image, annotation, _ = two_class_case(gap=0.0)
    alike = describe_class_borders(make_config("crii"), annotation, image)
    assert alike.startswith("class borders: classes 1 and 2: the annotated outlines' border")
    assert "(contrast 0." in alike
    image, annotation, _ = two_class_case(gap=4.0)
    apart = describe_class_borders(make_config("crii"), annotation, image)
    assert apart.startswith("class borders: classes 1 and 2: the network's border")
    assert "they look different: contrast" in apart and ">= 1.5" in apart
    always = make_config("crii", prior_class_max_contrast=None)
    assert "between all classes" in describe_class_borders(always, annotation, image)
    off = make_config("crii", prior_class_split=0.0)
    assert describe_class_borders(off, annotation, image) is None
    assert describe_class_borders(make_config("supervised"), annotation, image) is None


def test_the_description_follows_classes_linked_through_a_third():
    rng = np.random.default_rng(2)
    labels = np.zeros(SHAPE, np.uint8)
    for z in (1, 5):
        labels[z, :, 0:4], labels[z, :, 4:8], labels[z, :, 8:12] = 1, 2, 3
    image = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    image[:, :, 4:8] += 1.0
    image[:, :, 8:12] += 2.0  # 1-2 and 2-3 alike, 1-3 apart: one group all the same
    annotation = SparseAnnotation.from_labels(labels, SHAPE, 0, num_classes=4)
    config = make_config("crii")
    config.model.num_classes = 4
    text = describe_class_borders(config, annotation, image)
    assert "classes 1 and 3: the annotated outlines' border (contrast" in text
    assert "linked through classes that look alike" in text
    assert describe_class_borders(config, annotation, None) is None  # nothing measured


def test_classes_the_image_tells_apart_keep_the_networks_border():
    image, annotation, network = two_class_case(gap=4.0)
    out = finish_prediction(network, make_config("crii"), 0, annotation, None, image)
    assert (out.refined[3, 2:8, 6:10] == 1).all()
    off = make_config("crii", prior_class_split=0.0, prior_class_max_contrast=None)
    assert (finish_prediction(network, off, 0, annotation).refined[3, 2:8, 6:10] == 1).all()


@pytest.mark.parametrize("method", ["supervised", "mean-teacher"])
def test_other_methods_get_no_blend_but_clean_components(prediction, annotation, method):
    config = make_config(method, prior_blend=0.5)
    before = copy_of(prediction)
    out = finish_prediction(prediction, config, 0, annotation)
    np.testing.assert_array_equal(out.probabilities, before.probabilities)
    expected = keep_annotated_components(before.refined, annotation)
    np.testing.assert_array_equal(out.refined, expected)
    assert before.refined[6:8, 9:12, 9:12].any() and not out.refined[6:8, 9:12, 9:12].any()
    assert_same(prediction, before)


def test_crii_without_the_prior_gets_no_blend(prediction, annotation):
    config = make_config("crii", prior_blend=0.5)
    config.loss.use_prior = False
    out = finish_prediction(prediction, config, 0, annotation)
    np.testing.assert_array_equal(out.probabilities, prediction.probabilities)
    expected = keep_annotated_components(prediction.refined, annotation)
    np.testing.assert_array_equal(out.refined, expected)


def test_nothing_to_do_when_both_steps_are_off(prediction, annotation):
    config = make_config("crii", prior_blend=0.0, keep_annotated_components=False)
    before = copy_of(prediction)
    assert_same(finish_prediction(prediction, config, 0, annotation), before)
    config = make_config("supervised", prior_blend=0.5, keep_annotated_components=False)
    assert_same(finish_prediction(prediction, config, 0, annotation), before)


def test_no_annotation_or_another_axis_gives_the_prediction_back(prediction, annotation):
    config = make_config("crii", prior_blend=0.5)
    before = copy_of(prediction)
    assert finish_prediction(prediction, config, 0, None) is prediction
    assert finish_prediction(prediction, config, 1, annotation) is prediction
    assert_same(prediction, before)


def test_predict_final_is_the_prediction_then_the_finishing(tiny_phantom):
    phantom, labels, slices = tiny_phantom
    config = tiny_config()
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    device = torch.device("cpu")
    annotation = SparseAnnotation.from_labels(labels, phantom.image.shape, 0, num_classes=3)
    raw = predict_with_config(model, config, phantom.image, 0, device)
    assert_same(predict_final(model, config, phantom.image, 0, device), raw)
    final = predict_final(model, config, phantom.image, 0, device, annotation, phantom.spacing)
    expected = finish_prediction(raw, config, 0, annotation, phantom.spacing, phantom.image)
    assert_same(final, expected)
    assert final.refined.shape == phantom.image.shape and final.refined.dtype == np.uint8
    np.testing.assert_array_equal(final.refined[slices], labels[slices])


def test_slice_scores_ignore_unsure_background_far_from_the_structure():
    refined = np.zeros((10, 4, 4), np.uint8)
    refined[4:6, 1:3, 1:3] = 1
    hardness = np.full((10, 4, 4), 0.1, np.float32)
    hardness[9] = 0.9  # unsure, but four slices beyond the structure
    hardness[6] = 0.5  # the slice next to its end
    prediction = VolumePrediction(refined, refined, np.zeros((2, 10, 4, 4), np.float32), hardness)
    scores = prediction.slice_scores(0)
    assert scores[9] == 0.0 and scores[6] == pytest.approx(0.5)
    assert np.flatnonzero(scores > 0).tolist() == [3, 4, 5, 6]
    assert int(np.argmax(scores)) == 6
    empty = VolumePrediction(refined * 0, refined * 0, prediction.probabilities, hardness)
    assert int(np.argmax(empty.slice_scores(0))) == 9  # nothing predicted: every slice counts
    assert np.flatnonzero(prediction.slice_scores(0, reach=2) > 0).tolist() == [2, 3, 4, 5, 6, 7]
    single = VolumePrediction(refined[4:5], refined[4:5], prediction.probabilities[:, 4:5],
                              hardness[4:5])  # fmt: skip
    assert single.slice_scores(0, reach=3).tolist() == pytest.approx([0.1])


def test_suggestions_never_pick_a_slice_scored_zero():
    scores = np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0])
    picks = suggest_slices(scores, np.zeros(10, bool), count=5, min_gap=2)
    assert [index for index, _ in picks] == [2, 6]  # fewer than asked, no filler slices


def _greedy_by_score(scores, annotated, count, gap):
    """The ranking rule without spread, written out: best score first, gaps kept."""
    taken, picks = list(np.flatnonzero(annotated)), []
    for index in np.argsort(-scores, kind="stable"):
        if len(picks) == count or scores[index] <= 0:
            break
        if not annotated[index] and all(abs(int(index) - t) >= gap for t in taken):
            picks.append(int(index))
            taken.append(int(index))
    return picks


def test_suggestions_without_spread_follow_the_scores_alone():
    rng = np.random.default_rng(3)
    for _ in range(50):
        total = int(rng.integers(5, 40))
        scores = np.where(rng.random(total) < 0.2, 0.0, rng.random(total))
        annotated = rng.random(total) < 0.15
        count, gap = int(rng.integers(1, 6)), int(rng.integers(0, 4))
        picks = suggest_slices(scores, annotated, count=count, min_gap=gap)
        assert [i for i, _ in picks] == _greedy_by_score(scores, annotated, count, gap)


def test_spread_prefers_a_hard_slice_far_from_the_annotations():
    scores = np.zeros(30)
    scores[[6, 24]] = [0.50, 0.45]  # 6 lies beside the annotated slice 4, 24 far from it
    annotated = np.zeros(30, bool)
    annotated[4] = True
    assert suggest_slices(scores, annotated, count=1, min_gap=2)[0][0] == 6
    spread = suggest_slices(scores, annotated, count=2, min_gap=2, spread=1.0)
    assert [i for i, _ in spread] == [24, 6]
    assert spread[0][1] == pytest.approx(0.45)  # the slice's own score, not the weighted one
