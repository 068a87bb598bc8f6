"""The channel structure of any PyTorch model, from Torch-Pruning's dependency graph of the traced model.

For a spec model the network plan (:mod:`mobiledepth.arch.plan`) says which widths are tied; for any
other model (``module:factory``) this module finds out by tracing it once on a ``(1, 3, H, W)`` image
(Torch-Pruning's ``DependencyGraph``). Every convolution / linear layer whose output channels can
shrink roots a *group*: the layers whose channels are tied to it (BatchNorms, the depthwise conv
that reads them, the next layers' inputs, both sides of a residual add, a concat's slice) shrink
together. A group is named by the qualified name of its first member (in ``model.named_modules()``
order) whose *output* channels it cuts, so names are stable across runs and widths.

Never cut: the channels of the depth output and of intermediate heads (the output contract of
:mod:`mobiledepth.arch.resolve`, found by walking back from every model output to the layers that
produce it), and channels read or written by a grouped (not depthwise) convolution. A pruned
factory model is named by its factory and its group widths (data): :func:`rebuild` cuts a fresh
``factory()`` model to them so that its state dict loads. *Which* channels a cut keeps is prune's
choice (:mod:`mobiledepth.prune.graph`). Torch-Pruning is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mobiledepth.errors import UserError

DEFAULT_TRACE_SIZE = (64, 64)


@dataclass
class GraphGroup:
    """One group of tied channels: its name, width, whether it may be cut (and why not), its members.

    ``members``: ``"qualified.name:out"`` / ``"qualified.name:in"`` for every named layer the group slices."""

    name: str
    width: int
    prunable: bool
    members: list[str] = field(default_factory=list)
    reason: str | None = None

    def modules(self, side: str | None = None) -> set[str]:
        """Qualified names of the members (``side``: only those cut on "out" or "in")."""
        return {m.rsplit(":", 1)[0] for m in self.members if side is None or m.endswith(f":{side}")}


@dataclass
class ChannelGraph:
    """A model's dependency graph (Torch-Pruning) and its named channel groups, in network order."""

    model: object
    graph: object
    groups: dict[str, GraphGroup]

    def widths(self) -> dict[str, int]:
        """Group name -> current width."""
        return {name: g.width for name, g in self.groups.items()}

    def prunable(self) -> list[GraphGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def cut(self, name: str, indices: list[int]) -> None:
        """Remove output channels ``indices`` of group ``name`` (and every tied tensor), in place."""
        root = self.root(name)
        fn = self.graph.get_pruner_of_module(root).prune_out_channels
        self.graph.get_pruning_group(root, fn, idxs=sorted(int(i) for i in indices)).prune()
        self.groups[name].width -= len(indices)

    def root(self, name: str):
        """The layer that names group ``name``."""
        return dict(self.model.named_modules())[name]


def depth_and_heads(out) -> list:
    """The tensors whose channels are fixed: the depth map and the intermediate heads (the output contract;
    a spec model's ``forward_train`` prediction too)."""
    from mobiledepth.arch.resolve import split_output

    if hasattr(out, "depth") and hasattr(out, "intermediates"):
        return [out.depth, *out.intermediates]
    depth, heads = split_output(out)
    if depth is None:
        raise UserError("the model's output holds no depth map; return (N, 1, H, W), a tuple whose first element "
                        "it is, or a dict with 'depth' (docs/export.md)")
    return [depth, *heads]


def trace_forward(model, x):
    """Trace the training forward when the model has one (spec models' heads live there)."""
    train_forward = getattr(model, "forward_train", None)
    return train_forward(x) if callable(train_forward) and getattr(model, "heads", None) else model(x)


def _trace(model, input_size):
    """Torch-Pruning's dependency graph of ``model`` traced on one image (buffers and mode left as they were)."""
    import copy

    import torch
    import torch_pruning as tp

    height, width = (int(v) for v in (input_size or DEFAULT_TRACE_SIZE))
    param = next(model.parameters(), None)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    was_training, buffers = model.training, copy.deepcopy(dict(model.named_buffers()))
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=x, forward_fn=trace_forward,
                                                         output_transform=depth_and_heads, verbose=False)
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{type(model).__name__} cannot be traced on a (1, 3, {height}, {width}) image "
                        f"({type(exc).__name__}: {first}); check --input-size and the contract in docs/prune.md") from None
    finally:
        with torch.no_grad():
            for name, value in model.named_buffers():
                if name in buffers and buffers[name].shape == value.shape:
                    value.copy_(buffers[name])
        model.train(was_training)


