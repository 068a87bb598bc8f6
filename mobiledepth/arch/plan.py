"""The network plan: what a spec builds, said once.

:func:`network_plan` reads a spec's ``architecture`` section and returns a frozen plan: the
encoder stem and every block (input / hidden / output widths, stride, kernel, residual add,
expand conv, parameter prefix, input resolution), the skip taps, every decoder stage (its
concatenated inputs, the tap it fuses, upsampling) and the final layers. The nn.Modules of
:mod:`mobiledepth.arch` are built from it, and pruning (channel groups, lookup-table layers,
surgery) reads it, so the width rules live here and nowhere else. No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from mobiledepth.errors import UserError

DEFAULT_INPUT_SIZE = (256, 256)  # (H, W) when neither the caller nor the spec gives one
DEFAULT_STEM = 32
# torchvision's MobileNetV2 table: expansion t, output channels c, repeats n, first stride s.
MOBILENETV2_STAGES = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                      [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
# MobileNet v1 (FastDepth): (output channels, stride) per depthwise-separable layer.
MOBILENETV1_LAYERS = [[64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1],
                      [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1]]
NNCONV5_WIDTHS = (512, 256, 128, 64, 32)
NNCONV5_SKIPS = {1: 2, 2: 1, 3: 0}  # NNConv5 block index -> encoder tap added after its upsample
FBNET_STAGES = 5                     # the first FBNET_STAGES - 1 stages upsample x2 and fuse a tap
UPSAMPLE_STRIDE = -2                 # IRFBlock's stride for "nearest x2 upsample before the depthwise"

Size = tuple[int, int]


def has_expand(cin: int, hidden: int) -> bool:
    """An inverted-residual block has a 1x1 expand conv unless its hidden width equals its input."""
    return hidden != cin


def has_residual(cin: int, cout: int, stride: int) -> bool:
    """A block adds its input to its output when the shapes match."""
    return stride == 1 and cin == cout


def spec_input_size(spec: dict, input_size: Sequence[int] | None = None) -> Size:
    """The (H, W) a spec runs at: ``input_size`` if given, else the spec's, else DEFAULT_INPUT_SIZE."""
    h, w = input_size or spec.get("input_size") or DEFAULT_INPUT_SIZE
    return int(h), int(w)


def _scaled(size: Size, stride: int) -> Size:
    """The output size of a layer with ``stride`` (UPSAMPLE_STRIDE doubles)."""
    if stride == UPSAMPLE_STRIDE:
        return size[0] * 2, size[1] * 2
    return size[0] // stride, size[1] // stride


