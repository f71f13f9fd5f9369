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
        with torch.no_grad():
            student = _unwrap(model).state_dict()
            for key, value in self.teacher.state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(decay).add_(student[key].detach(), alpha=1.0 - decay)
                else:
                    value.copy_(student[key])

    def losses(self, model, batch, progress, autocast):
        if batch.num_labeled == batch.image.shape[0]:  # every slice annotated: nothing to match
            with autocast():
                out = model(batch.image)
            sup = self._supervised(out.coarse, out.refined, batch)
            return {"total": sup, "supervised": sup}
        return self.consistency_losses(model, batch, progress, autocast)

    def consistency_losses(self, model, batch, progress, autocast) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _teacher_probabilities(self, model, weak, autocast) -> torch.Tensor:
        network = self.teacher if self.teacher is not None else model
        with torch.no_grad(), autocast():
            return torch.softmax(network(weak).refined.float(), dim=1)

    def _forward_with_strong_view(self, model, batch, autocast):
        n = batch.num_labeled
        strong = intensity_jitter(batch.image[n:], self.generator)
        with autocast():
            return model(torch.cat([batch.image[:n], strong]))


class MeanTeacherMethod(_TeacherMethod):
    name = "mean-teacher"

    def __init__(self, config, model, generator) -> None:
        super().__init__(config, model, generator, use_ema=True)

    def consistency_losses(self, model, batch, progress, autocast):
        n = batch.num_labeled
        target = self._teacher_probabilities(model, batch.image[n:], autocast)
        out = self._forward_with_strong_view(model, batch, autocast)
        sup = self._supervised(out.coarse, out.refined, batch)
        student = torch.softmax(out.refined[n:].float(), dim=1)
        valid = batch.valid[n:].float()
        consistency = ((student - target) ** 2).mean(dim=1).mul(valid).sum() / valid.sum().clamp(
            min=1.0
        )
        total = sup + self._ramp(progress) * consistency
        return {"total": total, "supervised": sup, "consistency": consistency}


class CriiMethod(_TeacherMethod):
    name = "crii"

    def __init__(self, config, model, generator) -> None:
        super().__init__(config, model, generator, use_ema=config.loss.teacher == "ema")

    def consistency_losses(self, model, batch, progress, autocast):
        lo = self.config.loss
        n = batch.num_labeled
        target = self._teacher_probabilities(model, batch.image[n:], autocast)
        if lo.use_prior and batch.prior is not None:
            alpha = (batch.prior_weight[n:] * (1.0 - 0.5 * progress)).unsqueeze(1)
            target = (1.0 - alpha) * target + alpha * batch.prior[n:]
        out = self._forward_with_strong_view(model, batch, autocast)
        sup = self._supervised(out.coarse, out.refined, batch)
        probs = torch.softmax(out.refined[:n].float(), dim=1)
        target_l, mask_l = batch.target[:n], batch.label_mask[:n]
        intra = losses.intra_patch_ranked_loss(
            probs, target_l, mask_l, lo.patch_size, lo.hard_pixels, lo.margin
        )
        inter = losses.inter_patch_ranked_loss(
            probs, target_l, mask_l, lo.patch_size, lo.hard_pixels, lo.margin
        )
        consistency = losses.consistency_loss(
            out.coarse[n:], out.refined[n:], target, weight=batch.valid[n:].float()
        )
        total = (
            sup
            + lo.lambda_intra * intra
            + lo.lambda_inter * inter
            + self._ramp(progress) * consistency
        )
        return {
            "total": total,
            "supervised": sup,
            "intra_prl": intra,
            "inter_prl": inter,
            "consistency": consistency,
        }


METHOD_CLASSES: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (CriiMethod, SupervisedMethod, MeanTeacherMethod)
}


def build_method(
    config: CriiConfig, model: nn.Module, generator: torch.Generator
) -> TrainingMethod:
    """The method named by ``config.train.method`` (validated by the config)."""
    return METHOD_CLASSES[config.train.method](config, model, generator)


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)
