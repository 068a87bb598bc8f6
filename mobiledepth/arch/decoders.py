"""Decoders: the paper's FBNet-style U-Net decoder and FastDepth's NNConv5, built from a
:class:`~mobiledepth.arch.plan.DecoderPlan` (widths, upsampling and skips are decided there)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from mobiledepth.arch.blocks import DepthwiseSeparable, IRFBlock
from mobiledepth.arch.plan import DecoderPlan


@dataclass
class DecoderOutput:
    depth: torch.Tensor                 # (N, 1, H, W) at input resolution
    stage_outputs: list[torch.Tensor]   # one per decoder stage (heads attach here)
    features: torch.Tensor              # penultimate decoder features (for pair-wise KD)


def _predict(plan: DecoderPlan) -> nn.Conv2d:
    return nn.Conv2d(plan.predict.cin, plan.predict.cout, kernel_size=plan.predict.kernel)


class FBNetDecoder(nn.Module):
    """Five FBNet IRF stages, deep to shallow, fusing the five encoder taps.

    The deepest tap (/32) is the decoder's input; stages 1-4 upsample x2 inside their IRF
    block and then concatenate the tap at the new resolution (/16, /8, /4, /2); stage 5
    refines at /2; a 1x1 conv predicts one channel and a plain (bilinear) x2 upsampling
    brings it to full resolution — the paper's "last layer replaced by plain upsampling".
    """

    def __init__(self, plan: DecoderPlan):
        super().__init__()
        self.stages = nn.ModuleList(IRFBlock(s.cin, s.cout, s.hidden, kernel=s.kernel, stride=s.stride, groups=s.groups)
                                    for s in plan.stages)
        self.skip_taps = [s.skip_tap for s in plan.stages]  # tap concatenated after each stage, or None
        self.predict = _predict(plan)
        self.final_upsample = plan.final_upsample
        self.stage_channels = plan.stage_channels

    def forward(self, taps: list[torch.Tensor]) -> DecoderOutput:
        x = taps[-1]
        outputs = []
        for stage, tap in zip(self.stages, self.skip_taps):
            x = stage(x)
            outputs.append(x)
            if tap is not None:
                x = torch.cat([x, taps[tap]], dim=1)
        low = self.predict(x)
        mode = self.final_upsample
        depth = F.interpolate(low, scale_factor=2.0, mode=mode,
                              align_corners=False if mode == "bilinear" else None)
        return DecoderOutput(depth=depth, stage_outputs=outputs, features=x)


class NNConv5Decoder(nn.Module):
    """FastDepth's decoder: five [dw 5x5 → pw 1x1 → nearest x2] blocks with additive skips
    (taps at /8, /4, /2 added after the upsample of blocks 2, 3, 4), then pw → 1 channel."""

    def __init__(self, plan: DecoderPlan):
        super().__init__()
        self.blocks = nn.ModuleList(DepthwiseSeparable(s.cin, s.cout, kernel=s.kernel) for s in plan.stages)
        self.skip_taps = [s.skip_tap for s in plan.stages]  # tap added after each block's upsample, or None
        self.predict = _predict(plan)
        self.stage_channels = plan.stage_channels

    def forward(self, taps: list[torch.Tensor]) -> DecoderOutput:
        x = taps[-1]
        outputs = []
        for block, tap in zip(self.blocks, self.skip_taps):
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
            if tap is not None:
                x = x + taps[tap]
            outputs.append(x)
        return DecoderOutput(depth=self.predict(x), stage_outputs=outputs, features=x)


DECODERS = {"fbnet": FBNetDecoder, "nnconv5": NNConv5Decoder}


def build_decoder(plan: DecoderPlan) -> nn.Module:
    """The decoder module of a plan."""
    return DECODERS[plan.kind](plan)