@dataclass(frozen=True)
class Conv:
    """One convolution: its weight's prefix in the state_dict, shape, and BatchNorm / bias / activation."""

    prefix: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    depthwise: bool = False
    bn: str | None = None     # state_dict prefix of the BatchNorm after it
    bias: bool = False
    act: str = "none"         # "relu6", "relu" or "none"

    @property
    def params(self) -> int:
        """Trainable parameters (weight, bias, BatchNorm affine)."""
        weight = self.cout * (self.cin // self.groups) * self.kernel * self.kernel
        return weight + (self.cout if self.bias else 0) + (2 * self.cout if self.bn else 0)


def conv_bn(prefix: str, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: str = "none", depthwise: bool = False) -> Conv:
    """A ConvBNReLU at ``prefix`` (conv ``.0``, BatchNorm ``.1``); a depthwise one has ``groups == cin``."""
    return Conv(f"{prefix}.0", cin, cout, kernel, stride, cin if depthwise else groups, depthwise,
                bn=f"{prefix}.1", act=act)


class _StridedBlock:
    """What every block with ``cin``, ``cout``, ``stride`` and an input ``size`` derives the same way."""

    @property
    def residual(self) -> bool:
        return has_residual(self.cin, self.cout, self.stride)

    @property
    def out_size(self) -> Size:
        return _scaled(self.size, self.stride)


@dataclass(frozen=True)
class InvertedResidualPlan(_StridedBlock):
    """A MobileNetV2 block: 1x1 expand (when hidden != cin) → 3x3 depthwise → 1x1 project."""

    index: int
    prefix: str
    stage: int
    cin: int
    hidden: int
    cout: int
    stride: int
    expansion: int
    size: Size          # input (H, W)
    kernel: int = 3

    @property
    def has_expand(self) -> bool:
        return has_expand(self.cin, self.hidden)

    @property
    def expand(self) -> Conv | None:
        return conv_bn(f"{self.prefix}.conv.0", self.cin, self.hidden, act="relu6") if self.has_expand else None

    @property
    def depthwise(self) -> Conv:
        j = int(self.has_expand)
        return conv_bn(f"{self.prefix}.conv.{j}", self.hidden, self.hidden, self.kernel, self.stride,
                       act="relu6", depthwise=True)

    @property
    def project(self) -> Conv:
        j = int(self.has_expand) + 1
        return Conv(f"{self.prefix}.conv.{j}", self.hidden, self.cout, bn=f"{self.prefix}.conv.{j + 1}")

    @property
    def convs(self) -> tuple[Conv, ...]:
        return tuple(c for c in (self.expand, self.depthwise, self.project) if c is not None)


@dataclass(frozen=True)
class SeparablePlan:
    """A depthwise-separable unit (MobileNet v1 layer, NNConv5 block): dw KxK → pw 1x1, both ReLU;
    in NNConv5, then a nearest x2 upsample and the addition of encoder tap ``skip_tap``."""

    index: int
    prefix: str
    cin: int
    cout: int
    kernel: int
    stride: int
    size: Size
    upsample: bool = False
    skip_tap: int | None = None

    @property
    def out_size(self) -> Size:
        size = _scaled(self.size, self.stride)
        return _scaled(size, UPSAMPLE_STRIDE) if self.upsample else size

    @property
    def convs(self) -> tuple[Conv, ...]:
        return (conv_bn(f"{self.prefix}.0", self.cin, self.cin, self.kernel, self.stride, act="relu", depthwise=True),
                conv_bn(f"{self.prefix}.1", self.cin, self.cout, act="relu"))


@dataclass(frozen=True)
class IRFPlan(_StridedBlock):
    """An FBNet decoder stage: 1x1 expand → (nearest x2) → KxK depthwise → 1x1 project, then the
    concatenation of encoder tap ``skip_tap`` (``skip`` channels) when it upsamples.

    ``inputs`` are the concatenated parts of its input: (producer prefix, channels)."""

    index: int
    prefix: str
    inputs: tuple[tuple[str, int], ...]
    hidden: int
    cout: int
    kernel: int
    groups: int
    upsample: bool
    size: Size
    skip_tap: int | None = None
    skip: int = 0

    @property
    def cin(self) -> int:
        return sum(width for _, width in self.inputs)

    @property
    def stride(self) -> int:
        return UPSAMPLE_STRIDE if self.upsample else 1

    @property
    def expand(self) -> Conv:
        return conv_bn(f"{self.prefix}.expand", self.cin, self.hidden, groups=self.groups, act="relu")

    @property
    def depthwise(self) -> Conv:
        return conv_bn(f"{self.prefix}.depthwise", self.hidden, self.hidden, self.kernel, act="relu", depthwise=True)

    @property
    def project(self) -> Conv:
        return conv_bn(f"{self.prefix}.project", self.hidden, self.cout, groups=self.groups)

    @property
    def convs(self) -> tuple[Conv, ...]:
        return self.expand, self.depthwise, self.project


EncoderBlock = Union[InvertedResidualPlan, SeparablePlan]
DecoderStage = Union[IRFPlan, SeparablePlan]


@dataclass(frozen=True)
class EncoderPlan:
    """Stem conv + blocks (``features[1:]``); taps: ``features`` indices whose outputs feed the decoder."""

    kind: str
    stem: Conv
    blocks: tuple[EncoderBlock, ...]
    tap_indices: tuple[int, ...]
    tap_channels: tuple[int, ...]

    def tap_block(self, tap: int) -> EncoderBlock | None:
        """The block whose output is tap ``tap`` (None for the stem)."""
        index = self.tap_indices[tap]
        return self.blocks[index - 1] if index > 0 else None

    def tap_prefix(self, tap: int) -> str:
        """The module prefix producing tap ``tap``."""
        block = self.tap_block(tap)
        return block.prefix if block is not None else self.stem.prefix.rsplit(".", 1)[0]


@dataclass(frozen=True)
class DecoderPlan:
    """Decoder stages deep to shallow, the 1-channel prediction conv and the final upsampling."""

    kind: str
    stages: tuple[DecoderStage, ...]
    predict: Conv
    final_upsample: str | None

    @property
    def stage_channels(self) -> list[int]:
        return [stage.cout for stage in self.stages]


@dataclass(frozen=True)
class NetworkPlan:
    """Everything a spec builds; see :func:`network_plan`."""

    input_size: Size
    encoder: EncoderPlan
    decoder: DecoderPlan
    heads: tuple[Conv, ...]
    head_stages: tuple[int, ...]

    def convs(self, include_heads: bool = False) -> list[Conv]:
        """Every convolution, in network order (heads last)."""
        convs = [self.encoder.stem, *(c for b in self.encoder.blocks for c in b.convs),
                 *(c for s in self.decoder.stages for c in s.convs), self.decoder.predict]
        return convs + list(self.heads) if include_heads else convs

    def parameters(self, include_heads: bool = False) -> int:
        """Trainable parameters, as :func:`mobiledepth.arch.count_parameters` counts them."""
        return sum(conv.params for conv in self.convs(include_heads))


# ----------------------------------------------------------------------------- encoders
def _tap_positions(strides: Sequence[int]) -> list[int]:
    """Positions whose output is a skip tap: the last layer at each resolution."""
    return [i for i in range(len(strides)) if i == len(strides) - 1 or strides[i + 1] != 1]


def mobilenetv2_table(enc: dict) -> list[list[int]]:
    """A MobileNetV2 encoder spec's stage table ``[t, c, n, s]`` (torchvision's when not given)."""
    return enc.get("stages") or MOBILENETV2_STAGES


def _mobilenetv2_rows(enc: dict) -> list[dict]:
    """One row per block (cin, cout, stride, hidden, expansion, stage); ``encoder.hidden`` overrides
    the expanded widths (a pruned spec); blocks with expansion 1 have it tied to their input."""
    rows: list[dict] = []
    cin = enc.get("stem", DEFAULT_STEM)
    for stage, (t, c, n, s) in enumerate(mobilenetv2_table(enc)):
        for i in range(n):
            rows.append({"cin": cin, "cout": c, "stride": s if i == 0 else 1, "hidden": cin * t, "expansion": t,
                         "stage": stage})
            cin = c
    hidden = enc.get("hidden")
    if hidden is not None:
        if len(hidden) != len(rows):
            raise ValueError(f"encoder.hidden has {len(hidden)} widths but the table has {len(rows)} blocks")
        for row, width in zip(rows, hidden):
            if row["expansion"] == 1 and width != row["cin"]:
                raise ValueError(f"block with expansion 1 has hidden width tied to its input ({row['cin']}), got {width}")
            row["hidden"] = int(width)
    return rows


def _mobilenetv2_plan(enc: dict, size: Size) -> EncoderPlan:
    """MobileNetV2 ``features[0:18]`` (no 1280-channel head)."""
    stem_width = enc.get("stem", DEFAULT_STEM)
    stem = conv_bn("encoder.features.0", 3, stem_width, kernel=3, stride=2, act="relu6")
    size = _scaled(size, 2)
    blocks = []
    for index, row in enumerate(_mobilenetv2_rows(enc)):
        blocks.append(InvertedResidualPlan(index=index, prefix=f"encoder.features.{index + 1}", size=size, **row))
        size = blocks[-1].out_size
    taps = [i + 1 for i in _tap_positions([b.stride for b in blocks])]
    return EncoderPlan("mobilenetv2", stem, tuple(blocks), tuple(taps), tuple(blocks[i - 1].cout for i in taps))


def _mobilenetv1_plan(enc: dict, size: Size) -> EncoderPlan:
    """MobileNet v1 (FastDepth's encoder): stem + depthwise-separable layers."""
    stem_width = enc.get("stem", DEFAULT_STEM)
    stem = conv_bn("encoder.features.0", 3, stem_width, kernel=3, stride=2, act="relu")
    size, cin, blocks = _scaled(size, 2), stem_width, []
    for index, (cout, stride) in enumerate(enc.get("layers") or MOBILENETV1_LAYERS):
        blocks.append(SeparablePlan(index, f"encoder.features.{index + 1}", cin, cout, 3, stride, size))
        size, cin = blocks[-1].out_size, cout
    taps = _tap_positions([stem.stride, *(b.stride for b in blocks)])
    channels = [stem_width, *(b.cout for b in blocks)]
    return EncoderPlan("mobilenetv1", stem, tuple(blocks), tuple(taps), tuple(channels[i] for i in taps))


# ----------------------------------------------------------------------------- decoders
def _fbnet_stage(index: int, raw: dict, inputs: tuple, size: Size, encoder: EncoderPlan) -> IRFPlan:
    """Decoder stage ``index``: the hidden-width rule (explicit, else round(cin x expansion)) and
    the upsample + tap rule (stages before the last upsample and fuse the next-shallower tap)."""
    cin = sum(width for _, width in inputs)
    upsample = index < FBNET_STAGES - 1
    skip_tap = len(encoder.tap_indices) - 2 - index if upsample else None
    return IRFPlan(index=index, prefix=f"decoder.stages.{index}", inputs=inputs,
                   hidden=int(raw.get("hidden") or round(cin * raw.get("expansion", 6))), cout=int(raw["out"]),
                   kernel=int(raw.get("kernel", 3)), groups=int(raw.get("groups", 1)), upsample=upsample, size=size,
                   skip_tap=skip_tap, skip=encoder.tap_channels[skip_tap] if upsample else 0)


def _fbnet_plan(dec: dict, encoder: EncoderPlan, size: Size) -> DecoderPlan:
    """FBNet U-Net decoder: five IRF stages deep to shallow; 1x1 predict; plain x2 upsampling."""
    raw_stages = dec["stages"]
    if len(encoder.tap_indices) != 5 or len(raw_stages) != FBNET_STAGES:
        raise ValueError("FBNetDecoder needs 5 encoder taps and 5 stage specs")
    inputs: tuple = ((encoder.tap_prefix(-1), encoder.tap_channels[-1]),)
    stages = []
    for index, raw in enumerate(raw_stages):
        stage = _fbnet_stage(index, raw, inputs, size, encoder)
        stages.append(stage)
        inputs = ((stage.prefix, stage.cout),)
        if stage.upsample:
            inputs += ((encoder.tap_prefix(stage.skip_tap), stage.skip),)
        size = stage.out_size
    predict = Conv("decoder.predict", stages[-1].cout, 1, bias=True)
    return DecoderPlan("fbnet", tuple(stages), predict, dec.get("final_upsample", "bilinear"))


def _nnconv5_plan(dec: dict, encoder: EncoderPlan, size: Size) -> DecoderPlan:
    """FastDepth's NNConv5: five [dw KxK → pw 1x1 → nearest x2] blocks with additive skips."""
    widths, kernel = dec.get("widths", NNCONV5_WIDTHS), dec.get("kernel", 5)
    cin, stages = encoder.tap_channels[-1], []
    for index, width in enumerate(widths):
        tap = NNCONV5_SKIPS.get(index)
        if tap is not None and width != encoder.tap_channels[tap]:
            raise ValueError(f"NNConv5 additive skip needs width {encoder.tap_channels[tap]} after block {index + 1}, "
                             f"got {width}")
        stages.append(SeparablePlan(index, f"decoder.blocks.{index}", cin, width, kernel, 1, size, True, tap))
        size, cin = stages[-1].out_size, width
    return DecoderPlan("nnconv5", tuple(stages), Conv("decoder.predict", widths[-1], 1, bias=True), None)


_ENCODERS = {"mobilenetv2": _mobilenetv2_plan, "mobilenetv1": _mobilenetv1_plan}
_DECODERS = {"fbnet": _fbnet_plan, "nnconv5": _nnconv5_plan}


def network_plan(spec: dict, input_size: Sequence[int] | None = None) -> NetworkPlan:
    """The plan of a (validated) spec at ``input_size`` (default: :func:`spec_input_size`).

    Raises UserError naming the spec when its widths do not fit together."""
    arch = spec["architecture"]
    try:
        size = spec_input_size(spec, input_size)
        encoder = _ENCODERS[arch["encoder"]["type"]](arch["encoder"], size)
        decoder = _DECODERS[arch["decoder"]["type"]](arch["decoder"], encoder, encoder.blocks[-1].out_size)
        head_stages = tuple(int(s) for s in arch.get("heads") or [])
        heads = tuple(Conv(f"heads.{k}", decoder.stages[s - 1].cout, 1, bias=True) for k, s in enumerate(head_stages))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise UserError(f"spec '{spec.get('name')}' is inconsistent: {exc}") from None
    return NetworkPlan(size, encoder, decoder, heads, head_stages)
