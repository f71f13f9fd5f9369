"""CRII-Net losses (docs/method.md, "Losses (our formulation)") and the hard-boundary map.

Shapes: logits and probabilities ``(B, K, H, W)`` with K classes including background (K >= 2),
``target`` ``(B, H, W)`` int64 class indices, ``mask`` ``(B, H, W)`` bool marking labeled pixels.
Every loss is computed in float32 whatever the input dtype, is fully vectorised, and returns a
differentiable zero when nothing qualifies. Ranking losses treat each foreground class
k = 1..K-1 one-vs-rest (``p_k`` against every other class).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "consistency_loss",
    "inter_patch_ranked_loss",
    "intra_patch_ranked_loss",
    "pixel_hardness",
    "ramp_weight",
    "soft_dice_loss",
    "supervised_loss",
]


def _check(probs: Tensor, **per_pixel: Tensor | None) -> None:
    """Raise ValueError unless probs is (B, K>=2, H, W) and each named tensor is (B, H, W)."""
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ValueError(f"expected (B, K>=2, H, W) scores, got shape {tuple(probs.shape)}")
    expected = (probs.shape[0], *probs.shape[2:])
    for name, t in per_pixel.items():
        if t is not None and tuple(t.shape) != expected:
            raise ValueError(f"{name} shape {tuple(t.shape)} does not match (B, H, W) {expected}")


def _safe_target(target: Tensor, mask: Tensor | None) -> Tensor:
    """Target with unlabeled pixels set to 0, so any placeholder value there is harmless."""
    return target if mask is None else torch.where(mask, target, torch.zeros_like(target))


def _one_vs_rest(target: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) indices -> (B, K-1, H, W) bool, channel c true where target == c + 1."""
    classes = torch.arange(1, num_classes, device=target.device).view(1, -1, 1, 1)
    return target.unsqueeze(1) == classes


def _patchify(x: Tensor, size: int, fill: float | bool) -> Tensor:
    """(B, C, H, W) -> (B, C, P, size*size): pad bottom/right with ``fill``, cut into patches."""
    b, c, h, w = x.shape
    nh, nw = -(-h // size), -(-w // size)
    if (nh * size, nw * size) != (h, w):
        padded = x.new_full((b, c, nh * size, nw * size), fill)
        padded[..., :h, :w] = x
        x = padded
    x = x.reshape(b, c, nh, size, nw, size).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, nh * nw, size * size)


