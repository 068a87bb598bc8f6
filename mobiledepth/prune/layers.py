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
from mobiledepth.prune.groups import _block_vars, _decoder_stages, check_prunable_spec

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


def network_layers(spec: dict, input_size: tuple[int, int]) -> list[Layer]:
    """The latency-relevant layers of ``spec`` at ``input_size`` (H, W), in network order."""
    check_prunable_spec(spec)
    h, w = int(input_size[0]), int(input_size[1])
    stem = int(spec["architecture"]["encoder"].get("stem", 32))
    layers = [Layer("normalize", h, w, (3,), (False,)),
              Layer("conv", h, w, (3, stem), (False, True), kernel=3, stride=2, act="relu6")]
    h, w = h // 2, w // 2
    for b in _block_vars(spec):
        if b["has_expand"]:
            layers.append(Layer("conv", h, w, (b["cin"], b["hidden"]), (True, True), act="relu6"))
        layers.append(Layer("dwconv", h, w, (b["hidden"],), (True,), kernel=3, stride=b["stride"], act="relu6"))
        h, w = h // b["stride"], w // b["stride"]
        layers.append(Layer("conv", h, w, (b["hidden"], b["cout"]), (True, True)))
        if b["residual"]:
            layers.append(Layer("add", h, w, (b["cout"],), (True,)))
    stages = _decoder_stages(spec)
    for s in stages:
        layers.append(Layer("conv", h, w, (s["cin"], s["hidden"]), (True, True), act="relu"))
        if s["upsample"]:  # the export's phase-split form (mobiledepth.export.rewrites)
            phase_kernel = 2 * phase_radius(s["kernel"]) + 1
            layers += [Layer("dwconv", h, w, (s["hidden"],), (True,), kernel=phase_kernel, act="relu")] * len(PHASES)
            layers += [Layer("conv", h, w, (s["hidden"], s["out"]), (True, True))] * len(PHASES)
            layers.append(Layer("phase_merge", h, w, (s["out"],), (True,)))
            h, w = h * 2, w * 2
        else:
            layers.append(Layer("dwconv", h, w, (s["hidden"],), (True,), kernel=s["kernel"], act="relu"))
            layers.append(Layer("conv", h, w, (s["hidden"], s["out"]), (True, True)))
        if s["residual"]:
            layers.append(Layer("add", h, w, (s["out"],), (True,)))
        if s["upsample"]:
            skip = s["index"] + 1 < len(stages) and stages[s["index"] + 1]["cin_segments"][1][1]
            layers.append(Layer("concat", h, w, (s["out"], int(skip)), (True, True)))
    layers.append(Layer("conv", h, w, (stages[-1]["out"], 1), (True, False)))
    layers.append(Layer("resize_bilinear", h, w, (1,), (False,)))
    return layers
