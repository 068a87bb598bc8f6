"""Building blocks shared by every architecture: conv-BN-ReLU, MobileNetV2's inverted
residual, FBNet's IRF block (with optional upsampling) and a depthwise-separable conv."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from mobiledepth.arch.plan import UPSAMPLE_STRIDE, Conv, has_expand, has_residual

ACTIVATIONS: dict[str, type[nn.Module] | None] = {"relu6": nn.ReLU6, "relu": nn.ReLU, "none": None}


class ConvBNReLU(nn.Sequential):
    """KxK convolution + BatchNorm (+ ReLU6/ReLU when ``act`` is given)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)

    @classmethod
    def from_plan(cls, conv: Conv) -> "ConvBNReLU":
        """The ConvBNReLU a plan's :class:`~mobiledepth.arch.plan.Conv` describes."""
        return cls(conv.cin, conv.cout, conv.kernel, conv.stride, conv.groups, ACTIVATIONS[conv.act])


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped when hidden == cin) → 3x3 depthwise → 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = []
        if has_expand(cin, hidden):
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = has_residual(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle (identity for one group)."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class IRFBlock(nn.Module):
    """FBNet inverted-residual block (Wu et al. 2019).

    1x1 (group) expand + BN + ReLU → channel shuffle (groups > 1) → nearest x2 upsample
    when ``stride == -2`` → KxK depthwise + BN + ReLU → 1x1 (group) project + BN →
    residual add when input and output shapes match.
    """

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int = 3, stride: int = 1,
                 groups: int = 1):
        super().__init__()
        if stride not in (1, UPSAMPLE_STRIDE):
            raise ValueError(f"IRFBlock stride must be 1 or {UPSAMPLE_STRIDE} (upsample), got {stride}")
        self.groups = groups
        self.upsample = stride == UPSAMPLE_STRIDE
        self.expand = ConvBNReLU(cin, hidden, kernel=1, groups=groups, act=nn.ReLU)
        self.depthwise = ConvBNReLU(hidden, hidden, kernel=kernel, groups=hidden, act=nn.ReLU)
        self.project = ConvBNReLU(hidden, cout, kernel=1, groups=groups, act=None)
        self.use_residual = has_residual(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.expand(x), self.groups)
        if self.upsample:
            out = F.interpolate(out, scale_factor=2.0, mode="nearest")
        out = self.project(self.depthwise(out))
        return x + out if self.use_residual else out


class DepthwiseSeparable(nn.Sequential):
    """Depthwise KxK + BN + ReLU → pointwise 1x1 + BN + ReLU (MobileNet v1 / NNConv5 unit)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            ConvBNReLU(cin, cin, kernel=kernel, stride=stride, groups=cin, act=nn.ReLU),
            ConvBNReLU(cin, cout, kernel=1, act=nn.ReLU),
        )
