"""Training methods: one step each, all driven by the same loop and budget.

- ``supervised``: labeled slices only, ``L_sup`` on both heads.
- ``mean-teacher``: ``L_sup`` plus MSE between the student's refined output on a strong view
  and an EMA teacher's on the weak view of unlabeled slices.
- ``crii``: ``L_sup`` + Intra-PRL + Inter-PRL on labeled slices, and the coarse-refined
  consistency on unlabeled slices with a target blended from the refined prediction and the
  shape prior of the annotated slices (docs/method.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from training_backend import losses
from training_backend.config import CriiConfig
from training_backend.volumes import Batch, intensity_jitter

Autocast = Callable[[], object]


class TrainingMethod:
    """Base: computes named losses for one batch; ``total`` is what is minimised."""

    name = "base"
    uses_unlabeled = False

    def __init__(self, config: CriiConfig, model: nn.Module, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator
        self.teacher: nn.Module | None = None

    def losses(
        self, model: nn.Module, batch: Batch, progress: float, autocast: Autocast
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, model: nn.Module, iteration: int) -> None:
        """Hook run after each optimiser step (EMA update)."""

    def _supervised(
        self, coarse: torch.Tensor, refined: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        n = batch.num_labeled
        return losses.supervised_loss(
            coarse[:n],
            refined[:n],
            batch.target[:n],
            batch.label_mask[:n],
            coarse_weight=self.config.loss.coarse_weight,
        )

    def _ramp(self, progress: float) -> float:
        lo = self.config.loss
        return losses.ramp_weight(
            int(progress * 10_000), 10_000, lo.lambda_cr_max, lo.ramp_fraction
        )


class SupervisedMethod(TrainingMethod):
    name = "supervised"

    def losses(self, model, batch, progress, autocast):
        with autocast():
            out = model(batch.image)
        sup = self._supervised(out.coarse, out.refined, batch)
        return {"total": sup, "supervised": sup}


class _TeacherMethod(TrainingMethod):
    """Shared parts of the two consistency methods: EMA teacher, weak/strong views."""

    uses_unlabeled = True

    def __init__(self, config, model, generator, use_ema: bool) -> None:
        super().__init__(config, model, generator)
        if use_ema:
            self.teacher = copy.deepcopy(_unwrap(model)).requires_grad_(False)

    def after_step(self, model, iteration):
        if self.teacher is None:
            return
        decay = min(self.config.loss.ema_decay, 1.0 - 1.0 / (iteration + 1))
        ema_update(self.teacher, _unwrap(model), decay)

    same_pass = False
    """When true the target comes from the student's own refined output of the same forward
    pass (no second pass): see :meth:`_same_pass_target`."""

    def losses(self, model, batch, progress, autocast):
        n = batch.num_labeled
        has_unlabeled = n < batch.image.shape[0]
        target = None
        if has_unlabeled and not self.same_pass:
            target = self._target(model, batch, progress, autocast)
        strong = intensity_jitter(batch.image[n:], self.generator)
        with autocast():
            out = model(torch.cat([batch.image[:n], strong]))
        named, total = self._labeled_losses(out.coarse[:n], out.refined[:n], batch)
        if has_unlabeled and self.same_pass:
            target = self._same_pass_target(out.refined[n:], batch, progress)
        if target is not None:
            valid = batch.valid[n:].float()
            named["consistency"] = self._consistency(out.coarse[n:], out.refined[n:], target, valid)
            total = total + self._ramp(progress) * named["consistency"]
        return {"total": total, **named}

    def _target(self, model, batch, progress, autocast) -> torch.Tensor:
        """Probabilities the unlabeled items are pulled towards: the refined output of the
        teacher (EMA, or the model itself) on the weak view."""
        network = self.teacher if self.teacher is not None else model
        with torch.no_grad(), autocast():
            return torch.softmax(network(batch.image[batch.num_labeled :]).refined.float(), dim=1)

    def _same_pass_target(self, refined, batch, progress) -> torch.Tensor:
        raise NotImplementedError

    def _labeled_losses(
        self, coarse, refined, batch
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        sup = self._supervised(coarse, refined, batch)
        return {"supervised": sup}, sup

    def _consistency(self, coarse, refined, target, valid) -> torch.Tensor:
        raise NotImplementedError


class MeanTeacherMethod(_TeacherMethod):
    name = "mean-teacher"

    def __init__(self, config, model, generator) -> None:
        super().__init__(config, model, generator, use_ema=True)

    def _consistency(self, coarse, refined, target, valid):
        student = torch.softmax(refined.float(), dim=1)
        squared = ((student - target) ** 2).mean(dim=1)
        return squared.mul(valid).sum() / valid.sum().clamp(min=1.0)


class CriiMethod(_TeacherMethod):
    name = "crii"

    def __init__(self, config, model, generator) -> None:
        super().__init__(config, model, generator, use_ema=config.loss.teacher == "ema")
        self.same_pass = config.loss.teacher == "same-pass"

    def _target(self, model, batch, progress, autocast):
        target = super()._target(model, batch, progress, autocast)
        return self._with_prior(target, batch, progress)

    def _same_pass_target(self, refined, batch, progress):
        """The refined output of the strong view itself, detached: the coarse head is pulled
        towards the refined one (and both towards the prior) at the cost of one pass."""
        target = torch.softmax(refined.detach().float(), dim=1)
        return self._with_prior(target, batch, progress)

    def _with_prior(self, target, batch, progress):
        if self.config.loss.use_prior and batch.prior is not None:
            n = batch.num_labeled
            alpha = (batch.prior_weight[n:] * (1.0 - 0.5 * progress)).unsqueeze(1)
            target = (1.0 - alpha) * target + alpha * batch.prior[n:]
        return target

    def _labeled_losses(self, coarse, refined, batch):
        lo = self.config.loss
        named, _ = super()._labeled_losses(coarse, refined, batch)
        n = batch.num_labeled
        probs = torch.softmax(refined.float(), dim=1)
        target, mask = batch.target[:n], batch.label_mask[:n]
        named["intra_prl"] = losses.intra_patch_ranked_loss(
            probs, target, mask, lo.patch_size, lo.hard_pixels, lo.margin
        )
        named["inter_prl"] = losses.inter_patch_ranked_loss(
            probs, target, mask, lo.patch_size, lo.hard_pixels, lo.margin
        )
        total = (
            named["supervised"]
            + lo.lambda_intra * named["intra_prl"]
            + lo.lambda_inter * named["inter_prl"]
        )
        return named, total

    def _consistency(self, coarse, refined, target, valid):
        return losses.consistency_loss(coarse, refined, target, weight=valid)


METHOD_CLASSES: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (CriiMethod, SupervisedMethod, MeanTeacherMethod)
}


def build_method(
    config: CriiConfig, model: nn.Module, generator: torch.Generator
) -> TrainingMethod:
    """The method named by ``config.train.method`` (validated by the config)."""
    return METHOD_CLASSES[config.train.method](config, model, generator)


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student for floating tensors (parameters and
    buffers), a copy for the others (batch-norm counters). Grouped operations: a few kernel
    launches for the whole network instead of two per tensor, which count on a GPU."""
    mine = [*teacher.named_parameters(), *teacher.named_buffers()]
    theirs = [*student.named_parameters(), *student.named_buffers()]
    if [name for name, _ in mine] != [name for name, _ in theirs]:
        raise ValueError("the teacher and the student are not the same network")
    pairs = [(target, source) for (_, target), (_, source) in zip(mine, theirs, strict=True)]
    targets = [target for target, _ in pairs if target.dtype.is_floating_point]
    sources = [source for target, source in pairs if target.dtype.is_floating_point]
    with torch.no_grad():
        if targets:
            torch._foreach_mul_(targets, decay)
            torch._foreach_add_(targets, sources, alpha=1.0 - decay)
        for target, source in pairs:
            if not target.dtype.is_floating_point:
                target.copy_(source)


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)
