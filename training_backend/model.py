"""CRIINet: a 2.5D U-Net (coarse branch) followed by a light residual refinement module."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from training_backend.config import ModelConfig


class SegmentationOutput(NamedTuple):
    """Logits of both branches, each (B, K, H, W)."""

    coarse: torch.Tensor
    refined: torch.Tensor


def _norm(channels: int) -> nn.BatchNorm2d:
    # Batch norm: with channels-last bf16 it is about twice as fast as group norm on a CPU.
    return nn.BatchNorm2d(channels)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and a leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            _norm(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            _norm(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


class CoarseUNet(nn.Module):
    """U-Net with ``levels`` resolutions; returns coarse logits and the last decoder features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = [config.base_width * 2**i for i in range(config.levels)]
        self.encoders = nn.ModuleList()
        previous = config.in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(previous, width, 2, stride=2))
            self.decoders.append(ConvBlock(2 * width, width))
            previous = width
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for index, encoder in enumerate(self.encoders):
            if index:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x), x


class RefinementModule(nn.Module):
    """Refines coarse logits from the image, the coarse probabilities and decoder features.

    Residual: ``refined = coarse + delta``, so an untrained module starts at the coarse output.
    Dilated convolutions give it context at little cost.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.refine_width
        in_channels = config.in_channels + config.num_classes + config.base_width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            _norm(width),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            _norm(width),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            _norm(width),
            nn.LeakyReLU(0.01, inplace=True),
        )
        self.delta = nn.Conv2d(width, config.num_classes, 1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(
        self, image: torch.Tensor, coarse: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        probabilities = torch.softmax(coarse.float(), dim=1).to(coarse.dtype)
        return coarse + self.delta(self.body(torch.cat([image, probabilities, features], dim=1)))


class CRIINet(nn.Module):
    """Coarse-refined segmentation network; one forward pass gives both outputs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.coarse = CoarseUNet(config)
        self.refine = RefinementModule(config)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the U-Net downsampling)."""
        return 2 ** (self.config.levels - 1)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        coarse, features = self.coarse(image)
        return SegmentationOutput(coarse, self.refine(image, coarse, features))


def build_model(config: ModelConfig, device: torch.device | str = "cpu") -> CRIINet:
    """A CRIINet on ``device`` in channels-last layout (faster convolutions on CPU and GPU)."""
    return CRIINet(config).to(device=device, memory_format=torch.channels_last)
