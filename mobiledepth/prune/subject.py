"""What NetAdapt prunes: a spec model (groups from the network plan) or any ``module:factory`` model (groups from
Torch-Pruning's dependency graph), behind one small interface.

A *subject* is one checkpoint of the model being pruned. NetAdapt asks it for its channel groups, the
lookup-table estimate of its latency with some groups set to other widths, whether a width keeps the
model's structure, a cut (one group to one width, largest-magnitude channels kept) saved as a
checkpoint, how the trainer names it, and its fp32 TFLite export. :func:`open_subject` picks the kind:
a factory reference given on the command line (``--model my_models:net``) makes a factory subject;
anything else reads the spec the checkpoint stores (never code from a file).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Group:
    """One channel group as NetAdapt sees it."""

    name: str
    width: int
    prunable: bool


@dataclass
class SpecSubject:
    """A spec model (MobileNetV2 + FBNet) at one checkpoint: the plan's groups and layers, spec surgery."""

    spec: dict
    model: object
    kind: str = "spec"
    bisect: bool = False  # estimates are cheap: try every width from the top

    @property
    def name(self) -> str:
        return self.spec.get("name")

    def identity(self) -> dict:
        """What prune.json's ``model`` says about it (name and hash)."""
        from mobiledepth.arch import spec_hash

        return {"name": self.name, "spec_hash": spec_hash(self.spec)}

    def groups(self) -> list[Group]:
        """Its channel groups, in network order."""
        from mobiledepth.prune.groups import channel_groups

        return [Group(g.name, g.width, g.prunable) for g in channel_groups(self.spec)]

    def widths(self) -> dict[str, int]:
        """Group name -> width."""
        from mobiledepth.prune.groups import group_widths

        return group_widths(self.spec)

    def estimate(self, table, widths: dict[str, int] | None = None, input_size=None):
        """The table's estimate (``lut.Estimate``) of the model with some groups set to ``widths``."""
        from mobiledepth.prune.groups import set_group_widths

        return table.estimate(set_group_widths(self.spec, widths) if widths else self.spec, input_size)

    def allowed(self, widths: dict[str, int]) -> bool:
        """The widths keep every residual add and expand conv (tied widths that become equal would not)."""
        from mobiledepth.prune.groups import set_group_widths, structure

        return structure(set_group_widths(self.spec, widths)) == structure(self.spec)

    def save_cut(self, group: str, width: int, path: Path) -> Path:
        """The model with ``group`` cut to ``width`` (largest filters kept), saved as a checkpoint at ``path``."""
        from mobiledepth.arch import save_checkpoint
        from mobiledepth.prune.surgery import prune_model

        pruned, new_spec = prune_model(self.model, self.spec, {group: width})
        return save_checkpoint(path, pruned, new_spec)

    def save(self, path: Path) -> Path:
        """The model as it is, saved as a checkpoint at ``path``."""
        from mobiledepth.arch import save_checkpoint

        return save_checkpoint(path, self.model, self.spec)

    def train_model(self, checkpoint) -> dict:
        """The trainer's config keys naming this model with ``checkpoint``'s weights."""
        return {"model": str(checkpoint)}

    def export(self, checkpoint, input_size, out_dir: Path) -> tuple[Path, Path]:
        """An fp32 TFLite export of ``checkpoint`` through the export pipeline: (tflite, run_dir)."""
        from mobiledepth.prune.variants import export_spec

        return export_spec(self.spec, input_size, out_dir, checkpoint)


