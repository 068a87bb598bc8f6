"""Encoders: MobileNetV2 (the paper's) and MobileNet v1 (FastDepth's), written here because
there is no CPU build of torchvision. Both are built from an
:class:`~mobiledepth.arch.plan.EncoderPlan` and return their skip taps, shallow to deep."""

from __future__ import annotations

import torch
from torch import nn

from mobiledepth.arch.blocks import ConvBNReLU, DepthwiseSeparable, InvertedResidual
from mobiledepth.arch.plan import EncoderPlan


class TappedEncoder(nn.Module):
    """``features`` = the plan's stem + one module per block (a subclass's ``make_block``); outputs at
    ``tap_indices`` are the skip taps."""

    def __init__(self, plan: EncoderPlan):
        super().__init__()
        stem = ConvBNReLU.from_plan(plan.stem)
        self.features = nn.Sequential(stem, *[self.make_block(block) for block in plan.blocks])
        self.tap_indices = list(plan.tap_indices)
        self.tap_channels = list(plan.tap_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.tap_indices:
                taps.append(x)
        return taps


class MobileNetV2Encoder(TappedEncoder):
    """MobileNetV2 ``features[0:18]`` (no 1280-channel head); taps at /2, /4, /8, /16, /32
    (features [1, 3, 6, 13, 17] for the standard table)."""

    def make_block(self, block) -> nn.Module:
        return InvertedResidual(block.cin, block.cout, block.stride, block.hidden)


class MobileNetV1Encoder(TappedEncoder):
    """MobileNet v1 (FastDepth's encoder); taps at /2, /4, /8, /16, /32."""

    def make_block(self, block) -> nn.Module:
        return DepthwiseSeparable(block.cin, block.cout, kernel=block.kernel, stride=block.stride)


ENCODERS = {"mobilenetv2": MobileNetV2Encoder, "mobilenetv1": MobileNetV1Encoder}


def build_encoder(plan: EncoderPlan) -> TappedEncoder:
    """The encoder module of a plan."""
    return ENCODERS[plan.kind](plan)
