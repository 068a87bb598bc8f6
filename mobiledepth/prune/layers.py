"""The layers of a deployed MobileNetV2 + FBNet network whose latency a lookup table measures.

The list mirrors the TFLite graph the export chain produces (BatchNorm folded into the
convolutions, ReLU fused, NHWC): input normalisation, every convolution (full, 1x1 and
depthwise; stride-2 ones are preceded by an explicit PAD, as onnx2tf writes them), the
residual ADDs, the decoder's upsampling blocks in the export's phase-split form (four
low-resolution depthwise and projection convs, then CONCATENATION + DEPTH_TO_SPACE: the
``phase_merge`` layer), the skip CONCATENATIONs, the prediction conv and the final bilinear
upsampling. Layers are pure data; identical layers (same op,
kernel, stride, activation, spatial size and channels) share one table entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from mobiledepth.export.phases import PHASES, phase_radius
from mobiledepth.arch.plan import Conv, EncoderPlan, IRFPlan, NetworkPlan, network_plan
from mobiledepth.prune.groups import check_prunable_spec

OPS = ("normalize", "conv", "dwconv", "add", "concat", "phase_merge", "resize_bilinear", "null")


@dataclass(frozen=True)
class Layer:
    """One layer config. ``channels``: (cin, cout) for conv, (c1, c2) for concat, (c,) otherwise.
    ``h``/``w`` are the *input* spatial size; ``variable`` marks channel dims that pruning changes."""

    op: str
    h: int
    w: int
    channels: tuple[int, ...]
    variable: tuple[bool, ...]
    kernel: int = 1
    stride: int = 1
    act: str = "none"

    @property
    def family(self) -> str:
        """Everything but the channel counts: layers of one family are interpolated together."""
        return f"{self.op}|k{self.kernel}|s{self.stride}|{self.act}|{self.h}x{self.w}"

    @property
    def key(self) -> str:
        return f"{self.family}|c{'x'.join(str(c) for c in self.channels)}"

    def with_channels(self, channels: tuple[int, ...]) -> "Layer":
        return Layer(self.op, self.h, self.w, tuple(int(c) for c in channels), self.variable,
                     self.kernel, self.stride, self.act)

    def to_dict(self) -> dict:
        return {"op": self.op, "h": self.h, "w": self.w, "channels": list(self.channels),
                "variable": list(self.variable), "kernel": self.kernel, "stride": self.stride, "act": self.act}

    @classmethod
    def from_dict(cls, d: dict) -> "Layer":
        return cls(d["op"], int(d["h"]), int(d["w"]), tuple(int(c) for c in d["channels"]),
                   tuple(bool(v) for v in d["variable"]), int(d.get("kernel", 1)), int(d.get("stride", 1)),
                   d.get("act", "none"))


NULL_LAYER = Layer("null", 1, 1, (8,), (False,))  # one tiny ADD: the per-invoke overhead


def _conv_layer(conv: Conv, size: tuple[int, int], variable: tuple[bool, bool] = (True, True)) -> Layer:
    """A planned full / 1x1 convolution (BatchNorm folded, activation fused) at input ``size``."""
    return Layer("conv", *size, (conv.cin, conv.cout), variable, kernel=conv.kernel, stride=conv.stride, act=conv.act)


def _dw_layer(conv: Conv, size: tuple[int, int], kernel: int | None = None, stride: int | None = None) -> Layer:
    """A depthwise convolution (by default the planned kernel and stride)."""
    return Layer("dwconv", *size, (conv.cout,), (True,), kernel=kernel or conv.kernel, stride=stride or conv.stride,
                 act=conv.act)


def _encoder_layers(encoder: EncoderPlan, input_size: tuple[int, int]) -> list[Layer]:
    layers = [Layer("normalize", *input_size, (3,), (False,)), _conv_layer(encoder.stem, input_size, (False, True))]
    for b in encoder.blocks:
        if b.expand is not None:
            layers.append(_conv_layer(b.expand, b.size))
        layers.append(_dw_layer(b.depthwise, b.size))
        layers.append(_conv_layer(b.project, b.out_size))
        if b.residual:
            layers.append(Layer("add", *b.out_size, (b.cout,), (True,)))
    return layers


def _decoder_stage_layers(s: IRFPlan) -> list[Layer]:
    layers = [_conv_layer(s.expand, s.size)]
    if s.upsample:  # the export's phase-split form (mobiledepth.export.rewrites)
        phase_kernel = 2 * phase_radius(s.kernel) + 1
        layers += [_dw_layer(s.depthwise, s.size, kernel=phase_kernel)] * len(PHASES)
        layers += [_conv_layer(s.project, s.size)] * len(PHASES)
        layers.append(Layer("phase_merge", *s.size, (s.cout,), (True,)))
    else:
        layers += [_dw_layer(s.depthwise, s.size), _conv_layer(s.project, s.size)]
    if s.residual:
        layers.append(Layer("add", *s.out_size, (s.cout,), (True,)))
    if s.upsample:
        layers.append(Layer("concat", *s.out_size, (s.cout, s.skip), (True, True)))
    return layers


def plan_layers(plan: NetworkPlan) -> list[Layer]:
    """The latency-relevant layers of a MobileNetV2 + FBNet plan, in network order."""
    layers = _encoder_layers(plan.encoder, plan.input_size)
    for stage in plan.decoder.stages:
        layers += _decoder_stage_layers(stage)
    size = plan.decoder.stages[-1].out_size
    layers.append(_conv_layer(plan.decoder.predict, size, (True, False)))
    layers.append(Layer("resize_bilinear", *size, (1,), (False,)))
    return layers


def network_layers(spec: dict, input_size: tuple[int, int]) -> list[Layer]:
    """The latency-relevant layers of ``spec`` at ``input_size`` (H, W), in network order."""
    check_prunable_spec(spec)
    return plan_layers(network_plan(spec, input_size))
