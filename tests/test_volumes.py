import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training_backend.volumes import (
    Batch,
    BatchSampler,
    SliceVolume,
    affine_theta,
    augment,
    context_stack,
    intensity_jitter,
    normalize_intensity,
    random_affine,
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


def hand_batch(seed: int = 0, size: int = 4) -> Batch:
    """A batch with a prior, block labels 0/2/5 (image channel 0 = labels) and padding."""
    rng = np.random.default_rng(seed)
    target = np.zeros((size, 16, 16), np.int64)
    target[:, 2:9, 2:9] = 2
    target[:, 8:14, 7:13] = 5
    image = rng.normal(size=(size, 3, 16, 16)).astype(np.float32)
    image[:, 0] = target
    valid = np.zeros((size, 16, 16), bool)
    valid[:, :14, :15] = True  # the rest is padding
    label_mask = valid.copy()
    label_mask[size // 2 :] = False  # unlabeled items
    prior = rng.random((size, 3, 16, 16)).astype(np.float32)
    prior /= prior.sum(axis=1, keepdims=True)
    return Batch(
        torch.from_numpy(image),
        torch.from_numpy(target),
        torch.from_numpy(label_mask),
        torch.from_numpy(valid),
        size // 2,
        torch.from_numpy(prior),
        torch.from_numpy(rng.random((size, 16, 16)).astype(np.float32)),
    )


FIELDS = ("image", "target", "label_mask", "valid", "prior", "prior_weight")


def assert_batches_equal(a: Batch, b: Batch) -> None:
    assert a.num_labeled == b.num_labeled
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_an_identity_affine_changes_nothing():
    batch = hand_batch()
    out = random_affine(batch, torch.Generator().manual_seed(0), degrees=0, scale=0, shift=0)
    torch.testing.assert_close(out.image, batch.image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.prior, batch.prior, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.prior_weight, batch.prior_weight, atol=1e-5, rtol=0)
    for name in ("target", "label_mask", "valid"):
        assert torch.equal(getattr(out, name), getattr(batch, name)), name
    assert out.num_labeled == batch.num_labeled


def test_an_affine_keeps_shapes_dtypes_and_class_values():
    batch = hand_batch()
    before = {name: getattr(batch, name).clone() for name in FIELDS}
    out = random_affine(batch, torch.Generator().manual_seed(1), degrees=15, scale=0.1, shift=0.1)
    for name in FIELDS:
        assert getattr(out, name).shape == before[name].shape, name
        assert getattr(out, name).dtype == before[name].dtype, name
        assert torch.equal(getattr(batch, name), before[name]), name  # input left alone
    assert set(out.target.unique().tolist()) <= {0, 2, 5}  # nearest: no value in between
    assert not (out.label_mask & ~out.valid).any()
    assert not out.label_mask[batch.num_labeled :].any()
    assert (~out.valid[:, :14, :15]).any()  # pixels brought in from outside are invalid
    assert not torch.equal(out.target, batch.target)


def test_an_affine_moves_labels_with_the_image():
    batch = hand_batch(size=8)
    out = random_affine(batch, torch.Generator().manual_seed(2))
    inside = out.valid & (out.image[:, 0] == out.image[:, 0].round())  # away from block edges
    agree = (out.image[:, 0].round().long() == out.target)[inside].float().mean()
    assert agree > 0.97


def test_an_affine_is_repeatable_with_the_seed():
    batch = hand_batch()
    first = random_affine(batch, torch.Generator().manual_seed(7))
    again = random_affine(batch, torch.Generator().manual_seed(7))
    other = random_affine(batch, torch.Generator().manual_seed(8))
    assert_batches_equal(first, again)
    assert not torch.equal(first.image, other.image)


def test_augment_none_only_moves_the_batch():
    batch = hand_batch()
    generator = torch.Generator().manual_seed(0)
    out = augment(batch, "none", generator, torch.device("cpu"))
    assert_batches_equal(out, batch)
    assert all(getattr(out, name).device.type == "cpu" for name in FIELDS)


def test_augment_flips_only_flips():
    batch = hand_batch(size=8)
    out = augment(batch, "flips", torch.Generator().manual_seed(4), torch.device("cpu"))
    assert_batches_equal(out, random_flips(batch, torch.Generator().manual_seed(4)))
    choices = ([], [-2], [-1], [-2, -1])
    for item in range(8):
        matches = [
            dims
            for dims in choices
            if all(
                torch.equal(getattr(out, name)[item], torch.flip(getattr(batch, name)[item], dims))
                for name in FIELDS
            )
        ]
        assert matches, item


@pytest.mark.parametrize("kind", ["affine", "affine+flips"])
def test_augment_with_an_affine_is_the_default_warp(kind):
    batch = hand_batch()
    out = augment(batch, kind, torch.Generator().manual_seed(5), torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    expected = random_flips(batch, generator) if "flips" in kind else batch
    assert_batches_equal(out, random_affine(expected, generator))
    assert not torch.equal(out.image, batch.image)
    assert set(out.target.unique().tolist()) <= {0, 2, 5}


def test_pixel_affine_kinds_warp_in_pixel_units_and_differ_only_off_the_square():
    batch = hand_batch()
    narrow = Batch(*(getattr(batch, name)[..., :10] for name in FIELDS[:4]), batch.num_labeled,
                   batch.prior[..., :10], batch.prior_weight[..., :10])  # fmt: skip
    for kind in ("pixel-affine", "pixel-affine+flips"):
        out = augment(narrow, kind, torch.Generator().manual_seed(5), torch.device("cpu"))
        generator = torch.Generator().manual_seed(5)
        expected = random_flips(narrow, generator) if "flips" in kind else narrow
        assert_batches_equal(out, random_affine(expected, generator, pixel_units=True))
    cpu = torch.device("cpu")
    plain = augment(narrow, "affine", torch.Generator().manual_seed(5), cpu)
    pixels = augment(narrow, "pixel-affine", torch.Generator().manual_seed(5), cpu)
    assert not torch.equal(plain.image, pixels.image)
    square = [augment(batch, kind, torch.Generator().manual_seed(5), cpu)
              for kind in ("affine", "pixel-affine")]  # fmt: skip
    assert_batches_equal(*square)  # a square plane has no shear to remove


@pytest.mark.parametrize("height, width", [(25, 49), (49, 25), (33, 33)])
def test_an_affine_rotates_pixels_without_shear_on_any_plane(height, width):
    image = torch.zeros(1, 1, height, width)
    centre_y, centre_x = height // 2, width // 2
    image[0, 0, centre_y, centre_x + 8] = 1.0  # 8 pixels right of the centre
    image[0, 0, centre_y - 6, centre_x] = 1.0  # 6 pixels above it
    theta = affine_theta(torch.tensor([math.pi / 2]), torch.tensor([1.0]),
                         torch.zeros(1, 2), height / width)  # fmt: skip
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
    out = F.grid_sample(image, grid, mode="nearest", align_corners=False)[0, 0]
    bright = {(int(y) - centre_y, int(x) - centre_x) for y, x in torch.nonzero(out > 0.5)}
    assert bright == {(8, 0), (0, 6)} or bright == {(-8, 0), (0, -6)}  # a quarter turn