def _unpatchify(x: Tensor, size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`_patchify`, cropping the padding: (B, C, P, size*size) -> (B, C, H, W)."""
    b, c = x.shape[:2]
    nh, nw = -(-h // size), -(-w // size)
    x = x.reshape(b, c, nh, nw, size, size).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, nh * size, nw * size)[..., :h, :w]


def _hardest(
    scores: Tensor, fg: Tensor, bg: Tensor, k_max: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hardest members of each group along the last dim.

    Returns ``(fg_vals, bg_vals, valid, k_h)``: the lowest-scoring fg and highest-scoring bg
    values, ``(..., T)`` with ``T = min(k_max, N)``, ranks ``>= k_h`` zeroed; ``valid`` marks
    ranks ``< k_h``; ``k_h = min(k_max, n_fg, n_bg)`` per group ``(...)``.
    """
    t = min(k_max, scores.shape[-1])
    k_h = torch.minimum(fg.sum(-1), bg.sum(-1)).clamp(max=k_max)
    fg_vals = torch.where(fg, scores, math.inf).topk(t, dim=-1, largest=False).values
    bg_vals = torch.where(bg, scores, -math.inf).topk(t, dim=-1, largest=True).values
    valid = torch.arange(t, device=scores.device) < k_h.unsqueeze(-1)
    zero = scores.new_zeros(())
    return torch.where(valid, fg_vals, zero), torch.where(valid, bg_vals, zero), valid, k_h


def _ranked_hinge(scores: Tensor, fg: Tensor, bg: Tensor, k_max: int, margin: float) -> Tensor:
    """Mean over groups with k_h >= 1 of the group's mean hinge over its k_h x k_h hard pairs."""
    fg_vals, bg_vals, valid, k_h = _hardest(scores, fg, bg, k_max)
    pairs = valid.unsqueeze(-1) & valid.unsqueeze(-2)  # (..., bg rank, fg rank)
    hinge = F.relu(bg_vals.unsqueeze(-1) - fg_vals.unsqueeze(-2) + margin) * pairs
    per_group = hinge.sum((-2, -1)) / k_h.clamp(min=1).square()
    return per_group.sum() / (k_h > 0).sum().clamp(min=1)


def soft_dice_loss(
    probs: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """1 - mean over foreground classes of the soft Dice over the (masked) pixels of the batch.

    ``dice_k = (2 * sum(p_k * y_k) + eps) / (sum(p_k) + sum(y_k) + eps)``, so a class absent from
    the target and predicted ~0 scores Dice 1.
    """
    _check(probs, target=target, mask=mask)
    p = probs.float()[:, 1:]
    y = _one_vs_rest(_safe_target(target, mask), probs.shape[1]).float()
    if mask is not None:
        w = mask.unsqueeze(1).float()
        p, y = p * w, y * w
    inter = (p * y).sum((0, 2, 3))
    dice = (2 * inter + eps) / (p.sum((0, 2, 3)) + y.sum((0, 2, 3)) + eps)
    return 1 - dice.mean()


def _masked_ce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy averaged over masked pixels only (0 when none)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * mask).sum() / mask.sum().clamp(min=1)


def supervised_loss(
    coarse_logits: Tensor,
    refined_logits: Tensor,
    target: Tensor,
    mask: Tensor,
    coarse_weight: float = 0.5,
) -> Tensor:
    """``0.5 * [CE(C, y) + Dice(q, y)] * coarse_weight + 0.5 * [CE(R, y) + Dice(p, y)]``.

    CE and Dice use the masked (labeled) pixels only.
    """
    _check(coarse_logits, target=target, mask=mask)
    _check(refined_logits, target=target, mask=mask)
    y = _safe_target(target, mask)
    total = coarse_logits.new_zeros((), dtype=torch.float32)
    for logits, weight in ((coarse_logits, coarse_weight), (refined_logits, 1.0)):
        dice = soft_dice_loss(torch.softmax(logits.float(), dim=1), y, mask)
        total = total + 0.5 * weight * (_masked_ce(logits, y, mask) + dice)
    return total


def consistency_loss(
    coarse_logits: Tensor,
    refined_logits: Tensor,
    target_probs: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """``MSE(softmax(C), T) + MSE(softmax(R), T)`` with ``T = target_probs`` detached.

    The squared error is averaged over classes, then over pixels with ``weight`` (B, H, W) in
    [0, 1] (None: all ones) as ``sum(w * se) / max(sum(w), eps)``.
    """
    _check(coarse_logits, weight=weight)
    if not coarse_logits.shape == refined_logits.shape == target_probs.shape:
        raise ValueError("coarse_logits, refined_logits and target_probs must have the same shape")
    t = target_probs.detach().float()
    se_c = (torch.softmax(coarse_logits.float(), dim=1) - t).square().mean(1)
    se_r = (torch.softmax(refined_logits.float(), dim=1) - t).square().mean(1)
    se = se_c + se_r
    if weight is None:
        return se.mean()
    w = weight.float()
    return (w * se).sum() / w.sum().clamp(min=eps)


def intra_patch_ranked_loss(
    probs: Tensor,
    target: Tensor,
    mask: Tensor,
    patch_size: int = 16,
    hard_pixels: int = 8,
    margin: float = 0.3,
) -> Tensor:
    """Intra-PRL: pixel ranking inside boundary patches, mean over counted (patch, class) pairs.

    A patch counts for class k when its masked pixels hold both class k and another class; its
    value is the mean of ``max(0, p_k[i] - p_k[j] + margin)`` over the K_h hardest bg pixels i
    (highest p_k) and K_h hardest fg pixels j (lowest p_k), ``K_h = min(hard_pixels, n_fg, n_bg)``.
    """
    _check(probs, target=target, mask=mask)
    if patch_size < 1 or hard_pixels < 1:
        raise ValueError("patch_size and hard_pixels must be >= 1")
    fg = _one_vs_rest(target, probs.shape[1])
    labeled = mask.unsqueeze(1)
    fg_p = _patchify(fg & labeled, patch_size, False)
    bg_p = _patchify(~fg & labeled, patch_size, False)
    scores = _patchify(probs.float()[:, 1:], patch_size, 0.0)
    return _ranked_hinge(scores, fg_p, bg_p, hard_pixels, margin)


def inter_patch_ranked_loss(
    probs: Tensor,
    target: Tensor,
    mask: Tensor,
    patch_size: int = 16,
    hard_patches: int = 8,
    margin: float = 0.3,
) -> Tensor:
    """Inter-PRL: patch ranking by mean ``p_k`` over masked pixels, per (image, class).

    Only patches with at least half of their ``patch_size**2`` pixels masked count. Fg patch: fg
    fraction >= 0.5 of masked pixels; bg patch: no fg pixel. Hinge between the K_h lowest fg and
    K_h highest bg patch scores, ``K_h = min(hard_patches, n_fg, n_bg)``; mean per (image, class),
    then mean over (image, class) groups with K_h >= 1.
    """
    _check(probs, target=target, mask=mask)
    if patch_size < 1 or hard_patches < 1:
        raise ValueError("patch_size and hard_patches must be >= 1")
    labeled = _patchify(mask.unsqueeze(1), patch_size, False)  # (B, 1, P, s*s)
    n_lab = labeled.sum(-1)
    fg = _patchify(_one_vs_rest(target, probs.shape[1]), patch_size, False)
    n_fg = (fg & labeled).sum(-1)  # (B, K-1, P)
    p = _patchify(probs.float()[:, 1:], patch_size, 0.0)
    scores = (p * labeled).sum(-1) / n_lab.clamp(min=1)  # (B, K-1, P)
    enough = 2 * n_lab >= patch_size * patch_size
    fg_patch = enough & (2 * n_fg >= n_lab)
    bg_patch = enough & (n_fg == 0)
    return _ranked_hinge(scores, fg_patch, bg_patch, hard_patches, margin)


@torch.no_grad()
def pixel_hardness(
    refined_probs: Tensor,
    coarse_probs: Tensor,
    patch_size: int = 16,
    hard_pixels: int = 8,
    margin: float = 0.3,
) -> Tensor:
    """Hard-boundary map ``(B, H, W)`` in [0, 1] from predictions only (no labels, no grad).

    Pseudo-label = argmax of ``refined_probs``. Per foreground class and patch where predicted fg
    and bg meet, a pixel's hardness is the mean of its hinges against the K_h hardest pixels of
    the opposite predicted side (K_h as in Intra-PRL), divided by its largest possible value
    ``1 + margin``. Summed over classes, plus the mean over classes of ``|refined - coarse|``,
    clipped to [0, 1]. The scale is absolute, so maps and slice scores compare across slices.
    """
    _check(refined_probs)
    if refined_probs.shape != coarse_probs.shape:
        raise ValueError("refined_probs and coarse_probs must have the same shape")
    if patch_size < 1 or hard_pixels < 1:
        raise ValueError("patch_size and hard_pixels must be >= 1")
    p, q = refined_probs.float(), coarse_probs.float()
    _, k, h, w = p.shape
    fg = _patchify(_one_vs_rest(p.argmax(1), k), patch_size, False)
    inside = _patchify(torch.ones_like(p[:, :1], dtype=torch.bool), patch_size, False)
    bg = ~fg & inside
    scores = _patchify(p[:, 1:], patch_size, 0.0)  # (B, K-1, P, s*s)
    fg_vals, bg_vals, valid, k_h = _hardest(scores, fg, bg, hard_pixels)
    x = scores.unsqueeze(-1)  # (..., pixel, rank)
    as_bg = (F.relu(x - fg_vals.unsqueeze(-2) + margin) * valid.unsqueeze(-2)).sum(-1)
    as_fg = (F.relu(bg_vals.unsqueeze(-2) - x + margin) * valid.unsqueeze(-2)).sum(-1)
    hinge = torch.where(fg, as_fg, torch.where(bg, as_bg, 0.0))
    hinge = hinge / (k_h.clamp(min=1).unsqueeze(-1) * (1.0 + margin))
    hard = _unpatchify(hinge, patch_size, h, w).sum(1)  # (B, H, W)
    return (hard + (p - q).abs().mean(1)).clamp(0.0, 1.0)


def ramp_weight(step: int, total_steps: int, maximum: float, ramp_fraction: float) -> float:
    """Sigmoid ramp-up ``maximum * exp(-5 * (1 - min(step / ramp_steps, 1))**2)``.

    ``ramp_steps = ramp_fraction * total_steps``; a zero ramp gives ``maximum`` at once.
    """
    ramp = ramp_fraction * total_steps
    if ramp <= 0:
        return float(maximum)
    t = min(max(step, 0) / ramp, 1.0)
    return float(maximum * math.exp(-5.0 * (1.0 - t) ** 2))
