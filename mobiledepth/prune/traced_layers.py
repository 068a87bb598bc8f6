"""The latency-relevant layers of ANY PyTorch model, read from one traced forward pass.

:func:`traced_layers` runs the model once (eval mode, no gradients) under a
``torch.overrides.TorchFunctionMode`` that sees every torch function with its real tensors, so
control flow, custom blocks and library models (MONAI's BasicUNet / FlexibleUNet) need no
symbolic tracing. Each call becomes a :class:`~mobiledepth.prune.layers.Layer` the way the
export chain lays the graph out in TFLite:

- ``conv`` / ``dwconv`` / ``deconv`` (transposed) with kernel, stride and input size; a
  BatchNorm on a convolution's output is folded into it, a ReLU / ReLU6 right after is fused
  (TFLite's fused activations); an explicit ``F.pad`` in front of a conv is part of the conv
  (the single-layer model pads like onnx2tf does), an all-zero pad is free.
- ``add`` / ``mul`` (two same-shape activations; ``sub`` / ``div`` time as them), ``scale``
  (an activation times a per-channel activation, squeeze-excitation), ``normalize`` (one or more
  elementwise ops with constants in a row, a BatchNorm that follows no conv), ``act`` (a
  stand-alone activation: leaky_relu, sigmoid, silu, tanh, hardswish, gelu, elu, relu, relu6).
- ``concat`` (one channel dim per input), ``maxpool`` / ``avgpool`` (kernel, stride),
  ``global_pool`` (adaptive average to 1x1 or a mean over H, W), ``resize_nearest`` /
  ``resize_bilinear`` (x2), ``depth_to_space`` (x2 ``pixel_shuffle`` or the export's DCR
  reshape); four convs concatenated into a depth-to-space are the export's ``phase_merge``.

Reshapes, permutes, dropout and shape queries are free (not timed). Any other torch function
the table cannot build a single-layer model for is named, all at once, in one error line:
the table refuses a model it would under-estimate rather than dropping layers silently.
A channel dim is *variable* (pruning changes it) unless its tensor carries the image input or
the depth output (through channel-preserving layers), as in :func:`network_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from mobiledepth.errors import UserError
from mobiledepth.prune.layers import Layer

FUSED_ACTS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "hardtanh": "relu6", "hardtanh_": "relu6"}
UNARY_ACTS = {"leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "silu", "silu_", "tanh", "tanh_", "hardswish",
              "hardswish_", "gelu", "elu", "elu_", "relu", "relu_", "relu6", "hardtanh", "hardtanh_"}
BINARY = {"add": "add", "__add__": "add", "__radd__": "add", "__iadd__": "add", "add_": "add",
          "sub": "add", "__sub__": "add", "__rsub__": "add", "__isub__": "add", "sub_": "add",
          "mul": "mul", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul", "mul_": "mul",
          "div": "mul", "__truediv__": "mul", "__itruediv__": "mul", "div_": "mul"}
ALIASES = {"dropout", "dropout2d", "contiguous", "clone", "detach", "float", "to", "alpha_dropout", "identity"}
FREE = {"dim", "size", "__get__", "shape", "numel", "rand", "__len__", "__getitem__", "__format__", "__bool__",
        "__index__", "__int__", "__float__", "item", "__eq__", "__ne__", "is_floating_point", "__setstate__"}
LAYOUT = {"view", "reshape", "permute", "transpose", "flatten", "squeeze", "unsqueeze"}


@dataclass
class _Node:
    """One layer while tracing: what :class:`Layer` needs, the tensors it reads, what it may still absorb."""

    op: str
    h: int
    w: int
    channels: list[int]
    inputs: list[int]          # ids of the traced tensors it reads, one per channel dim
    kernel: int = 1
    stride: int = 1
    act: str = "none"
    folds: bool = False        # a conv that may still absorb a BatchNorm / fused activation


@dataclass
class _Trace:
    """What the recorder learns: nodes, which node wrote each tensor, layout chains, unsupported calls."""

    input_id: int
    nodes: list[_Node] = field(default_factory=list)
    producer: dict[int, int] = field(default_factory=dict)   # tensor id -> node index
    alias: dict[int, int] = field(default_factory=dict)      # tensor id -> the tensor id it stands for
    layout_from: dict[int, object] = field(default_factory=dict)  # tensor id -> the 4-D tensor a reshape chain began at
    unpadded: dict[int, object] = field(default_factory=dict)  # padded tensor id -> the tensor before the pad
    unsupported: dict[str, int] = field(default_factory=dict)
    keep: list = field(default_factory=list)                 # outputs kept alive so ids stay unique

    def root(self, tensor) -> int:
        key = id(tensor)
        while key in self.alias:
            key = self.alias[key]
        return key

    def node_of(self, tensor) -> _Node | None:
        index = self.producer.get(self.root(tensor))
        return self.nodes[index] if index is not None else None

    def add(self, node: _Node, out) -> None:
        self.nodes.append(node)
        self.producer[id(out)] = len(self.nodes) - 1

    def same(self, out, tensor) -> None:
        """``out`` is ``tensor`` for the table (an alias, a folded BatchNorm, a fused activation)."""
        if id(out) != id(tensor):
            self.alias[id(out)] = self.root(tensor)


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _conv(trace: _Trace, name: str, args, kwargs, out) -> None:
    x, weight = args[0], args[1]
    stride = kwargs.get("stride", args[3] if len(args) > 3 else 1)
    groups = kwargs.get("groups", args[6] if len(args) > 6 and name == "conv2d" else
                        (args[7] if len(args) > 7 else 1))
    stride = stride[0] if isinstance(stride, (tuple, list)) else int(stride)
    source = trace.unpadded.get(id(x), x)
    cin, cout = int(x.shape[1]), int(out.shape[1])
    if name == "conv_transpose2d":
        op, channels = "deconv", [cin, cout]
    elif groups > 1 and groups == cin == cout:
        op, channels = "dwconv", [cin]
    else:  # a grouped (non-depthwise) conv times as a full one, as network_layers lists it
        op, channels = "conv", [cin, cout]
    trace.add(_Node(op, int(source.shape[2]), int(source.shape[3]), channels, [trace.root(source)] * len(channels),
                    kernel=int(weight.shape[-1]), stride=int(stride), folds=True), out)


def _act_name(name: str, args, kwargs) -> str:
    """The activation as the layer builder names it: ``relu6`` for hardtanh(0, 6), parameters after a colon."""
    if name.startswith("hardtanh"):
        low = float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0))
        high = float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0))
        return "relu6" if (low, high) == (0.0, 6.0) else f"hardtanh:{low:g}:{high:g}"
    if name.startswith("leaky"):
        return f"leaky_relu:{float(kwargs.get('negative_slope', args[1] if len(args) > 1 else 0.01)):g}"
    return name.rstrip("_")


def _activation(trace: _Trace, name: str, args, kwargs, out) -> None:
    """Fused into the conv it follows (ReLU, ReLU6: TFLite's fused activations), else a layer of its own."""
    x = args[0]
    node = trace.node_of(x)
    act = _act_name(name, args, kwargs)
    if act in FUSED_ACTS.values() and node is not None and node.folds and node.act == "none" and \
            node.op in ("conv", "dwconv", "deconv"):
        node.act = act
        node.folds = False
        trace.same(out, x)
        return
    trace.add(_Node("act", int(x.shape[2]), int(x.shape[3]), [int(x.shape[1])], [trace.root(x)], act=act), out)


def _batch_norm(trace: _Trace, args, out) -> None:
    x = args[0]
    node = trace.node_of(x)
    if node is not None and node.folds and node.act == "none" and node.op in ("conv", "dwconv", "deconv"):
        trace.same(out, x)  # folded into the convolution by the export
        return
    _normalize(trace, x, out)


def _normalize(trace: _Trace, x, out) -> None:
    node = trace.node_of(x)
    if node is not None and node.op == "normalize":
        trace.same(out, x)  # (x - mean) / std: one normalize layer
        return
    trace.add(_Node("normalize", int(x.shape[2]), int(x.shape[3]), [int(x.shape[1])], [trace.root(x)]), out)


def _binary(trace: _Trace, kind: str, args, out) -> None:
    a, b = args[0], args[1] if len(args) > 1 else None
    tensors = [t for t in (a, b) if _is_tensor(t) and t.dim() == 4 and trace.root(t) in _traced(trace)]
    if len(tensors) < 2:
        _normalize(trace, tensors[0] if tensors else a, out)
        return
    big, small = sorted(tensors, key=lambda t: -t.numel())
    h, w, c = int(out.shape[2]), int(out.shape[3]), int(out.shape[1])
    if small.shape[2:] != big.shape[2:]:
        trace.add(_Node("scale", h, w, [c], [trace.root(big)]), out)  # per-channel gate (squeeze-excitation)
    else:
        trace.add(_Node(kind, h, w, [c], [trace.root(big)]), out)


def _traced(trace: _Trace) -> set[int]:
    return set(trace.producer) | {trace.input_id}


def _concat(trace: _Trace, args, kwargs, out) -> None:
    tensors = list(args[0])
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if dim not in (1, -3) or out.dim() != 4:
        trace.unsupported[f"cat(dim={dim})"] = trace.unsupported.get(f"cat(dim={dim})", 0) + 1
        return
    trace.add(_Node("concat", int(out.shape[2]), int(out.shape[3]), [int(t.shape[1]) for t in tensors],
                    [trace.root(t) for t in tensors]), out)


def _depth_to_space(trace: _Trace, x, out) -> None:
    """x2 depth-to-space of ``x``; a 4-way concat feeding it is the export's phase merge."""
    node = trace.node_of(x)
    c = int(out.shape[1])
    if node is not None and node.op == "concat" and len(node.channels) == 4 and trace.nodes[-1] is node:
        node.op, node.channels, node.inputs = "phase_merge", [c], node.inputs[:1]
        trace.same(out, x)
        return
    trace.add(_Node("depth_to_space", int(x.shape[2]), int(x.shape[3]), [c], [trace.root(x)]), out)


def _layout(trace: _Trace, args, out) -> None:
    """A reshape chain: free, unless it starts and ends 4-D as a x2 depth-to-space (the export's DCR)."""
    x = args[0]
    start = trace.layout_from.get(id(x), x if x.dim() == 4 else None)
    if start is None:
        return
    if out.dim() == 4:
        n, c, h, w = start.shape
        if tuple(out.shape) == (n, c // 4, 2 * h, 2 * w):
            _depth_to_space(trace, start, out)
        elif tuple(out.shape) == tuple(start.shape):
            trace.same(out, start)  # a channel shuffle or a round trip: free
        return
    trace.layout_from[id(out)] = start


def _pool(trace: _Trace, name: str, args, kwargs, out) -> None:
    x = args[0]
    h, w, c = int(x.shape[2]), int(x.shape[3]), int(x.shape[1])
    if name in ("adaptive_avg_pool2d", "mean"):
        if tuple(out.shape[2:]) != (1, 1):
            trace.unsupported[f"{name} to {tuple(out.shape[2:])}"] = 1
            return
        trace.add(_Node("global_pool", h, w, [c], [trace.root(x)]), out)
        return
    kernel = kwargs.get("kernel_size", args[1] if len(args) > 1 else 1)
    stride = kwargs.get("stride", args[2] if len(args) > 2 else None) or kernel
    first = lambda v: int(v[0] if isinstance(v, (tuple, list)) else v)  # noqa: E731 - square pools
    trace.add(_Node("maxpool" if name.startswith("max") else "avgpool", h, w, [c], [trace.root(x)],
                    kernel=first(kernel), stride=first(stride)), out)


def _resize(trace: _Trace, args, kwargs, out) -> None:
    x = args[0]
    mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
    if tuple(out.shape[2:]) != (2 * x.shape[2], 2 * x.shape[3]) or mode not in ("nearest", "bilinear"):
        trace.unsupported[f"interpolate({mode}, {tuple(x.shape[2:])} -> {tuple(out.shape[2:])})"] = 1
        return
    trace.add(_Node(f"resize_{mode}", int(x.shape[2]), int(x.shape[3]), [int(x.shape[1])], [trace.root(x)]), out)


def _pad(trace: _Trace, args, kwargs, out) -> None:
    pads = kwargs.get("pad", args[1] if len(args) > 1 else ())
    if not any(pads):
        trace.same(out, args[0])  # a zero pad (a UNet's size fix at even sizes) is free
    else:
        trace.unpadded[id(out)] = args[0]  # timed as part of the conv it feeds


def _record(trace: _Trace, func, args, kwargs, out) -> None:
    """Turn one torch call into a node, an alias, or an unsupported-op count."""
    name = getattr(func, "__name__", str(func))
    if name in FREE or not _is_tensor(out):
        return
    trace.keep.append(out)
    if name in ("conv2d", "conv_transpose2d"):
        _conv(trace, name, args, kwargs, out)
    elif name == "batch_norm":
        _batch_norm(trace, args, out)
    elif name in UNARY_ACTS:
        _activation(trace, name, args, kwargs, out)
    elif name in BINARY:
        _binary(trace, BINARY[name], args, out)
    elif name == "cat":
        _concat(trace, args, kwargs, out)
    elif name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d") or (
            name == "mean" and out.dim() == 4 and out.shape[2:] == (1, 1)):
        _pool(trace, name, args, kwargs, out)
    elif name == "interpolate":
        _resize(trace, args, kwargs, out)
    elif name == "pixel_shuffle" and (kwargs.get("upscale_factor", args[1] if len(args) > 1 else 0)) == 2:
        _depth_to_space(trace, args[0], out)
    elif name == "pad":
        _pad(trace, args, kwargs, out)
    elif name in ALIASES:
        trace.same(out, args[0])
    elif name in LAYOUT:
        _layout(trace, args, out)
    else:
        trace.unsupported[name] = trace.unsupported.get(name, 0) + 1


def _run_traced(model, input_size: tuple[int, int]):
    """One eval-mode forward of ``model`` on a (1, 3, H, W) image, recorded; returns (trace, depth output)."""
    import torch
    from torch.overrides import TorchFunctionMode

    from mobiledepth.arch.resolve import depth_of

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            _record(trace, func, args, kwargs, out)
            return out

    x = torch.rand(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
    trace = _Trace(input_id=id(x))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Recorder():
            out = depth_of(model(x))
    except Exception as exc:
        raise UserError(f"the model fails on a (1, 3, {input_size[0]}, {input_size[1]}) image while tracing "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                        "check --input-size and the model contract (docs/export.md)") from None
    finally:
        model.train(was_training)
    return trace, out


def _fixed_tensors(trace: _Trace, output_id: int) -> set[int]:
    """Tensors whose channel count pruning cannot change: the image input and the depth output, each
    through the channel-preserving single-input layers next to it."""
    preserving = {"normalize", "act", "resize_nearest", "resize_bilinear", "maxpool", "avgpool"}
    fixed = {trace.input_id, output_id}
    for index, node in enumerate(trace.nodes):  # forward from the input
        if node.op in preserving and node.inputs[0] in fixed:
            fixed |= {key for key, i in trace.producer.items() if i == index}
    for index in reversed(range(len(trace.nodes))):  # backward from the output
        node = trace.nodes[index]
        if node.op in preserving and any(i == index for key, i in trace.producer.items() if key in fixed):
            fixed.add(node.inputs[0])
    return fixed


def _layer(node: _Node, index: int, trace: _Trace, fixed: set[int]) -> Layer:
    outputs = {key for key, i in trace.producer.items() if i == index}
    variable = [node.inputs[d] not in fixed for d in range(len(node.channels))]
    if node.op in ("conv", "deconv"):
        variable[1] = not outputs & fixed
    elif node.op not in ("concat",) and len(variable) == 1:
        variable[0] = variable[0] and not outputs & fixed
    return Layer(node.op, node.h, node.w, tuple(node.channels), tuple(variable), node.kernel, node.stride, node.act)


def traced_layers(model, input_size: tuple[int, int]) -> list[Layer]:
    """The latency-relevant layers of any ``nn.Module`` meeting the model contract, at ``input_size`` (H, W),
    in call order; one UserError naming every torch function the table cannot time."""
    trace, out = _run_traced(model, tuple(int(v) for v in input_size))
    if trace.unsupported:
        names = ", ".join(f"{name} x{count}" for name, count in sorted(trace.unsupported.items()))
        raise UserError(f"the lookup table cannot time these layers of the model: {names}; "
                        "replace them with supported ones or time the model end to end (docs/prune.md)")
    fixed = _fixed_tensors(trace, trace.root(out))
    return [_layer(node, index, trace, fixed) for index, node in enumerate(trace.nodes)]


@dataclass(frozen=True)
class WidthMap:
    """How one channel group's width moves the channel counts of a traced layer list: every channel dim of every
    layer changes by ``slope × (change of the group's width)`` (0 for dims the group does not reach, 1 for a conv's
    output, 2 for a concat fed by the group twice, ...). Channel counts are affine in the group widths, so the
    slopes hold at any widths of the other groups: one map serves every checkpoint of a model."""

    slopes: tuple[tuple[Fraction, ...], ...]


def width_map(base: list[Layer], probe: list[Layer], width: int, probe_width: int) -> WidthMap | None:
    """The :class:`WidthMap` read off two traces of one model, uncut (``base``, the group at ``width``) and with
    one group cut to ``probe_width`` (``probe``); None when the cut changed anything but channel counts (a layer
    more or less, another op, size or fusion), so that substitution would not be exact."""
    if len(base) != len(probe) or probe_width == width:
        return None
    if any(a.family != b.family or a.variable != b.variable for a, b in zip(base, probe)):
        return None
    step = probe_width - width
    return WidthMap(tuple(tuple(Fraction(cb - ca, step) for ca, cb in zip(a.channels, b.channels))
                          for a, b in zip(base, probe)))


def substitute(base: list[Layer], maps: dict[str, WidthMap], changes: dict[str, int]) -> list[Layer] | None:
    """``base`` (a traced layer list) with each group of ``changes`` (name -> new width minus the width in ``base``)
    moved by its :class:`WidthMap`; None when a count would not be a whole positive number (trace instead)."""
    out = []
    for index, layer in enumerate(base):
        channels = []
        for dim, count in enumerate(layer.channels):
            value = count + sum(maps[name].slopes[index][dim] * change for name, change in changes.items())
            if value.denominator != 1 or value < 1:
                return None
            channels.append(int(value))
        out.append(layer.with_channels(tuple(channels)))
    return out
