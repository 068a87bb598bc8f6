"""Encoders: MobileNetV2 (the paper's) and MobileNet v1 (FastDepth's), written here because
there is no CPU build of torchvision. Both return their skip taps, shallow to deep."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mobiledepth.arch.blocks import ConvBNReLU, DepthwiseSeparable, InvertedResidual

# torchvision's MobileNetV2 table: expansion t, output channels c, repeats n, first stride s.
MOBILENETV2_STAGES = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                      [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
# MobileNet v1 (FastDepth): (output channels, stride) per depthwise-separable layer.
MOBILENETV1_LAYERS = [[64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1],
                      [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1]]


def mobilenetv2_blocks(stem: int, stages: Sequence[Sequence[int]],
                       hidden: Sequence[int] | None = None) -> list[dict]:
    """Expand the stage table into one dict per block: cin, cout, stride, hidden, stage.

    ``hidden`` overrides the expanded width of each block (a pruned spec); blocks with
    expansion 1 have no expand conv, so their hidden width is tied to their input.
    """
    blocks: list[dict] = []
    cin = stem
    for stage_index, (t, c, n, s) in enumerate(stages):
        for i in range(n):
            blocks.append({"cin": cin, "cout": c, "stride": s if i == 0 else 1,
                           "hidden": cin * t, "expansion": t, "stage": stage_index})
            cin = c
    if hidden is not None:
        if len(hidden) != len(blocks):
            raise ValueError(f"encoder.hidden has {len(hidden)} widths but the table has {len(blocks)} blocks")
        for block, width in zip(blocks, hidden):
            if block["expansion"] == 1 and width != block["cin"]:
                raise ValueError(f"block with expansion 1 has hidden width tied to its input ({block['cin']}), got {width}")
            block["hidden"] = int(width)
    return blocks


def tap_stage_indices(strides: Sequence[int]) -> list[int]:
    """Stages whose output is a skip tap: the last stage at each resolution."""
    return [i for i in range(len(strides)) if i == len(strides) - 1 or strides[i + 1] != 1]


class TappedEncoder(nn.Module):
    """A ``features`` Sequential whose outputs at ``tap_indices`` are the skip taps."""

    features: nn.Sequential
    tap_indices: list[int]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.tap_indices:
                taps.append(x)
        return taps


class MobileNetV2Encoder(TappedEncoder):
    """MobileNetV2 ``features[0:18]`` (no 1280-channel head); taps at /2, /4, /8, /16, /32."""

    def __init__(self, stem: int = 32, stages: Sequence[Sequence[int]] = MOBILENETV2_STAGES,
                 hidden: Sequence[int] | None = None):
        super().__init__()
        blocks = mobilenetv2_blocks(stem, stages, hidden)
        tap_stages = set(tap_stage_indices([s for _, _, _, s in stages]))
        self.features = nn.Sequential(
            ConvBNReLU(3, stem, kernel=3, stride=2),
            *[InvertedResidual(b["cin"], b["cout"], b["stride"], b["hidden"]) for b in blocks],
        )
        # features index (1-based over blocks) of each tap: [1, 3, 6, 13, 17] for the standard table
        self.tap_indices = [i + 1 for i, b in enumerate(blocks)
                            if b["stage"] in tap_stages and (i + 1 == len(blocks) or blocks[i + 1]["stage"] != b["stage"])]
        self.tap_channels = [blocks[i - 1]["cout"] for i in self.tap_indices]



class MobileNetV1Encoder(TappedEncoder):
    """MobileNet v1 (FastDepth's encoder); taps at /2, /4, /8, /16, /32."""

    def __init__(self, stem: int = 32, layers: Sequence[Sequence[int]] = MOBILENETV1_LAYERS):
        super().__init__()
        modules: list[nn.Module] = [ConvBNReLU(3, stem, kernel=3, stride=2, act=nn.ReLU)]
        channels = [stem]
        strides = [2]
        cin = stem
        for cout, stride in layers:
            modules.append(DepthwiseSeparable(cin, cout, kernel=3, stride=stride))
            channels.append(cout)
            strides.append(stride)
            cin = cout
        self.features = nn.Sequential(*modules)
        self.tap_indices = [i for i in range(len(modules)) if i == len(modules) - 1 or strides[i + 1] != 1]
        self.tap_channels = [channels[i] for i in self.tap_indices]
