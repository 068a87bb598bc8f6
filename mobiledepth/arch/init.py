"""Weight initialisation and BatchNorm calibration.

Randomly initialised networks are badly conditioned (activations grow layer by layer, and
fp16 rounding then moves the output by ~10 %). ``calibrate_batchnorm`` gives a random or
pruned network realistic BatchNorm statistics from a few images, which is what parity
checks and freshly built models need.
"""

from __future__ import annotations

import torch
from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming (fan-out) convs, unit BatchNorm, zero bias — torchvision's MobileNetV2 recipe."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 4) -> nn.Module:
    """Recompute every BatchNorm's running mean/var as the exact average over ``images``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    saved = [(bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size])
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.train(was_training)
    return model
