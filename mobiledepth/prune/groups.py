"""Prunable channel groups of a MobileNetV2 + FBNet spec, and where each one lives in the weights.

A spec's widths are *width variables*: the stem, each encoder stage's output width (shared by
every block of the stage through the residual adds and by the skip tap into the decoder),
each inverted-residual block's expanded width, and each decoder stage's output and expanded
width. Variables that must stay equal (a residual add between the stem and stage 0, a block
whose expanded width equals its input) are merged into one *channel group*; a group is what
NetAdapt shrinks, all members at once.

``tensor_layout`` says, for every weight tensor of the model, which width variable each
stretch of each axis belongs to (a decoder expand conv's input axis is ``[previous decoder
stage, skip tap]`` because of the concatenation); the surgery slices along it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from mobiledepth.errors import UserError

Segments = list[tuple[str | None, int]]  # (width variable or None for a fixed stretch, size)


@dataclass
class ChannelGroup:
    """Width variables that shrink together, the layers they touch, and whether NetAdapt may cut them."""

    name: str
    width: int
    variables: list[str]
    members: list[str] = field(default_factory=list)
    prunable: bool = True


def check_prunable_spec(spec: dict) -> None:
    """Only MobileNetV2 + FBNet specs have channel groups here."""
    arch = spec["architecture"]
    if arch["encoder"].get("type") != "mobilenetv2" or arch["decoder"].get("type") != "fbnet":
        raise UserError(f"spec '{spec.get('name')}' is {arch['encoder'].get('type')} + {arch['decoder'].get('type')}; "
                        "pruning supports MobileNetV2 + FBNet specs (e.g. mdepth-mnv2-fbnet, mdepth-tiny)")


def _blocks(spec: dict) -> list[dict]:
    from mobiledepth.arch.encoders import MOBILENETV2_STAGES, mobilenetv2_blocks

    enc = spec["architecture"]["encoder"]
    return mobilenetv2_blocks(enc.get("stem", 32), enc.get("stages") or MOBILENETV2_STAGES, enc.get("hidden"))


def _tap_stages(spec: dict) -> list[int]:
    from mobiledepth.arch.encoders import MOBILENETV2_STAGES, tap_stage_indices

    stages = spec["architecture"]["encoder"].get("stages") or MOBILENETV2_STAGES
    return tap_stage_indices([s for _, _, _, s in stages])


def _stage_var(stage: int) -> str:
    return f"enc.stage{stage}"


def _block_vars(spec: dict) -> list[dict]:
    """Per encoder block: the variables of its input, expanded and output widths, and its structure."""
    blocks = _blocks(spec)
    out = []
    for index, block in enumerate(blocks):
        cin_var = "enc.stem" if index == 0 else _stage_var(blocks[index - 1]["stage"])
        has_expand = block["hidden"] != block["cin"]
        out.append({
            **block,
            "index": index,
            "cin_var": cin_var,
            "hidden_var": f"enc.block{index}.hidden" if has_expand else cin_var,
            "cout_var": _stage_var(block["stage"]),
            "has_expand": has_expand,
            "residual": block["stride"] == 1 and block["cin"] == block["cout"],
        })
    return out


def _decoder_stages(spec: dict) -> list[dict]:
    """Per decoder stage: input segments (after the concat), hidden/out variables and widths."""
    taps = _tap_stages(spec)
    blocks = _blocks(spec)
    tap_width = {s: next(b["cout"] for b in blocks if b["stage"] == s) for s in taps}
    skips = list(reversed(taps[:-1]))
    stages = spec["architecture"]["decoder"]["stages"]
    cin_segments: Segments = [(_stage_var(taps[-1]), tap_width[taps[-1]])]
    out = []
    for index, stage in enumerate(stages):
        cin = sum(size for _, size in cin_segments)
        hidden = int(stage.get("hidden") or round(cin * stage.get("expansion", 6)))
        upsample = index < 4
        out.append({
            "index": index, "cin_segments": list(cin_segments), "cin": cin, "hidden": hidden,
            "out": int(stage["out"]), "kernel": int(stage.get("kernel", 3)), "groups": int(stage.get("groups", 1)),
            "upsample": upsample, "hidden_var": f"dec.stage{index}.hidden", "out_var": f"dec.stage{index}.out",
            "residual": (not upsample) and cin == int(stage["out"]),
        })
        cin_segments = [(f"dec.stage{index}.out", int(stage["out"]))]
        if upsample:
            cin_segments.append((_stage_var(skips[index]), tap_width[skips[index]]))
    return out


def width_variables(spec: dict) -> dict[str, int]:
    """Every width variable of the spec and its current value."""
    check_prunable_spec(spec)
    enc = spec["architecture"]["encoder"]
    widths = {"enc.stem": int(enc.get("stem", 32))}
    for block in _block_vars(spec):
        widths[block["cout_var"]] = block["cout"]
        widths[block["hidden_var"]] = block["hidden"]
    for stage in _decoder_stages(spec):
        widths[stage["hidden_var"]] = stage["hidden"]
        widths[stage["out_var"]] = stage["out"]
    return widths


def structure(spec: dict) -> tuple:
    """What must not change when widths change: residual adds and expand convs (they are
    decided by width equality in the model code, so a cut could silently add or drop one)."""
    enc = tuple((b["has_expand"], b["residual"]) for b in _block_vars(spec))
    dec = tuple(s["residual"] for s in _decoder_stages(spec))
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
    blocks = _block_vars(spec)
    enc["stem"] = merged["enc.stem"]
    enc["stages"] = [[t, merged[_stage_var(i)], n, s] for i, (t, _, n, s) in enumerate(enc.get("stages") or _default_stages())]
    enc["hidden"] = [merged[b["hidden_var"]] if b["has_expand"] else
                     (merged["enc.stem"] if b["index"] == 0 else merged[_stage_var(blocks[b["index"] - 1]["stage"])])
                     for b in blocks]
    for stage, raw in zip(_decoder_stages(spec), arch["decoder"]["stages"]):
        raw["out"] = merged[stage["out_var"]]
        raw["hidden"] = merged[stage["hidden_var"]]
    return new


def _default_stages():
    from mobiledepth.arch.encoders import MOBILENETV2_STAGES

    return MOBILENETV2_STAGES


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


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """The channel groups of a spec, in network order; tied variables are merged.

    A group is not prunable when a grouped (groups > 1) convolution reads or writes it."""
    widths = width_variables(spec)
    union = _Union(widths)
    members: dict[str, list[str]] = {name: [] for name in widths}
    members["enc.stem"].append("stem conv")
    taps = set(_tap_stages(spec))
    for b in _block_vars(spec):
        i = b["index"]
        if b["residual"] and b["cin_var"] != b["cout_var"]:
            union.union(b["cin_var"], b["cout_var"])
        if b["has_expand"]:
            members[b["hidden_var"]].append(f"block {i} expand/depthwise")
        else:
            members[b["cin_var"]].append(f"block {i} depthwise")
        members[b["cout_var"]].append(f"block {i} project" + (" + residual add" if b["residual"] else ""))
    for stage in taps:
        members[_stage_var(stage)].append("skip tap into the decoder")
    frozen: set[str] = set()
    for s in _decoder_stages(spec):
        members[s["hidden_var"]].append(f"decoder stage {s['index'] + 1} expand/depthwise")
        members[s["out_var"]].append(f"decoder stage {s['index'] + 1} project" + (" + concat" if s["upsample"] else ""))
        if s["groups"] > 1:
            frozen.update([s["hidden_var"], s["out_var"], *(v for v, _ in s["cin_segments"])])
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
def _conv_bn(layout: dict, prefix: str, out_seg: Segments, in_seg: Segments, depthwise: bool = False) -> None:
    """A ConvBNReLU at ``prefix`` (``.0`` conv, ``.1`` BatchNorm)."""
    _conv(layout, f"{prefix}.0", out_seg, in_seg, depthwise)
    _bn(layout, f"{prefix}.1", out_seg)


def _conv(layout: dict, prefix: str, out_seg: Segments, in_seg: Segments, depthwise: bool = False,
          bias: bool = False) -> None:
    layout[f"{prefix}.weight"] = {"axes": {0: out_seg, 1: [(None, 1)] if depthwise else in_seg},
                                  "producer": not depthwise}
    if bias:
        layout[f"{prefix}.bias"] = {"axes": {0: out_seg}, "producer": False}


def _bn(layout: dict, prefix: str, seg: Segments) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        layout[f"{prefix}.{name}"] = {"axes": {0: seg}, "producer": False}


def tensor_layout(spec: dict) -> dict[str, dict]:
    """state_dict key -> {"axes": {axis: segments}, "producer": bool} for every sliced tensor.

    ``producer`` marks the (non-depthwise) convolutions whose output filters are ranked by
    L2 norm when their channels are cut."""
    enc = spec["architecture"]["encoder"]
    stem = int(enc.get("stem", 32))
    layout: dict[str, dict] = {}
    _conv_bn(layout, "encoder.features.0", [("enc.stem", stem)], [(None, 3)])
    for b in _block_vars(spec):
        p = f"encoder.features.{b['index'] + 1}.conv"
        cin, hidden, cout = [(b["cin_var"], b["cin"])], [(b["hidden_var"], b["hidden"])], [(b["cout_var"], b["cout"])]
        j = 0
        if b["has_expand"]:
            _conv_bn(layout, f"{p}.0", hidden, cin)
            j = 1
        _conv_bn(layout, f"{p}.{j}", hidden, hidden, depthwise=True)
        _conv(layout, f"{p}.{j + 1}", cout, hidden)
        _bn(layout, f"{p}.{j + 2}", cout)
    stages = _decoder_stages(spec)
    for s in stages:
        p = f"decoder.stages.{s['index']}"
        hidden, out = [(s["hidden_var"], s["hidden"])], [(s["out_var"], s["out"])]
        _conv_bn(layout, f"{p}.expand", hidden, s["cin_segments"])
        _conv_bn(layout, f"{p}.depthwise", hidden, hidden, depthwise=True)
        _conv_bn(layout, f"{p}.project", out, hidden)
    last = stages[-1]
    _conv(layout, "decoder.predict", [(None, 1)], [(last["out_var"], last["out"])], bias=True)
    for k, stage in enumerate(spec["architecture"].get("heads") or []):
        s = stages[int(stage) - 1]
        _conv(layout, f"heads.{k}", [(None, 1)], [(s["out_var"], s["out"])], bias=True)
    return layout
