"""A small 2-D U-Net: the ``"unet"`` entry of the model registry, a convolutional baseline.

Its closed-form parameter count and grid rule are in
:mod:`pdetransfer.engine.models.registry`, which needs no torch.

Sized by ``width`` (channels of the finest level, doubled at each coarser one) and ``depth``
(the number of times the grid is halved, kept in the spec's ``layers``). Each level is two
3x3 convolutions with GELU; the encoder halves the grid by average pooling, the decoder
doubles it by a 2x2 transposed convolution and concatenates the encoder's features of that
level; a 1x1 head maps to one output channel.

The 3x3 convolutions pad *periodically*: the study's systems live on the periodic unit square
(docs/science.md), so a zero pad would invent a wall at the edges that the solution does not have,
and the FNO it is compared with is periodic through its Fourier layers. There is no
normalisation layer: a per-sample norm (GroupNorm, LayerNorm) divides out the amplitude of the
features, which for these linear PDEs carries the amplitude of the solution, and BatchNorm's
running statistics are buffers the generic ensemble cannot pack.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from pdetransfer.engine.models.registry import ModelSpec


def _conv3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="circular")


class _Level(nn.Module):
    """Two periodic 3x3 convolutions, each followed by GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3(in_channels, out_channels)
        self.conv2 = _conv3(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv2(F.gelu(self.conv1(x))))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``spec.width`` channels at the finest level and
    ``spec.layers`` halvings of the grid."""

    def __init__(self, spec: ModelSpec, out_channels: int = 1) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.width * 2**level for level in range(spec.layers + 1)]
        self.down = nn.ModuleList(
            _Level(cin, cout)
            for cin, cout in zip([spec.in_channels, *widths[:-1]], widths, strict=True)
        )
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(coarse, fine, 2, stride=2)
            for fine, coarse in itertools.pairwise(widths)
        )
        self.up = nn.ModuleList(_Level(2 * fine, fine) for fine in widths[:-1])
        self.head = nn.Conv2d(spec.width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, n, n)`` to ``(B, out_channels, n, n)``; ``n`` divisible by
        ``2 ** depth`` (the registry's resolution rule)."""
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for upsample, block in zip(reversed(self.upsample), reversed(self.up), strict=True):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)
