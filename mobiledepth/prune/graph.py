"""Pruning any PyTorch model by its dependency graph (Torch-Pruning): which channels to keep, the uniform
baseline, and pruned factory checkpoints.

The groups, their names and the cut itself are the architecture's (:mod:`mobiledepth.arch.graph`: a
model's channel structure, traced once); this module chooses: a cut keeps the channels of highest
group magnitude (``tp.importance.MagnitudeImportance``, L2, ranked on the uncut model), and
:func:`uniform_prune` cuts every group by one ratio with Torch-Pruning's magnitude ranking (the
baseline NetAdapt is compared with). Torch-Pruning is imported inside the functions.
"""

from __future__ import annotations

from mobiledepth.arch.graph import (DEFAULT_TRACE_SIZE, ChannelGraph, GraphGroup, build_graph,  # noqa: F401
                                    check_widths, cut_to_widths, depth_and_heads, group_widths, rebuild, trace_forward)
from mobiledepth.errors import UserError


def group_importance(graph: ChannelGraph, name: str):
    """Per-channel group magnitude (L2) of group ``name`` (Torch-Pruning's MagnitudeImportance)."""
    import torch_pruning as tp

    root = graph.root(name)
    fn = graph.graph.get_pruner_of_module(root).prune_out_channels
    group = graph.graph.get_pruning_group(root, fn, idxs=list(range(graph.groups[name].width)))
    return tp.importance.MagnitudeImportance(p=2)(group)


def round_down(width: int, round_to: int) -> int:
    """The largest multiple of ``round_to`` not above ``width`` (at least ``round_to``)."""
    return max(int(round_to), int(width) // int(round_to) * int(round_to))


def prune_to_widths(model, widths: dict[str, int], input_size=None, keep: dict | None = None):
    """Cut ``model`` in place to ``widths`` (group name -> width) and return it; each cut group keeps
    ``keep[name]`` (channel indices) when given, else its channels of highest group magnitude (ranked
    on the uncut model)."""
    import torch

    graph = build_graph(model, input_size, require_prunable=False)
    check_widths(graph, widths)
    chosen = dict(keep or {})
    for name, width in widths.items():
        if name not in chosen and int(width) < graph.groups[name].width:
            chosen[name] = sorted(torch.topk(group_importance(graph, name), int(width)).indices.tolist())
    return cut_to_widths(model, widths, chosen, input_size)


def uniform_widths(graph: ChannelGraph, ratio: float, round_to: int = 8) -> dict[str, int]:
    """Every prunable group cut by ``ratio``: ``int(width * (1 - ratio))`` rounded down to a multiple of
    ``round_to`` (Torch-Pruning's rounding), but never below ``round_to`` nor above the group's width."""
    return {g.name: min(g.width, round_down(int(g.width * (1 - ratio) + 1e-9), round_to)) for g in graph.prunable()}


def uniform_prune(model, ratio: float, round_to: int = 8, input_size=None) -> dict[str, int]:
    """The uniform baseline: every prunable group cut by ``ratio`` (:func:`uniform_widths`), keeping the channels
    of highest group magnitude (``tp.importance.MagnitudeImportance(p=2)``, the ranking of Torch-Pruning's
    magnitude pruner), in place; returns the new group widths.

    Not ``tp.pruner.BasePruner`` itself: it rounds the kept width down to ``round_to`` and, where that gives 0,
    leaves the group uncut (at 0.85 a 48-channel group stayed at 48 while a 64-channel one went to 8), so
    a higher ratio could give a slower model; it also ran the model's forward in training mode (BatchNorm
    statistics moved)."""
    if not 0 < ratio < 1:
        raise UserError(f"pruning ratio must be in (0, 1) (got {ratio}); e.g. 0.3 removes 30 % of every group")
    prune_to_widths(model, uniform_widths(build_graph(model, input_size), ratio, round_to), input_size)
    return group_widths(model, input_size)


def save_pruned(path, model, factory: str, trace_size=None, **meta):
    """A pruned factory model's checkpoint: the factory reference as given (data, never run from the file), its
    group widths and its state dict; ``mobiledepth.arch.resolve`` loads it as factory() -> :func:`rebuild` -> weights."""
    from mobiledepth.arch.checkpoint import save_checkpoint

    return save_checkpoint(path, model, None, factory=factory, widths=group_widths(model, trace_size), **meta)
