import pytest
import torch

from training_backend.config import ModelConfig
from training_backend.model import CRIINet, build_model


@pytest.mark.parametrize("levels, size", [(3, (24, 40)), (4, (48, 64))])
def test_outputs_have_the_input_size_and_class_count(levels, size):
    config = ModelConfig(in_channels=3, num_classes=4, base_width=8, levels=levels)
    model = CRIINet(config)
    out = model(torch.randn(2, 3, *size))
    assert out.coarse.shape == (2, 4, *size)
    assert out.refined.shape == (2, 4, *size)
    assert model.size_multiple == 2 ** (levels - 1)


def test_untrained_refinement_starts_at_the_coarse_output():
    model = build_model(ModelConfig(num_classes=3, base_width=8, levels=3)).eval()
    out = model(torch.randn(1, 3, 16, 16))
    assert torch.equal(out.coarse, out.refined)


def test_refinement_learns_a_residual():
    model = CRIINet(ModelConfig(num_classes=2, base_width=8, levels=3))
    out = model(torch.randn(2, 3, 16, 16))
    out.refined.sum().backward()
    assert model.refine.delta.weight.grad.abs().sum() > 0
