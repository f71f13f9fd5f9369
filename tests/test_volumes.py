import numpy as np
import pytest
import torch

from training_backend.volumes import (
    BatchSampler,
    SliceVolume,
    context_stack,
    intensity_jitter,
    normalize_intensity,
    random_flips,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_normalisation_does_not_assume_a_dtype(dtype):
    rng = np.random.default_rng(0)
    scale = {np.uint8: 200, np.int16: 3000}.get(dtype, 1.0)
    volume = (rng.random((6, 10, 12)) * scale).astype(dtype)
    out = normalize_intensity(volume)
    assert out.dtype == np.float32 and out.shape == volume.shape
    assert abs(float(out.mean())) < 0.1 and 0.8 < float(out.std()) < 1.2


def test_normalisation_handles_nan_inf_and_constant_images():
    volume = np.ones((4, 5, 5), np.float32)
    assert not normalize_intensity(volume).any()
    volume = np.random.default_rng(1).normal(size=(4, 5, 5)).astype(np.float32)
    volume[0, 0, 0], volume[1, 1, 1] = np.nan, np.inf
    out = normalize_intensity(volume)
    assert np.isfinite(out).all()
    assert out[0, 0, 0] == out.min()


def test_context_stack_repeats_edges_and_follows_the_axis():
    volume = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    stack = context_stack(volume, [0, 3], context=1)
    assert stack.shape == (2, 3, 3, 2)
    np.testing.assert_array_equal(stack[0, 0], volume[0])  # below the first slice: itself
    np.testing.assert_array_equal(stack[1, 2], volume[3])
    across = context_stack(volume, [1], context=1, axis=1)
    assert across.shape == (1, 3, 4, 2)
    np.testing.assert_array_equal(across[0, 1], volume[:, 1, :])


def make_volume(slices=(2, 5)):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 12, 10)).astype(np.float32)
    labels = np.zeros((8, 12, 10), np.int64)
    annotated = np.zeros(8, bool)
    for s in slices:
        labels[s, 3:7, 2:6] = 1
        annotated[s] = True
    return SliceVolume(image, labels, annotated)


def test_batches_mix_labeled_and_unlabeled_and_pad_to_the_multiple():
    sampler = BatchSampler([make_volume()], 6, 0.5, 128, 1, 8, seed=0)
    batch = sampler.sample()
    assert batch.image.shape == (6, 3, 16, 16) and batch.num_labeled == 3
    assert batch.label_mask[:3, :12, :10].all() and not batch.label_mask[3:].any()
    assert not batch.valid[:, 12:, :].any() and batch.valid[:, :12, :10].all()


def test_cross_planes_are_labeled_only_on_annotated_rows():
    volume = make_volume(slices=(2, 5))
    sampler = BatchSampler([volume], 64, 1.0, 128, 0, 8, seed=0, all_orientations=True)
    batch = sampler.sample()
    cross = 0
    for item in range(batch.num_labeled):
        mask, valid = batch.label_mask[item], batch.valid[item]
        rows = torch.nonzero(mask.any(dim=1)).flatten().tolist()
        if torch.equal(mask, valid):  # an annotated slice: labeled everywhere
            continue
        assert rows == [2, 5]  # a plane across the slice axis: the two annotated lines only
        assert torch.equal(mask[2], valid[2])
        cross += 1
    assert 0 < cross < batch.num_labeled


def test_crop_when_larger_than_crop_size():
    volume = SliceVolume(
        np.zeros((3, 70, 50), np.float32),
        np.zeros((3, 70, 50), np.int64),
        np.array([1, 0, 0], bool),
    )
    batch = BatchSampler([volume], 2, 0.5, 32, 1, 8, seed=0).sample()
    assert batch.image.shape[-2:] == (32, 32)


def test_flips_move_labels_with_the_image():
    sampler = BatchSampler([make_volume()], 8, 1.0, 128, 0, 8, seed=0)
    batch = sampler.sample()
    batch.image[:, 0] = batch.target.float()
    flipped = random_flips(batch, torch.Generator().manual_seed(3))
    assert torch.equal(flipped.image[:, 0], flipped.target.float())
    assert not torch.equal(flipped.valid, batch.valid)


def test_intensity_jitter_keeps_geometry_and_changes_values():
    image = torch.randn(4, 3, 16, 16)
    view = intensity_jitter(image, torch.Generator().manual_seed(0))
    assert view.shape == image.shape and not torch.allclose(view, image)
    correlation = torch.corrcoef(torch.stack([view.flatten(), image.flatten()]))[0, 1]
    assert correlation > 0.8