def _fixed_layers(graph) -> set:
    """Layers whose output channels reach a model output (depth or head), through any number of
    channel-keeping ops (activations, BatchNorm, upsampling, adds, concats)."""
    import torch_pruning as tp

    roots = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)
    sinks = [n for n in graph.module2node.values() if not n.outputs]  # an output op, or a layer whose output is one
    fixed = {n.module for n in sinks if isinstance(n.module, roots)}
    stack, seen = [n for n in sinks if not isinstance(n.module, roots)], set()
    while stack:
        node = stack.pop()
        for parent in node.inputs:
            if parent in seen:
                continue
            seen.add(parent)
            if isinstance(parent.module, roots):
                fixed.add(parent.module)
            else:
                stack.append(parent)
    return fixed


def _grouped(module) -> bool:
    """A grouped convolution that is not depthwise (its channel blocks are not free to shrink)."""
    groups = getattr(module, "groups", 1)
    return groups > 1 and not (groups == module.in_channels == module.out_channels)


def _describe(graph, tp_group, names: dict, order: dict, fixed: set) -> GraphGroup:
    """A Torch-Pruning group as a named :class:`GraphGroup`."""
    outs, ins = [], []
    for dep, _ in tp_group:
        module = dep.target.module
        if module in names:
            (outs if graph.is_out_channel_pruning_fn(dep.handler) else ins).append(module)
    root = min(outs, key=order.__getitem__)
    reason = None
    if any(m in fixed for m in outs):
        reason = "its channels are the depth output's or a head's"
    elif any(_grouped(m) for m in outs + ins):
        reason = "a grouped convolution reads or writes it"
    width = graph.get_out_channels(root)
    if reason is None and width < 2:
        reason = "it has one channel"
    members = [f"{names[m]}:out" for m in outs] + [f"{names[m]}:in" for m in ins]
    return GraphGroup(names[root], int(width), reason is None, sorted(set(members), key=_member_order(order, names)),
                      reason)


def _member_order(order: dict, names: dict):
    by_name = {names[m]: i for m, i in order.items()}
    return lambda member: (by_name[member.rsplit(":", 1)[0]], member)


def build_graph(model, input_size=None, require_prunable: bool = True) -> ChannelGraph:
    """The channel groups of ``model`` (any module meeting the output contract), traced at ``input_size``
    (default 64x64). A UserError when nothing is prunable and ``require_prunable``."""
    import torch_pruning as tp

    graph = _trace(model, input_size)
    named = list(model.named_modules())
    names = {module: name for name, module in named}
    order = {module: i for i, (_, module) in enumerate(named)}
    fixed = _fixed_layers(graph)
    found = [_describe(graph, g, names, order, fixed)
             for g in graph.get_all_groups(root_module_types=(tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR))]
    by_position = {name: i for i, (name, _) in enumerate(named)}
    groups = {g.name: g for g in sorted(found, key=lambda g: by_position[g.name])}
    result = ChannelGraph(model, graph, groups)
    if require_prunable and not result.prunable():
        raise UserError(f"{type(model).__name__} has nothing to prune: every layer's output channels feed the depth "
                        "output, a head or a grouped convolution; prune needs convolutions whose widths can shrink")
    return result


def check_widths(graph: ChannelGraph, widths: dict[str, int]) -> None:
    """A one-line UserError for an unknown group, a width out of range, or a cut of a group that may not shrink."""
    unknown = sorted(set(widths) - set(graph.groups))
    if unknown:
        raise UserError(f"unknown channel group(s) {', '.join(unknown[:3])}; the model's groups are "
                        f"{', '.join(list(graph.groups)[:6])}, ... (see docs/prune.md)")
    for name, width in widths.items():
        group = graph.groups[name]
        if not 1 <= int(width) <= group.width:
            raise UserError(f"group {name} has {group.width} channels; cannot keep {width}")
        if int(width) < group.width and not group.prunable:
            raise UserError(f"group {name} cannot be cut: {group.reason}")


def cut_to_widths(model, widths: dict[str, int], keep: dict | None = None, input_size=None):
    """Cut ``model`` in place to ``widths`` (group name -> width) and return it: each cut group keeps
    ``keep[name]`` (channel indices) when given, else its first ``width`` channels."""
    graph = build_graph(model, input_size, require_prunable=False)
    check_widths(graph, widths)
    for name, width in widths.items():
        current = graph.groups[name].width
        if int(width) == current:
            continue
        kept = {int(i) for i in keep[name]} if keep and name in keep else set(range(int(width)))
        if len(kept) != int(width) or not kept <= set(range(current)):
            raise UserError(f"group {name}: {len(kept)} kept channel indices for width {width} (of {current})")
        graph.cut(name, [i for i in range(current) if i not in kept])
    return model


def rebuild(model, widths: dict[str, int], input_size=None):
    """Shape a fresh ``model`` (factory()) to a pruned checkpoint's group widths, ready for its state dict."""
    return cut_to_widths(model, widths, input_size=input_size)


def group_widths(model, input_size=None) -> dict[str, int]:
    """Group name -> width of ``model`` (every group, prunable or not)."""
    return build_graph(model, input_size, require_prunable=False).widths()
