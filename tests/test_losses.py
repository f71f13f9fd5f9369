"""Tests of training_backend.losses on tiny hand-worked cases plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from training_backend.losses import (
    consistency_loss,
    inter_patch_ranked_loss,
    intra_patch_ranked_loss,
    pixel_hardness,
    ramp_weight,
    soft_dice_loss,
    supervised_loss,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


def two_class(fg: list) -> torch.Tensor:
    """(B, H, W) or (H, W) nested list of p_1 -> (B, 2, H, W) probabilities [1 - p_1, p_1]."""
    f = torch.tensor(fg, dtype=torch.float32)
    f = f if f.ndim == 3 else f.unsqueeze(0)
    return torch.stack([1 - f, f], dim=1)


def labels(t: list) -> torch.Tensor:
    """(H, W) or (B, H, W) nested list -> (B, H, W) int64."""
    y = torch.tensor(t, dtype=torch.int64)
    return y if y.ndim == 3 else y.unsqueeze(0)


def full_mask(y: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(y, dtype=torch.bool)


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(float(value) - expected) <= tol


# ---------------------------------------------------------------- Dice


def test_dice_perfect_prediction_is_zero() -> None:
    y = labels([[0, 1], [1, 0]])
    # I = 2, sum p = 2, sum y = 2 -> (4 + eps) / (4 + eps) = 1 -> loss 0
    assert close(soft_dice_loss(F.one_hot(y, 2).permute(0, 3, 1, 2).float(), y), 0.0)


def test_dice_disjoint_prediction_is_one() -> None:
    y = labels([[0, 1], [1, 0]])
    probs = two_class([[1.0, 0.0], [0.0, 1.0]])
    # I = 0 -> dice = eps / (4 + eps) ~ 2.5e-7 -> loss ~ 1
    assert close(soft_dice_loss(probs, y), 1.0, 1e-5)


def test_dice_hand_value_and_mask() -> None:
    y = labels([[1, 1], [0, 0]])
    probs = two_class([[0.5, 1.0], [0.0, 0.0]])
    # I = 0.5 + 1 = 1.5, sum p = 1.5, sum y = 2 -> dice = 3 / 3.5 = 6/7 -> loss 1/7
    assert close(soft_dice_loss(probs, y), 1 / 7)
    # masking out the (0, 0) pixel: I = 1, sum p = 1, sum y = 1 -> dice 1 -> loss 0
    mask = torch.tensor([[[False, True], [True, True]]])
    assert close(soft_dice_loss(probs, y, mask), 0.0)


def test_dice_absent_class_predicted_zero_counts_as_perfect() -> None:
    y = labels([[0, 1]])
    probs = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # K=3, class 2 absent
    # class 1: (2 + eps) / (2 + eps) = 1; class 2: (0 + eps) / (0 + 0 + eps) = 1 -> loss 0
    assert close(soft_dice_loss(probs, y), 0.0)


# ---------------------------------------------------------------- supervised


def test_supervised_hand_value() -> None:
    logits = torch.zeros(1, 2, 1, 2)  # softmax 0.5 everywhere
    y = labels([[1, 0]])
    # CE = ln 2 = 0.693147 per pixel; Dice fg: I = 0.5, sum p = 1, sum y = 1 -> 1/2 -> loss 0.5
    # refined 0.5 * (0.693147 + 0.5) = 0.596574; coarse same * 0.5 = 0.298287 -> 0.894860
    loss = supervised_loss(logits, logits, y, full_mask(y), coarse_weight=0.5)
    assert close(loss, 0.5 * (math.log(2) + 0.5) * 1.5, 1e-5)
    assert close(loss, 0.894860, 1e-5)


def test_supervised_ignores_unmasked_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    y = torch.randint(0, 3, (2, 4, 5), generator=g)
    mask = torch.rand(2, 4, 5, generator=g) > 0.4
    base = supervised_loss(c, r, y, mask)
    off = ~mask.unsqueeze(1)
    c2 = torch.where(off, torch.randn(c.shape, generator=g) * 5, c)
    r2 = torch.where(off, torch.randn(r.shape, generator=g) * 5, r)
    y2 = torch.where(mask, y, torch.full_like(y, 255))  # an ignore value where unlabeled
    assert torch.allclose(supervised_loss(c2, r2, y2, mask), base, atol=1e-6)


def test_supervised_ce_part_matches_torch_on_masked_pixels() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    mask = torch.rand(2, 4, 4, generator=g) > 0.5
    ce = F.cross_entropy(r.permute(0, 2, 3, 1)[mask], y[mask])
    dice = soft_dice_loss(r.softmax(1), y, mask)
    loss = supervised_loss(torch.zeros_like(r), r, y, mask, coarse_weight=0.0)
    assert torch.allclose(loss, 0.5 * (ce + dice), atol=1e-6)


def test_supervised_no_labeled_pixel_is_zero_and_differentiable() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    y = torch.zeros(1, 3, 3, dtype=torch.int64)
    loss = supervised_loss(logits, logits, y, torch.zeros_like(y, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- consistency


def test_consistency_zero_when_equal_to_target() -> None:
    logits = torch.randn(2, 3, 4, 4)
    assert close(consistency_loss(logits, logits, logits.softmax(1)), 0.0)


def test_consistency_known_value_weight_and_detach() -> None:
    logits = torch.zeros(1, 2, 1, 2)  # softmax 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]]], requires_grad=True)
    # pixel 0: se = mean(0.5^2, 0.5^2) = 0.25 per output, coarse + refined = 0.5; pixel 1: 0
    # unweighted: (0.5 + 0) / 2 = 0.25
    assert close(consistency_loss(logits, logits, target), 0.25)
    # weight [1, 0]: 0.5 / 1 = 0.5
    assert close(consistency_loss(logits, logits, target, torch.tensor([[[1.0, 0.0]]])), 0.5)
    # weight [0.5, 1]: 0.5 * 0.5 / 1.5 = 1/6
    assert close(consistency_loss(logits, logits, target, torch.tensor([[[0.5, 1.0]]])), 1 / 6)
    # all-zero weight: 0 / eps = 0
    assert close(consistency_loss(logits, logits, target, torch.zeros(1, 1, 2)), 0.0)
    student = logits.clone().requires_grad_(True)
    consistency_loss(student, student, target).backward()
    assert target.grad is None and student.grad is not None


# ---------------------------------------------------------------- Intra-PRL


def test_intra_patch_without_both_sides_contributes_nothing() -> None:
    # one 2x2 patch, all fg with low p_1: no bg -> not counted
    y = labels([[1, 1], [1, 1]])
    assert float(intra_patch_ranked_loss(two_class([[0.1] * 2] * 2), y, full_mask(y), 2)) == 0.0
    # 3x3 image, patch 2 -> padded to 4x4: padding is unmasked, so it never acts as bg
    y = labels([[1] * 3] * 3)
    loss = intra_patch_ranked_loss(two_class([[0.2] * 3] * 3), y, full_mask(y), patch_size=2)
    assert float(loss) == 0.0


def test_intra_correct_ranking_by_margin_is_exactly_zero() -> None:
    y = labels([[1, 0], [0, 1]])
    probs = two_class([[0.75, 0.5], [0.25, 1.0]])
    # hardest bg 0.5, hardest fg 0.75: 0.5 - 0.75 + 0.25 = 0 (exact in binary) -> 0
    assert float(intra_patch_ranked_loss(probs, y, full_mask(y), 2, margin=0.25)) == 0.0
    # with margin 0.3: pairs (bg, fg) (0.5, 0.75) -> 0.05, (0.5, 1) -> 0, (0.25, .) -> 0
    # K_h = 2 -> mean over 4 pairs: 0.05 / 4 = 0.0125
    assert close(intra_patch_ranked_loss(probs, y, full_mask(y), 2, margin=0.3), 0.0125)


def test_intra_two_patches_mean_over_counted_patches() -> None:
    y = labels([[1, 0, 1, 1], [0, 0, 0, 0]])
    probs = two_class([[0.6, 0.7, 0.9, 0.8], [0.1, 0.2, 0.3, 0.0]])
    # left patch: fg {0.6}, bg {0.7, 0.1, 0.2} -> K_h = 1: 0.7 - 0.6 + 0.3 = 0.4
    # right patch: fg {0.9, 0.8}, bg {0.3, 0.0} -> K_h = 2, all hinges <= 0 -> 0
    # mean over 2 counted patches: (0.4 + 0) / 2 = 0.2
    assert close(intra_patch_ranked_loss(probs, y, full_mask(y), 2), 0.2)
    # masking the left fg pixel leaves the left patch without fg -> only right counts -> 0
    mask = full_mask(y).clone()
    mask[0, 0, 0] = False
    assert close(intra_patch_ranked_loss(probs, y, mask, 2), 0.0)


def test_intra_k_h_smaller_than_hard_pixels() -> None:
    # one 4x4 patch, 2 fg pixels (0.7, 0.9), 14 bg pixels; hard_pixels = 3 -> K_h = min(3, 2, 14)=2
    p = [[0.7, 0.9, 0.6, 0.5], [0.45, 0.1, 0.1, 0.1], [0.1] * 4, [0.1] * 4]
    y = labels([[1, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4])
    # hard bg {0.6, 0.5}, hard fg {0.7, 0.9}:
    # (0.6,0.7): 0.2, (0.6,0.9): 0, (0.5,0.7): 0.1, (0.5,0.9): 0 -> 0.3 / 4 = 0.075
    loss = intra_patch_ranked_loss(two_class(p), y, full_mask(y), 4, hard_pixels=3)
    assert close(loss, 0.075)
    # hard_pixels = 1: (0.6, 0.7) only -> 0.2
    assert close(intra_patch_ranked_loss(two_class(p), y, full_mask(y), 4, hard_pixels=1), 0.2)


def test_intra_multiclass() -> None:
    # K = 3, one 2x2 patch; per pixel (p_0, p_1, p_2)
    probs = torch.tensor(
        [[0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.7, 0.2, 0.1], [0.6, 0.1, 0.3]]
    ).T.reshape(1, 3, 2, 2)
    y = labels([[1, 2], [0, 0]])
    # class 1: fg {0.5}, bg {0.6, 0.2, 0.1} -> 0.6 - 0.5 + 0.3 = 0.4
    # class 2: fg {0.3}, bg {0.3, 0.1, 0.3} -> 0.3 - 0.3 + 0.3 = 0.3
    # mean over (patch, class) pairs: (0.4 + 0.3) / 2 = 0.35
    assert close(intra_patch_ranked_loss(probs, y, full_mask(y), 2), 0.35)


# ---------------------------------------------------------------- Inter-PRL


def _inter_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2x12 image, six 2x2 patches P0..P5 (columns 2i, 2i+1)."""
    p = [
        [0.6, 0.8, 0.6, 0.6, 0.3, 1.0, 0.1, 0.0, 0.0, 0.0, 0.9, 0.9],
        [0.7, 0.7, 0.3, 0.3, 0.3, 0.3, 0.1, 0.0, 0.0, 0.0, 0.9, 0.9],
    ]
    y = [
        [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    mask = torch.ones(1, 2, 12, dtype=torch.bool)
    mask[0, 0, 5] = False  # P2: 3 of 4 masked, the unmasked pixel (p = 1.0) is ignored
    mask[0, :, 10:] = False
    mask[0, 0, 10] = True  # P5: 1 of 4 masked (< half) -> ignored despite its high score
    return two_class(p), labels(y), mask


def test_inter_two_fg_two_bg_patches() -> None:
    probs, y, mask = _inter_case()
    # P0 fg (frac 1) s=0.7; P1 fg (frac 0.5) s=0.45; P2 bg s=0.3 (masked mean); P3 bg s=0.05;
    # P4 frac 0.25: neither; P5: under half masked. K_h = min(8, 2, 2) = 2, pairs (bg, fg):
    # (0.3,0.7): 0, (0.3,0.45): 0.15, (0.05,0.7): 0, (0.05,0.45): 0 -> 0.15 / 4 = 0.0375
    assert close(inter_patch_ranked_loss(probs, y, mask, 2), 0.0375)
    # hard_patches = 1: lowest fg 0.45 vs highest bg 0.3 -> 0.15
    assert close(inter_patch_ranked_loss(probs, y, mask, 2, hard_patches=1), 0.15)
    # margin 0.1: only (0.3, 0.45) -> 0.3 - 0.45 + 0.1 < 0 -> 0
    assert float(inter_patch_ranked_loss(probs, y, mask, 2, margin=0.1)) == 0.0


def test_inter_mean_over_images() -> None:
    probs, y, mask = _inter_case()
    # second image: all bg, so no fg patch -> the group does not count; mean stays 0.0375
    probs2 = torch.cat([probs, probs])
    y2 = torch.cat([y, torch.zeros_like(y)])
    assert close(inter_patch_ranked_loss(probs2, y2, torch.cat([mask, mask]), 2), 0.0375)


# ---------------------------------------------------------------- gradients, dtypes, devices


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss_fn", [intra_patch_ranked_loss, inter_patch_ranked_loss])
def test_ranked_losses_gradients_flow(device: str, loss_fn) -> None:
    y = labels([[1, 1, 0, 0], [1, 1, 0, 0]]).to(device)
    # fg scored low, bg scored high: mis-ranked at both pixel and patch level
    logits = torch.tensor([[-1.0, -1.0, 1.0, 1.0]] * 2, device=device)
    logits = torch.stack([torch.zeros_like(logits), logits]).unsqueeze(0).requires_grad_(True)
    patch = 2 if loss_fn is inter_patch_ranked_loss else 4  # inter: fg patch vs bg patch
    loss = loss_fn(logits.softmax(1), y, full_mask(y), patch)
    loss.backward()
    assert float(loss.detach()) > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss_fn", [intra_patch_ranked_loss, inter_patch_ranked_loss])
def test_ranked_losses_nothing_qualifies(device: str, loss_fn) -> None:
    logits = torch.randn(2, 3, 5, 5, device=device, requires_grad=True)
    y = torch.zeros(2, 5, 5, dtype=torch.int64, device=device)
    for mask in (full_mask(y), torch.zeros_like(y, dtype=torch.bool)):
        loss = loss_fn(logits.softmax(1), y, mask, 2)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_matches_float32(device: str) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 9, 7, generator=g).to(device)
    y = torch.randint(0, 3, (2, 9, 7), generator=g).to(device)
    mask = (torch.rand(2, 9, 7, generator=g) > 0.2).to(device)
    probs = logits.softmax(1)
    for lo in (torch.bfloat16, torch.float16):
        for fn in (intra_patch_ranked_loss, inter_patch_ranked_loss):
            ref, low = fn(probs, y, mask, 4), fn(probs.to(lo), y, mask, 4)
            assert low.dtype == torch.float32 and abs(float(low) - float(ref)) < 1e-2
        ref = supervised_loss(logits, logits, y, mask)
        low = supervised_loss(logits.to(lo), logits.to(lo), y, mask)
        assert abs(float(low) - float(ref)) < 1e-2
        ref = consistency_loss(logits, logits, probs)
        low = consistency_loss(logits.to(lo), logits.to(lo), probs.to(lo))
        assert abs(float(low) - float(ref)) < 1e-2
        hard = pixel_hardness(probs.to(lo), logits.softmax(1).to(lo), 4)
        assert hard.dtype == torch.float32 and 0 <= hard.min() and hard.max() <= 1


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        intra_patch_ranked_loss(
            torch.rand(1, 2, 4, 4),
            torch.zeros(1, 4, 5, dtype=torch.int64),
            torch.ones(1, 4, 5, dtype=torch.bool),
        )
    with pytest.raises(ValueError):
        soft_dice_loss(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64))


