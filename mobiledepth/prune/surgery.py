"""Channel surgery on a spec model: shrink it to narrower group widths, keeping the largest-L2 filters.

For each channel group being cut, every output channel gets an importance: the sum, over the
group's producing convolutions (the 1x1/KxK convs writing those channels — several for an
encoder stage tied by residual adds), of the L2 norm of that channel's filter (SPEC §6, the
paper's rule). The ``width`` most important channels are kept, in their original order. The
cut itself is Torch-Pruning's (:mod:`mobiledepth.arch.graph`: depthwise convs, BatchNorms, the
next layers' inputs, decoder concat inputs and training heads follow through the dependency
graph); the cut weights are then loaded strictly into the model built from the narrower spec,
so every cut also checks that the spec and the graph agree."""

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


def graph_group_name(spec: dict, variables: list[str], module_order: dict[str, int]) -> str:
    """The dependency-graph group (:mod:`mobiledepth.prune.graph`) of a spec group: the one named by the first
    convolution, in module order, that produces the group's channels."""
    producers = [key.rsplit(".", 1)[0] for key, info in tensor_layout(spec).items()
                 if info["producer"] and any(var in variables for var, _ in info["axes"][0])]
    return min(producers, key=module_order.__getitem__)


def _cut_with_graph(model, spec: dict, keep: dict[str, torch.Tensor], groups: dict) -> dict:
    """The state dict of a copy of ``model`` cut by Torch-Pruning's dependency graph, keeping ``keep``
    (spec group -> kept channel indices)."""
    import copy

    from mobiledepth.arch.graph import cut_to_widths

    if not keep:
        return model.state_dict()
    work = copy.deepcopy(model)
    order = {name: i for i, (name, _) in enumerate(work.named_modules())}
    by_graph = {graph_group_name(spec, groups[name].variables, order): kept.tolist() for name, kept in keep.items()}
    cut_to_widths(work, {name: len(kept) for name, kept in by_graph.items()}, keep=by_graph)
    return work.state_dict()


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
        keep[name] = keep_indices(channel_importance(state, spec, group.variables), width)
    new_spec = set_group_widths(spec, widths)
    if check_structure and structure(new_spec) != structure(spec):
        raise UserError("these widths would add or remove a residual add / expand conv (two tied widths became "
                        "equal); choose another width")
    new_model = build_model(new_spec, with_heads=len(getattr(model, "heads", [])) > 0)
    load_state_dict_strict(new_model, _cut_with_graph(model, spec, keep, groups), "pruned weights")
    new_model.train(model.training)
    return new_model, new_model.spec
