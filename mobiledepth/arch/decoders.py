"""Decoders: the paper's FBNet-style U-Net decoder and FastDepth's NNConv5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from mobiledepth.arch.blocks import DepthwiseSeparable, IRFBlock


@dataclass
class DecoderOutput:
    depth: torch.Tensor                 # (N, 1, H, W) at input resolution
    stage_outputs: list[torch.Tensor]   # one per decoder stage (heads attach here)
    features: torch.Tensor              # penultimate decoder features (for pair-wise KD)


class FBNetDecoder(nn.Module):
    """Five FBNet IRF stages, deep to shallow, fusing the five encoder taps.

    The deepest tap (/32) is the decoder's input; stages 1-4 upsample x2 inside their IRF
    block and then concatenate the tap at the new resolution (/16, /8, /4, /2); stage 5
    refines at /2; a 1x1 conv predicts one channel and a plain (bilinear) x2 upsampling
    brings it to full resolution — the paper's "last layer replaced by plain upsampling".
    """

    def __init__(self, tap_channels: Sequence[int], stages: Sequence[dict],
                 final_upsample: str = "bilinear"):
        super().__init__()
        if len(tap_channels) != 5 or len(stages) != 5:
            raise ValueError("FBNetDecoder needs 5 encoder taps and 5 stage specs")
        skips = list(reversed(tap_channels[:-1]))  # /16, /8, /4, /2
        cin = tap_channels[-1]
        blocks = []
        for index, stage in enumerate(stages):
            upsample = index < 4
            hidden = int(stage.get("hidden") or round(cin * stage.get("expansion", 6)))
            blocks.append(IRFBlock(cin, stage["out"], hidden, kernel=stage.get("kernel", 3),
                                   stride=-2 if upsample else 1, groups=stage.get("groups", 1)))
            cin = stage["out"] + (skips[index] if upsample else 0)
        self.stages = nn.ModuleList(blocks)
        self.predict = nn.Conv2d(stages[-1]["out"], 1, kernel_size=1)
        self.final_upsample = final_upsample
        self.stage_channels = [s["out"] for s in stages]

    def forward(self, taps: list[torch.Tensor]) -> DecoderOutput:
        skips = list(reversed(taps[:-1]))
        x = taps[-1]
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            outputs.append(x)
            if index < 4:
                x = torch.cat([x, skips[index]], dim=1)
        low = self.predict(x)
        mode = self.final_upsample
        depth = F.interpolate(low, scale_factor=2.0, mode=mode,
                              align_corners=False if mode == "bilinear" else None)
        return DecoderOutput(depth=depth, stage_outputs=outputs, features=x)


class NNConv5Decoder(nn.Module):
    """FastDepth's decoder: five [dw 5x5 → pw 1x1 → nearest x2] blocks with additive skips
    (taps at /8, /4, /2 added after the upsample of blocks 2, 3, 4), then pw → 1 channel."""

    def __init__(self, tap_channels: Sequence[int], widths: Sequence[int] = (512, 256, 128, 64, 32),
                 kernel: int = 5):
        super().__init__()
        cin = tap_channels[-1]
        blocks = []
        for width in widths:
            blocks.append(DepthwiseSeparable(cin, width, kernel=kernel))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        # block index (0-based) -> tap index added after its upsample
        self.skip_after = {1: 2, 2: 1, 3: 0}
        for block, tap in self.skip_after.items():
            if widths[block] != tap_channels[tap]:
                raise ValueError(f"NNConv5 additive skip needs width {tap_channels[tap]} after block {block + 1}, got {widths[block]}")
        self.predict = nn.Conv2d(widths[-1], 1, kernel_size=1)
        self.stage_channels = list(widths)

    def forward(self, taps: list[torch.Tensor]) -> DecoderOutput:
        x = taps[-1]
        outputs = []
        for index, block in enumerate(self.blocks):
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
            if index in self.skip_after:
                x = x + taps[self.skip_after[index]]
            outputs.append(x)
        return DecoderOutput(depth=self.predict(x), stage_outputs=outputs, features=x)
