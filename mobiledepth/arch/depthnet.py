"""DepthNet: encoder + decoder + training-only intermediate heads."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

# ImageNet statistics: the model takes RGB in [0, 1] and normalises inside, so a phone
# camera pipeline only has to scale pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DepthPrediction(NamedTuple):
    depth: torch.Tensor                # (N, 1, H, W), larger = farther
    intermediates: list[torch.Tensor]  # training-only heads, at their own resolution
    features: torch.Tensor             # penultimate decoder features


class DepthNet(nn.Module):
    """A relative-depth network. ``forward`` is the deployed path (no heads);
    ``forward_train`` also returns the intermediate heads and the penultimate features."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head_stages: Sequence[int] = ()):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head_stages = [int(s) for s in head_stages]
        # stage numbers are 1-based, as in the paper ("after decoder stages 2 and 3")
        self.heads = nn.ModuleList(
            nn.Conv2d(decoder.stage_channels[s - 1], 1, kernel_size=1) for s in self.head_stages
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _decode(self, x: torch.Tensor):
        return self.decoder(self.encoder((x - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(x).depth

    def forward_train(self, x: torch.Tensor) -> DepthPrediction:
        out = self._decode(x)
        intermediates = [head(out.stage_outputs[s - 1]) for head, s in zip(self.heads, self.head_stages)]
        return DepthPrediction(out.depth, intermediates, out.features)

    def strip_heads(self) -> "DepthNet":
        """Remove the training-only heads in place (they are never part of an export)."""
        self.heads = nn.ModuleList()
        self.head_stages = []
        return self
