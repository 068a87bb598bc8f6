"""Prunable channel groups of a MobileNetV2 + FBNet spec, and where each one lives in the weights.

A spec's widths are *width variables*: the stem, each encoder stage's output width (shared by
every block of the stage through the residual adds and by the skip tap into the decoder),
each inverted-residual block's expanded width, and each decoder stage's output and expanded
width. Variables that must stay equal (a residual add between the stem and stage 0, a block
whose expanded width equals its input) are merged into one *channel group*; a group is what
NetAdapt shrinks, all members at once.

The widths, residual adds, expand convs, skip concatenations and parameter prefixes come from
the network plan (:func:`mobiledepth.arch.plan.network_plan`); this module only names them.
``tensor_layout`` says, for every weight tensor of the model, which width variable each
stretch of each axis belongs to (a decoder expand conv's input axis is ``[previous decoder
stage, skip tap]`` because of the concatenation); the surgery slices along it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from mobiledepth.arch.plan import Conv, NetworkPlan, mobilenetv2_table, network_plan
from mobiledepth.errors import UserError

Segments = list[tuple[str | None, int]]  # (width variable or None for a fixed stretch, size)
STEM = "enc.stem"


@dataclass
class ChannelGroup:
    """Width variables that shrink together, the layers they touch, and whether NetAdapt may cut them."""

    name: str
    width: int
    variables: list[str]
    members: list[str] = field(default_factory=list)
    prunable: bool = True


@dataclass(frozen=True)
class PlanVariables:
    """A network plan with its width variables: per encoder block (input, hidden, output) and per
    decoder stage (its input segments, hidden, output)."""

    plan: NetworkPlan
    encoder: list[tuple[str, str, str]]
    decoder_inputs: list[Segments]

    @staticmethod
    def decoder_hidden(index: int) -> str:
        return f"dec.stage{index}.hidden"

    @staticmethod
    def decoder_out(index: int) -> str:
        return f"dec.stage{index}.out"


def check_prunable_spec(spec: dict) -> None:
    """Only MobileNetV2 + FBNet specs have channel groups here."""
    arch = spec["architecture"]
    if arch["encoder"].get("type") != "mobilenetv2" or arch["decoder"].get("type") != "fbnet":
        raise UserError(f"spec '{spec.get('name')}' is {arch['encoder'].get('type')} + {arch['decoder'].get('type')}; "
                        "pruning supports MobileNetV2 + FBNet specs (e.g. mdepth-mnv2-fbnet, mdepth-tiny)")


def _stage_var(stage: int) -> str:
    return f"enc.stage{stage}"


def plan_variables(spec: dict, input_size: tuple[int, int] | None = None) -> PlanVariables:
    """The plan of a prunable spec and the width variable of every width in it."""
    check_prunable_spec(spec)
    plan = network_plan(spec, input_size)
    producer = {plan.encoder.stem.prefix.rsplit(".", 1)[0]: STEM}
    encoder, previous = [], STEM
    for block in plan.encoder.blocks:
        cout = _stage_var(block.stage)
        encoder.append((previous, f"enc.block{block.index}.hidden" if block.has_expand else previous, cout))
        producer[block.prefix] = previous = cout
    decoder_inputs = []
    for stage in plan.decoder.stages:
        decoder_inputs.append([(producer[source], width) for source, width in stage.inputs])
        producer[stage.prefix] = PlanVariables.decoder_out(stage.index)
    return PlanVariables(plan, encoder, decoder_inputs)


def width_variables(spec: dict) -> dict[str, int]:
    """Every width variable of the spec and its current value (in network order)."""
    pv = plan_variables(spec)
    widths = {STEM: pv.plan.encoder.stem.cout}
    for block, (_, hidden_var, cout_var) in zip(pv.plan.encoder.blocks, pv.encoder):
        widths[cout_var] = block.cout
        widths[hidden_var] = block.hidden
    for stage in pv.plan.decoder.stages:
        widths[pv.decoder_hidden(stage.index)] = stage.hidden
        widths[pv.decoder_out(stage.index)] = stage.cout
    return widths


def structure(spec: dict) -> tuple:
    """What must not change when widths change: residual adds and expand convs (they are
    decided by width equality in the model code, so a cut could silently add or drop one)."""
    plan = network_plan(spec)
    enc = tuple((b.has_expand, b.residual) for b in plan.encoder.blocks)
    dec = tuple(s.residual for s in plan.decoder.stages)
    return enc, dec


def apply_widths(spec: dict, widths: dict[str, int]) -> dict:
    """A new spec with the given width variables (missing ones keep their value).

    Expanded widths are written explicitly (``encoder.hidden``, ``decoder.stages[i].hidden``)
    so that a narrower input does not silently rescale them."""
    current = width_variables(spec)
    unknown = sorted(set(widths) - set(current))
    if unknown:
        raise UserError(f"unknown width variable(s) {', '.join(unknown)}; see 'mobiledepth lut show' / prune docs")
    merged = {**current, **{k: int(v) for k, v in widths.items()}}
    new = copy.deepcopy(spec)
    arch = new["architecture"]
    enc = arch["encoder"]
    pv = plan_variables(spec)
    enc["stem"] = merged[STEM]
    enc["stages"] = [[t, merged[_stage_var(i)], n, s] for i, (t, _, n, s) in enumerate(mobilenetv2_table(enc))]
    enc["hidden"] = [merged[hidden_var] for _, hidden_var, _ in pv.encoder]
    for stage, raw in zip(pv.plan.decoder.stages, arch["decoder"]["stages"]):
        raw["out"] = merged[pv.decoder_out(stage.index)]
        raw["hidden"] = merged[pv.decoder_hidden(stage.index)]
    return new


class _Union:
    def __init__(self, names):
        self.parent = {n: n for n in names}

    def find(self, name):
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _members(pv: PlanVariables, union: _Union, members: dict[str, list[str]]) -> set[str]:
    """Fill ``members`` (variable -> layers it touches), tie residual adds in ``union``; return the
    variables a grouped convolution reads or writes (they cannot be cut)."""
    members[STEM].append("stem conv")
    for b, (cin_var, hidden_var, cout_var) in zip(pv.plan.encoder.blocks, pv.encoder):
        if b.residual and cin_var != cout_var:
            union.union(cin_var, cout_var)
        members[hidden_var].append(f"block {b.index} expand/depthwise" if b.has_expand else f"block {b.index} depthwise")
        members[cout_var].append(f"block {b.index} project" + (" + residual add" if b.residual else ""))
    encoder = pv.plan.encoder
    for stage in sorted({encoder.tap_block(t).stage for t in range(len(encoder.tap_indices))}):
        members[_stage_var(stage)].append("skip tap into the decoder")
    frozen: set[str] = set()
    for s, inputs in zip(pv.plan.decoder.stages, pv.decoder_inputs):
        hidden_var, out_var = pv.decoder_hidden(s.index), pv.decoder_out(s.index)
        members[hidden_var].append(f"decoder stage {s.index + 1} expand/depthwise")
        members[out_var].append(f"decoder stage {s.index + 1} project" + (" + concat" if s.upsample else ""))
        if s.groups > 1:
            frozen.update([hidden_var, out_var, *(v for v, _ in inputs)])
    return frozen


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """The channel groups of a spec, in network order; tied variables are merged.

    A group is not prunable when a grouped (groups > 1) convolution reads or writes it."""
    widths = width_variables(spec)
    union = _Union(widths)
    members: dict[str, list[str]] = {name: [] for name in widths}
    frozen = _members(plan_variables(spec), union, members)
    groups: dict[str, ChannelGroup] = {}
    for name in widths:  # dict order = network order
        root = union.find(name)
        group = groups.setdefault(root, ChannelGroup(name=root, width=widths[root], variables=[]))
        group.variables.append(name)
        group.members.extend(members[name])
    for group in groups.values():
        group.prunable = not (set(group.variables) & frozen)
    return list(groups.values())


def group_widths(spec: dict) -> dict[str, int]:
    """Group name -> width."""
    return {g.name: g.width for g in channel_groups(spec)}


def set_group_widths(spec: dict, widths: dict[str, int]) -> dict:
    """A new spec with groups set to new widths (every tied variable follows)."""
    groups = {g.name: g for g in channel_groups(spec)}
    unknown = sorted(set(widths) - set(groups))
    if unknown:
        raise UserError(f"unknown channel group(s) {', '.join(unknown)}; known: {', '.join(groups)}")
    return apply_widths(spec, {v: int(w) for name, w in widths.items() for v in groups[name].variables})


# ----------------------------------------------------------------------------- weight layout
def _conv_layout(layout: dict, conv: Conv, out_seg: Segments, in_seg: Segments) -> None:
    """The weight (+ bias, + BatchNorm) tensors of one planned convolution."""
    layout[f"{conv.prefix}.weight"] = {"axes": {0: out_seg, 1: [(None, 1)] if conv.depthwise else in_seg},
                                       "producer": not conv.depthwise}
    if conv.bias:
        layout[f"{conv.prefix}.bias"] = {"axes": {0: out_seg}, "producer": False}
    if conv.bn:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{conv.bn}.{name}"] = {"axes": {0: out_seg}, "producer": False}


def tensor_layout(spec: dict) -> dict[str, dict]:
    """state_dict key -> {"axes": {axis: segments}, "producer": bool} for every sliced tensor.

    ``producer`` marks the (non-depthwise) convolutions whose output filters are ranked by
    L2 norm when their channels are cut."""
    pv = plan_variables(spec)
    plan = pv.plan
    layout: dict[str, dict] = {}
    _conv_layout(layout, plan.encoder.stem, [(STEM, plan.encoder.stem.cout)], [(None, 3)])
    for b, (cin_var, hidden_var, cout_var) in zip(plan.encoder.blocks, pv.encoder):
        cin, hidden, cout = [(cin_var, b.cin)], [(hidden_var, b.hidden)], [(cout_var, b.cout)]
        if b.expand is not None:
            _conv_layout(layout, b.expand, hidden, cin)
        _conv_layout(layout, b.depthwise, hidden, hidden)
        _conv_layout(layout, b.project, cout, hidden)
    outputs = []
    for s, inputs in zip(plan.decoder.stages, pv.decoder_inputs):
        hidden, out = [(pv.decoder_hidden(s.index), s.hidden)], [(pv.decoder_out(s.index), s.cout)]
        _conv_layout(layout, s.expand, hidden, inputs)
        _conv_layout(layout, s.depthwise, hidden, hidden)
        _conv_layout(layout, s.project, out, hidden)
        outputs.append(out)
    _conv_layout(layout, plan.decoder.predict, [(None, 1)], outputs[-1])
    for head, stage in zip(plan.heads, plan.head_stages):
        _conv_layout(layout, head, [(None, 1)], outputs[stage - 1])
    return layout