@dataclass
class FactorySubject:
    """Any model meeting the output contract (``module:factory``) at one checkpoint: groups and cuts from its
    dependency graph, estimates from the lookup table over its traced layers, checkpoints that remember the
    factory reference as given and the group widths. Its methods mean what :class:`SpecSubject`'s do."""

    factory: str
    model: object
    fingerprint: str
    trace_size: tuple[int, int] | None = None
    kind: str = "factory"
    bisect: bool = True  # estimates are monotone in the width: search the widths by halving
    _graph: object = field(default=None, repr=False)
    # (size, group) -> WidthMap, or None (trace instead): true of every checkpoint of the model, so a run shares one
    width_maps: dict = field(default_factory=dict, repr=False)
    _traces: dict = field(default_factory=dict, repr=False)  # (size, widths) -> traced layers of the cut model

    @property
    def name(self) -> str:
        return self.factory

    def identity(self) -> dict:
        return {"name": self.factory, "factory": self.factory, "spec_hash": self.fingerprint}

    def graph(self):
        """Its channel graph (traced once; a UserError when nothing is prunable)."""
        from mobiledepth.prune.graph import build_graph

        if self._graph is None:
            self._graph = build_graph(copy.deepcopy(self.model), self.trace_size)
        return self._graph

    def groups(self) -> list[Group]:
        return [Group(g.name, g.width, g.prunable) for g in self.graph().groups.values()]

    def widths(self) -> dict[str, int]:
        return self.graph().widths()

    def estimate(self, table, widths: dict[str, int] | None = None, input_size=None):
        return table.estimate_layers(self.layers(widths or {}, tuple(input_size or table.meta["input_size"])))

    def layers(self, widths: dict[str, int], size: tuple[int, int]) -> list:
        """The deployed layers (as the table keys them) of the model with some groups at ``widths``: the uncut
        trace with each cut group's channel counts substituted (:func:`~mobiledepth.prune.traced_layers.substitute`,
        one probe trace per group), or the cut model traced where substitution is not known to be exact."""
        from mobiledepth.prune.graph import check_widths
        from mobiledepth.prune.traced_layers import substitute

        check_widths(self.graph(), widths)
        current = self.widths()
        cut = {name: int(width) for name, width in widths.items() if int(width) != current[name]}
        if not cut:
            return self.traced(size)
        maps = {name: self._width_map(name, size) for name in cut}
        changes = {name: width - current[name] for name, width in cut.items()}
        substituted = substitute(self.traced(size), maps, changes) if all(maps.values()) else None
        return substituted if substituted is not None else self.traced(size, cut)

    def traced(self, size: tuple[int, int], widths: dict[str, int] | None = None) -> list:
        """The deployed layers of a copy of the model cut to ``widths`` (first channels kept: shapes are all an
        estimate needs), traced once per widths and size."""
        from mobiledepth.prune.graph import rebuild

        key = (tuple(size), tuple(sorted((widths or {}).items())))
        if key not in self._traces:
            model = copy.deepcopy(self.model)
            if widths:
                rebuild(model, widths, self.trace_size)
            self._traces[key] = deployed_layers(model, tuple(size))
        return self._traces[key]

    def _width_map(self, name: str, size: tuple[int, int]):
        """How group ``name``'s width moves the layers' channel counts, from one probe trace at half its width."""
        from mobiledepth.prune.traced_layers import width_map

        key = (tuple(size), name)
        if key not in self.width_maps:
            width = self.widths()[name]
            probe = max(1, width // 2)
            self.width_maps[key] = width_map(self.traced(size), self.traced(size, {name: probe}), width, probe)
        return self.width_maps[key]

    def allowed(self, widths: dict[str, int]) -> bool:
        return True  # the graph ties what must stay equal; no width adds or removes a layer

    def save_cut(self, group: str, width: int, path: Path) -> Path:
        from mobiledepth.prune.graph import prune_to_widths, save_pruned

        pruned = prune_to_widths(copy.deepcopy(self.model), {group: width}, self.trace_size)
        return save_pruned(path, pruned, self.factory, self.trace_size)

    def save(self, path: Path) -> Path:
        from mobiledepth.prune.graph import save_pruned

        return save_pruned(path, self.model, self.factory, self.trace_size)

    def train_model(self, checkpoint) -> dict:
        return {"model": self.factory, "init_checkpoint": str(checkpoint)}

    def export(self, checkpoint, input_size, out_dir: Path) -> tuple[Path, Path]:
        """Through the route the table's layers mirror (``variants.VARIANT_ROUTE``, as a spec's), not every route:
        export's default converts twice and may pick another route's file (measured: 122 s + 110 s)."""
        from mobiledepth.prune.variants import export_fp32

        return export_fp32(self.factory, input_size, out_dir, checkpoint)


def deployed_layers(model, input_size: tuple[int, int]) -> list:
    """The lookup-table layers of a module in the form the export writes (depth output only, phase-split upsampling)."""
    from mobiledepth.arch.resolve import deploy_module
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.prune.traced_layers import traced_layers

    graph, _ = phase_split_upsampling(deploy_module(model))
    return traced_layers(graph, input_size)


def open_subject(model_ref, checkpoint, trace_size=None):
    """The subject behind ``--model`` and a checkpoint: a factory subject for a ``module:factory`` reference
    (the factory given again on the command line), else the spec the checkpoint stores (or ``model_ref``'s)."""
    from mobiledepth.arch import load_checkpoint, resolve_spec
    from mobiledepth.arch.resolve import is_factory_ref, resolve_model

    if is_factory_ref(model_ref):
        resolved = resolve_model(model_ref, checkpoint, with_heads=False)
        return FactorySubject(model_ref, resolved.model.eval(), resolved.spec_hash,
                              tuple(trace_size) if trace_size else resolved.declared_size)
    spec = resolve_spec(model_ref) if model_ref else None
    model, spec, _ = load_checkpoint(checkpoint, spec=spec, with_heads=False)
    return SpecSubject(spec, model)
