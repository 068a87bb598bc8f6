"""Channel surgery: shrink a model's weights to narrower widths, keeping the largest-L2 filters.

For each channel group being cut, every output channel gets an importance: the sum, over the
group's producing convolutions (the 1x1/KxK convs writing those channels — several for an
encoder stage tied by residual adds), of the L2 norm of that channel's filter. The ``width``
most important channels are kept, in their original order, and every tensor laid out along
that group (depthwise convs, BatchNorms, the next layers' inputs, decoder concat inputs,
training heads) is sliced the same way (see :func:`mobiledepth.prune.groups.tensor_layout`).
"""

from __future__ import annotations

import torch

from mobiledepth.errors import UserError
from mobiledepth.prune.groups import channel_groups, set_group_widths, structure, tensor_layout


def channel_importance(state_dict: dict, spec: dict, variables: list[str]) -> torch.Tensor:
    """Per-channel importance of a group: summed L2 norms of its producers' filters."""
    total = None
    for key, info in tensor_layout(spec).items():
        if not info["producer"] or key not in state_dict:
            continue
        offset = 0
        for var, size in info["axes"][0]:
            if var in variables:
                weight = state_dict[key].detach().float()[offset:offset + size]
                norms = weight.reshape(size, -1).norm(dim=1)
                total = norms if total is None else total + norms
            offset += size
    if total is None:
        raise UserError(f"channel group {variables[0]} has no producing convolution; it cannot be ranked")
    return total


def keep_indices(importance: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width`` largest entries' indices, sorted ascending (ties: lower index first)."""
    order = sorted(range(len(importance)), key=lambda i: (-float(importance[i]), i))
    return torch.tensor(sorted(order[:width]), dtype=torch.long)


def slice_state_dict(state_dict: dict, spec: dict, keep: dict[str, torch.Tensor]) -> dict:
    """Slice every tensor along the width variables in ``keep`` (variable -> kept indices)."""
    out = {}
    layout = tensor_layout(spec)
    for key, tensor in state_dict.items():
        info = layout.get(key)
        if info is None:
            out[key] = tensor.clone()
            continue
        for axis, segments in info["axes"].items():
            pieces, offset = [], 0
            for var, size in segments:
                chosen = keep.get(var) if var is not None else None
                pieces.append(offset + (chosen if chosen is not None else torch.arange(size)))
                offset += size
            if offset != tensor.shape[axis]:
                raise UserError(f"weights do not fit the spec: {key} axis {axis} has {tensor.shape[axis]} channels, "
                                f"spec says {offset}; pass the spec the checkpoint was trained with")
            tensor = tensor.index_select(axis, torch.cat(pieces))
        out[key] = tensor.clone()
    return out


def prune_model(model, spec: dict, widths: dict[str, int], check_structure: bool = True):
    """A new model of ``spec`` with groups cut to ``widths`` (group name -> width); returns (model, spec).

    The new model keeps training heads if ``model`` has them and is in ``model``'s mode."""
    from mobiledepth.arch import build_model
    from mobiledepth.arch.checkpoint import load_state_dict_strict

    groups = {g.name: g for g in channel_groups(spec)}
    keep: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for name, width in widths.items():
        if name not in groups:
            raise UserError(f"unknown channel group {name}; known: {', '.join(groups)}")
        group = groups[name]
        if not 1 <= width <= group.width:
            raise UserError(f"group {name} has {group.width} channels; cannot keep {width}")
        if width == group.width:
            continue
        if not group.prunable:
            raise UserError(f"group {name} feeds a grouped convolution and cannot be cut")
        chosen = keep_indices(channel_importance(state, spec, group.variables), width)
        for var in group.variables:
            keep[var] = chosen
    new_spec = set_group_widths(spec, widths)
    if check_structure and structure(new_spec) != structure(spec):
        raise UserError("these widths would add or remove a residual add / expand conv (two tied widths became "
                        "equal); choose another width")
    new_model = build_model(new_spec, with_heads=len(getattr(model, "heads", [])) > 0)
    load_state_dict_strict(new_model, slice_state_dict(state, spec, keep), "pruned weights")
    new_model.train(model.training)
    return new_model, new_model.spec
