"""traced_layers: the LUT's layer list for any nn.Module, from one traced forward pass."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from mobiledepth.arch import resolve_spec
from mobiledepth.arch.resolve import resolve_model
from mobiledepth.errors import UserError
from mobiledepth.export.rewrites import phase_split_upsampling
from mobiledepth.prune.layers import Layer, network_layers
from mobiledepth.prune.traced_layers import traced_layers


@pytest.mark.parametrize("name, size", [("mdepth-tiny", (64, 64)), ("mdepth-mnv2-fbnet", (128, 96))])
def test_paper_model_traced_equals_its_plan(name, size):
    """Traced from the deployed module (the export's phase-split form), the layers are the plan's, key for key."""
    graph, rewritten = phase_split_upsampling(resolve_model(name).model.eval())
    assert rewritten == 4
    traced = traced_layers(graph, size)
    planned = network_layers(resolve_spec(name), size)
    assert Counter(traced) == Counter(planned)  # same configs, variable flags included; order is the call order
    assert traced[0] == planned[0] and traced[-1] == planned[-1]  # normalize first, the final resize last


class ConvBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.head = nn.Conv2d(32, 1, 1)

    def forward(self, x):
        a = torch.relu(self.bn(self.conv(x)))                   # conv + folded BN + fused ReLU: one layer
        b = torch.nn.functional.hardtanh(self.dw(a), -1.0, 1.0)  # not ReLU6: a stand-alone activation
        y = torch.cat([a, b * torch.sigmoid(b.mean((2, 3), keepdim=True))], dim=1)
        return nn.functional.interpolate(self.head(y), scale_factor=2.0, mode="bilinear", align_corners=False)


def test_fusion_and_generic_ops_on_a_hand_made_model():
    layers = traced_layers(ConvBlock(), (32, 32))
    assert [layer.op for layer in layers] == ["conv", "dwconv", "act", "global_pool", "act", "scale", "concat", "conv",
                                              "resize_bilinear"]
    assert layers[0] == Layer("conv", 32, 32, (3, 16), (False, True), kernel=3, stride=2, act="relu")
    assert layers[2].act == "hardtanh:-1:1" and layers[4].act == "sigmoid"
    assert layers[6].channels == (16, 16) and layers[6].variable == (True, True)
    assert layers[7] == Layer("conv", 16, 16, (32, 1), (True, False))  # the depth output's channel is fixed
    assert layers[8] == Layer("resize_bilinear", 16, 16, (1,), (False,))


class Unsupported(nn.Module):
    def forward(self, x):
        y = torch.softmax(x, dim=1)
        return torch.nn.functional.layer_norm(y, y.shape[1:])[:, :1]


def test_layers_the_table_cannot_time_are_named_in_one_line():
    with pytest.raises(UserError) as info:
        traced_layers(Unsupported(), (8, 8))
    message = str(info.value)
    assert "softmax x1" in message and "layer_norm x1" in message and "\n" not in message


def test_a_model_that_fails_is_one_line():
    with pytest.raises(UserError, match="fails on a"):
        traced_layers(nn.Conv2d(4, 1, 1), (8, 8))  # wants 4 channels, gets an RGB image


def test_monai_basic_unet():
    monai = pytest.importorskip("monai")
    model = monai.networks.nets.BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, norm="batch")
    layers = traced_layers(model, (64, 64))
    ops = Counter(layer.op for layer in layers)
    assert ops == {"conv": 19, "act": 18, "maxpool": 4, "deconv": 4, "concat": 4}
    assert {layer.act for layer in layers if layer.op == "act"} == {"leaky_relu:0.1"}  # LeakyReLU is not fused
    assert layers[0].variable == (False, True) and layers[-1].channels == (32, 1) and layers[-1].variable == (True, False)
    assert all(layer.kernel == layer.stride == 2 for layer in layers if layer.op in ("maxpool", "deconv"))


def test_monai_flexible_unet_efficientnet():
    monai = pytest.importorskip("monai")
    model = monai.networks.nets.FlexibleUNet(in_channels=3, out_channels=1, backbone="efficientnet-b0",
                                             pretrained=False, spatial_dims=2)
    ops = Counter(layer.op for layer in traced_layers(model, (64, 64)))
    assert ops["dwconv"] == ops["global_pool"] == ops["scale"] == 16  # 16 MBConv blocks with squeeze-excitation
    assert ops["add"] == 9 and ops["resize_nearest"] == 5 and ops["concat"] == 4


OWN_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.head = nn.Conv2d(16, 1, 1)
        self.input_size = (32, 32)

    def forward(self, x):
        y = self.head(self.down(x))
        return torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest"), y


def make():
    return Net()
'''


def test_lut_target_of_a_factory_model_is_traced(tmp_path, monkeypatch):
    """``lut build --model module:factory`` lists the deployed model's traced layers (depth output only)."""
    from mobiledepth.prune.lut import lut_target

    (tmp_path / "own_lut_net.py").write_text(OWN_MODEL)
    monkeypatch.chdir(tmp_path)
    target = lut_target("own_lut_net:make", None)
    assert target.spec is None and target.size == (32, 32) and target.layer_source == "traced_layers"
    assert target.layers == [Layer("conv", 32, 32, (3, 16), (False, True), kernel=3, stride=2, act="relu6"),
                             Layer("conv", 16, 16, (16, 1), (True, False)),
                             Layer("resize_nearest", 16, 16, (1,), (False,))]