# ---------------------------------------------------------------- hardness map


def test_hardness_hand_value() -> None:
    p = two_class([[0.9, 0.6], [0.4, 0.1]])
    q = two_class([[0.9, 0.6], [0.4, 0.3]])
    # predicted fg {0.9, 0.6}, bg {0.4, 0.1}, K_h = 2, m = 0.3:
    # 0.9: (0.4-0.9+.3)^+ + (0.1-0.9+.3)^+ = 0;  0.6: (0.4-0.6+.3)^+ = 0.1, (0.1-0.6+.3)^+ = 0
    # 0.4: (0.4-0.9+.3)^+ = 0, (0.4-0.6+.3)^+ = 0.1;  0.1: 0 + 0 -> sums [[0, .1], [.1, 0]]
    # mean over K_h = 2 and / (1 + m): 0.1 / 2 / 1.3 = 0.0384615 -> [[0, .03846], [.03846, 0]]
    # + mean_k |p - q| = [[0, 0], [0, 0.2]] -> [[0, .03846], [.03846, 0.2]]
    expected = torch.tensor([[[0.0, 0.1 / 2 / 1.3], [0.1 / 2 / 1.3, 0.2]]])
    assert torch.allclose(pixel_hardness(p, q, patch_size=2), expected, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_hardness_range_and_boundary(device: str) -> None:
    g = torch.Generator().manual_seed(4)
    r, c = torch.randn(2, 3, 13, 11, generator=g), torch.randn(2, 3, 13, 11, generator=g)
    h = pixel_hardness(r.softmax(1).to(device), c.softmax(1).to(device), patch_size=4)
    assert h.shape == (2, 13, 11) and h.min() >= 0 and h.max() <= 1
    # confident halves meeting on a patch border: no patch holds both sides -> 0 everywhere
    fg = torch.zeros(1, 8, 8)
    fg[..., :4] = 0.99
    fg[..., 4:] = 0.01
    confident = torch.stack([1 - fg, fg], 1).to(device)
    assert pixel_hardness(confident, confident, patch_size=4).max() < 1e-6
    # a mis-ranked boundary inside the top-left patch: high there, 0 elsewhere
    fg[0, 0, 0], fg[0, 1, 1] = 0.45, 0.55
    unsure = torch.stack([1 - fg, fg], 1).to(device)
    h = pixel_hardness(unsure, unsure, patch_size=4)
    # one bg pixel (0.45) against the hardest fg (0.55), K_h = 1: (0.45-0.55+0.3) / 1.3
    expected = torch.tensor(0.2 / 1.3, device=device)
    assert torch.isclose(h[0, 1, 1], expected) and torch.isclose(h[0, 0, 0], expected)
    assert h[0, 4:, :].max() == 0.0 and h[0, 2:4, 2:4].max() == 0.0


# ---------------------------------------------------------------- ramp


def test_ramp_weight_endpoints() -> None:
    assert ramp_weight(0, 100, 2.0, 0.4) == pytest.approx(2.0 * math.exp(-5))  # 0.0134759
    assert ramp_weight(20, 100, 1.0, 0.4) == pytest.approx(math.exp(-1.25))  # t = 0.5
    assert ramp_weight(40, 100, 1.0, 0.4) == 1.0
    assert ramp_weight(90, 100, 1.0, 0.4) == 1.0
    assert ramp_weight(0, 100, 0.7, 0.0) == 0.7


# ---------------------------------------------------------------- properties


@st.composite
def cases(draw: st.DrawFn) -> dict:
    """Random shapes, labels, mask and a seed for the probabilities."""
    b, k = draw(st.integers(1, 2)), draw(st.integers(2, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return {
        "y": torch.randint(0, k, (b, h, w), generator=g),
        "mask": torch.rand(b, h, w, generator=g) < draw(st.floats(0.0, 1.0)),
        "logits": torch.randn(b, k, h, w, generator=g) * draw(st.floats(0.1, 5.0)),
        "patch": draw(st.integers(1, 5)),
        "hard": draw(st.integers(1, 10)),
        "margin": draw(st.floats(0.0, 0.5)),
        "g": g,
    }


@settings(max_examples=60, deadline=None)
@given(cases())
def test_ranked_losses_finite_nonnegative(c: dict) -> None:
    probs = c["logits"].softmax(1)
    for fn in (intra_patch_ranked_loss, inter_patch_ranked_loss):
        v = fn(probs, c["y"], c["mask"], c["patch"], c["hard"], c["margin"])
        assert torch.isfinite(v) and v >= 0
    h = pixel_hardness(probs, c["logits"].flip(1).softmax(1), c["patch"], c["hard"], c["margin"])
    assert h.shape == c["y"].shape and h.min() >= 0 and h.max() <= 1


def _ranked_probs(y: torch.Tensor, k: int, hi: torch.Tensor) -> torch.Tensor:
    """Probabilities with p_y = hi per pixel and the rest 1 - hi shared equally by other classes."""
    onehot = F.one_hot(y, k).permute(0, 3, 1, 2).float()
    hi = hi.unsqueeze(1)
    return onehot * hi + (1 - onehot) * (1 - hi) / (k - 1)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_ranked_losses_zero_when_ranked_by_margin(c: dict) -> None:
    y, k, m = c["y"], c["logits"].shape[1], c["margin"] * 0.6  # m <= 0.3
    # p_y in [hi, 1] and every other p <= 1 - hi with 1.5 * hi - 1 = m + 0.01, so that
    # pixels: p_fg - p_bg >= 2 hi - 1 > m; patches: s_fg >= hi / 2 >= s_bg + m + 0.01
    hi = (1.01 + m) / 1.5
    p = _ranked_probs(y, k, hi + (1 - hi) * torch.rand(y.shape, generator=c["g"]))
    for fn in (intra_patch_ranked_loss, inter_patch_ranked_loss):
        assert float(fn(p, y, c["mask"], c["patch"], c["hard"], m)) == 0.0


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(0, 8))
def test_intra_zero_exactly_at_margin(c: dict, sixteenths: int) -> None:
    # K = 2, p_1 = 0.5 + m/2 on fg and 0.5 - m/2 on bg: every hard hinge is exactly 0 (dyadic)
    m = sixteenths / 16
    y = c["y"].clamp(max=1)
    p = two_class(torch.where(y == 1, 0.5 + m / 2, 0.5 - m / 2).tolist())
    assert float(intra_patch_ranked_loss(p, y, c["mask"], c["patch"], c["hard"], m)) == 0.0
    # one sixteenth more margin: every counted hinge is exactly 1/16, so the mean is 0 or 1/16
    wider = float(intra_patch_ranked_loss(p, y, c["mask"], c["patch"], c["hard"], m + 1 / 16))
    assert wider in (0.0, 1 / 16)
