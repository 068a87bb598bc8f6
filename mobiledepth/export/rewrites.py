"""Exact graph rewrites applied to the deployed PyTorch model before ONNX export.

``phase_split_upsampling``: an FBNet IRF block that upsamples computes
``project(depthwise(nearest_x2(expand(x))))``. TFLite's RESIZE_NEAREST_NEIGHBOR is not taken by
the XNNPACK delegate, so every such block splits the graph into separate delegate partitions
and runs its resize single-threaded on a tensor of ``hidden`` channels at the high resolution
(docs/benchmarks.md). A depthwise KxK convolution of a nearest-upsampled tensor equals four
small depthwise convolutions of the low-resolution tensor, one per output phase (even/odd row
x even/odd column), whose kernels sum the taps that land on the same source pixel
(``mobiledepth.export.phases``). The pointwise projection is per pixel, so it runs per phase
too, and a DEPTH_TO_SPACE (DCR) interleaves the four ``cout``-channel results. Same function,
same or fewer MACs (a 5x5 kernel becomes four 3x3 ones), no high-resolution ``hidden`` tensor,
and XNNPACK delegates every op. Parity against the unrewritten model is checked by the export
like every stage.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobiledepth.arch.blocks import IRFBlock, channel_shuffle
from mobiledepth.export.phases import PHASES, phase_radius, phase_taps


class DepthToSpaceDCR(torch.autograd.Function):
    """x2 depth-to-space with channel index (row_phase * 2 + col_phase) * C + c; ONNX DepthToSpace(DCR)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see class docstring
        n, c4, h, w = x.shape
        c = c4 // 4
        return x.view(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def symbolic(g, x):  # noqa: D102 - the ONNX node the exporter writes
        return g.op("DepthToSpace", x, blocksize_i=2, mode_s="DCR")


def phase_kernels(weight: torch.Tensor) -> list[torch.Tensor]:
    """Four depthwise kernels (PHASES order) equivalent to ``weight`` (C, 1, K, K) applied after nearest x2."""
    size = 2 * phase_radius(weight.shape[-1]) + 1
    kernels = []
    for phase in PHASES:
        merged = weight.new_zeros(*weight.shape[:2], size, size)
        for row, col, src_row, src_col in phase_taps(weight.shape[-1], phase):
            merged[:, :, row, col] += weight[:, :, src_row, src_col]
        kernels.append(merged)
    return kernels


class PhaseSplitIRF(nn.Module):
    """The deploy form of an upsampling IRFBlock: expand → 4 phase depthwise → project each → DCR depth-to-space."""

    def __init__(self, block: IRFBlock):
        super().__init__()
        conv, self.depthwise_bn, self.depthwise_act = block.depthwise
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError("phase splitting needs a square, stride-1, undilated depthwise convolution")
        self.expand, self.project, self.groups = block.expand, block.project, block.groups
        q = phase_radius(conv.kernel_size[0])
        self.phases = nn.ModuleList()
        for kernel in phase_kernels(conv.weight.detach()):
            phase = nn.Conv2d(conv.in_channels, conv.out_channels, 2 * q + 1, padding=q,
                              groups=conv.groups, bias=conv.bias is not None)
            phase.weight.data.copy_(kernel)
            if conv.bias is not None:
                phase.bias.data.copy_(conv.bias.detach())
            self.phases.append(phase)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = channel_shuffle(self.expand(x), self.groups)
        outs = [self.project(self.depthwise_act(self.depthwise_bn(phase(hidden)))) for phase in self.phases]
        return DepthToSpaceDCR.apply(torch.cat(outs, dim=1))


def phase_split_upsampling(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every upsampling IRFBlock in its phase-split form; and how many were rewritten."""
    rewritten = copy.deepcopy(model)
    count = 0
    for parent in rewritten.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, IRFBlock) and child.upsample:
                setattr(parent, name, PhaseSplitIRF(child))
                count += 1
    return rewritten.eval(), count

