"""Public models nobody here wrote, as ``module:factory`` references for the issue-12 proofs
(``benchmarks/prune_any_model.py``, docs/prune.md's worked example):

    mobiledepth export --model benchmarks.public_models:basic_unet ...

MONAI is a bench/test extra (requirements/lock.txt), never a runtime dependency: it is imported
inside the factories. Each model declares ``input_size`` (the size the proofs use) so that
``train``, ``eval`` and ``lut`` pick it up without ``--input-size``.
"""

from __future__ import annotations

INPUT_SIZE = (64, 64)


def basic_unet():
    """MONAI ``BasicUNet`` (2-D, 3 -> 1 channels, BatchNorm): a plain U-Net, 1.98 M parameters."""
    from monai.networks.nets import BasicUNet

    model = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, norm="batch")
    model.input_size = INPUT_SIZE
    return model


def flexible_unet():
    """MONAI ``FlexibleUNet`` with an EfficientNet-B0 encoder (depthwise convs, squeeze-excitation), no download."""
    from monai.networks.nets import FlexibleUNet

    model = FlexibleUNet(in_channels=3, out_channels=1, backbone="efficientnet-b0", pretrained=False, spatial_dims=2)
    model.input_size = INPUT_SIZE
    return model
