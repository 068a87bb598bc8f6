"""A factory model's estimates by substitution (one probe trace per group) equal the traced cut model's."""

from __future__ import annotations

import copy
import json

import pytest

from mobiledepth.arch.resolve import resolve_model
from mobiledepth.prune.layers import NULL_LAYER
from mobiledepth.prune.lut import family_grid, load_table
from mobiledepth.prune.subject import FactorySubject, deployed_layers
from mobiledepth.prune.traced_layers import substitute, width_map


# A small U-Net: conv-BN-ReLU pairs, max-pool down, transposed-conv and nearest-resize up, skip concats.
UNET = '''
import torch
from torch import nn


def pair(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class UNet(nn.Module):
    def __init__(self, w=16):
        super().__init__()
        self.enc0, self.enc1, self.enc2 = pair(3, w), pair(w, 2 * w), pair(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec1 = pair(4 * w, 2 * w)
        self.dec0 = pair(3 * w, w)
        self.depth = nn.Conv2d(w, 1, 1)

    def forward(self, x):
        e0 = self.enc0(x)
        e1 = self.enc1(nn.functional.max_pool2d(e0, 2))
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        d1 = self.dec1(torch.cat([self.up2(e2), e1], 1))
        d0 = self.dec0(torch.cat([nn.functional.interpolate(d1, scale_factor=2.0, mode="nearest"), e0], 1))
        return self.depth(d0)


def make():
    return UNet()
'''

# An EfficientNet-like encoder: MBConv blocks (expand, depthwise, squeeze-excitation, project, residual add).
EFFNET = '''
import torch
from torch import nn


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), nn.SiLU())
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, max(8, cin // 4), 1), nn.Conv2d(max(8, cin // 4), hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.dw(self.expand(x))
        gate = torch.sigmoid(self.se_expand(nn.functional.silu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        y = self.project(h * gate)
        return x + y if self.residual else y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 16, 2, 1), MBConv(16, 24, 4, 2), MBConv(24, 24, 4, 1))
        self.fuse = nn.Sequential(nn.Conv2d(24 + 16, 16, 3, 1, 1), nn.ReLU6())
        self.depth = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        s = self.blocks[0](self.stem(x))
        d = self.blocks[2](self.blocks[1](s))
        up = nn.functional.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.depth(self.fuse(torch.cat([up, s], 1)))
        return nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)


def make():
    return Net()
'''

SIZE = (32, 32)


def _cost(layer) -> float:
    """A latency that grows with every channel dim (bilinear: the table's interpolation reproduces it)."""
    scale = layer.h * layer.w / 1024.0 * layer.kernel ** 2
    product = 1.0
    for c in layer.channels:
        product *= c
    return 2.0 + scale * (0.01 * product + 0.1 * sum(layer.channels))


def _table(layers, path, size=SIZE):
    """A hand-made table over ``layers``' families (no measurement)."""
    entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [2.0], "median_us": 2.0}}
    for family in family_grid(layers, 8, 3).values():
        for layer in family:
            entries[layer.key] = {"layer": layer.to_dict(), "samples_us": [_cost(layer)], "median_us": _cost(layer)}
    path.write_text(json.dumps({"format": "mobiledepth-lut/1", "kind": "lut", "schema": 1, "device": "host",
                                "delegate": "cpu", "threads": 1, "runtime": "hand-made", "input_size": list(size),
                                "model": "own", "multiple": 8, "points": 3, "entries": entries}))
    return load_table(path)


def _subject(ref: str, size=SIZE) -> FactorySubject:
    resolved = resolve_model(ref, seed=0)
    return FactorySubject(ref, resolved.model.eval(), resolved.spec_hash, size)


def _check_same_as_traced(subject, table, widths_list, size=SIZE) -> None:
    """For each widths: the substituted layers are the traced cut model's, key for key, and so is the total."""
    for widths in widths_list:
        substituted = subject.layers(widths, size)
        traced = subject.traced(size, widths)  # the path every estimate took before: copy, cut, trace
        assert [layer.key for layer in substituted] == [layer.key for layer in traced], widths
        assert substituted == traced
        assert subject.estimate(table, widths).total_us == table.estimate_layers(traced).total_us


@pytest.mark.parametrize("name, source", [("own_unet", UNET), ("own_effnet", EFFNET)])
def test_substituted_estimates_equal_the_traced_cut_model(user_module, tmp_path, name, source):
    user_module(name, source)
    subject = _subject(f"{name}:make")
    table = _table(subject.traced(SIZE), tmp_path / "lut.json")
    groups = [g for g in subject.groups() if g.prunable]
    assert len(groups) >= 5
    single = [{g.name: w} for g in groups for w in sorted({max(1, g.width * k // 8) for k in (1, 3, 6, 7)})]
    several = [{g.name: max(1, g.width // 4) for g in groups[::2]}, {g.name: 8 for g in groups if g.width >= 8}]
    _check_same_as_traced(subject, table, single + several)
    assert all(subject.width_maps[(SIZE, g.name)] is not None for g in groups)  # substitution was used
    assert len(subject.width_maps) == len(groups)  # one probe trace per group, however many widths were asked


@pytest.mark.parametrize("name, source", [("own_unet", UNET), ("own_effnet", EFFNET)])
def test_one_runs_maps_serve_its_later_checkpoints(user_module, tmp_path, name, source):
    """A run's next iteration is the model with one group cut: the first subject's maps (no new probes) give it
    the same layers as tracing it."""
    from mobiledepth.prune.graph import prune_to_widths

    user_module(name, source)
    first = _subject(f"{name}:make")
    groups = [g for g in first.groups() if g.prunable]
    first.layers({g.name: max(1, g.width // 4) for g in groups}, SIZE)  # every group probed once
    cut = {groups[1].name: max(1, groups[1].width * 3 // 4), groups[-1].name: max(1, groups[-1].width // 2)}
    model = prune_to_widths(copy.deepcopy(first.model), cut, SIZE)
    later = FactorySubject(first.factory, model, first.fingerprint, SIZE, width_maps=first.width_maps)
    probes = len(first.width_maps)
    table = _table(later.traced(SIZE), tmp_path / "lut.json")
    _check_same_as_traced(later, table, [{g.name: max(1, g.width // 3)} for g in later.groups() if g.prunable])
    assert len(first.width_maps) == probes  # nothing probed again


def test_the_squeeze_excitation_group_moves_its_gate_and_its_depthwise_conv(user_module):
    """The EfficientNet-like block's expanded width: expand conv out, depthwise, SE reduce in / expand out, scale,
    project in all move by the cut; the stem-tied residual width moves the add and the concat's second input."""
    user_module("own_effnet", EFFNET)
    subject = _subject("own_effnet:make")
    hidden = next(g.name for g in subject.groups() if g.name.endswith("blocks.1.expand.0"))
    base, cut = subject.traced(SIZE), subject.layers({hidden: 32}, SIZE)
    changed = [(a.op, a.channels, b.channels) for a, b in zip(base, cut) if a != b]
    assert ("dwconv", (64,), (32,)) in changed and ("scale", (64,), (32,)) in changed
    assert ("conv", (16, 64), (16, 32)) in changed and ("conv", (64, 24), (32, 24)) in changed
    stem = subject.layers({"stem.0": 8}, SIZE)  # tied to block 0's residual add and the skip into the concat
    moved = {(a.op, a.channels, b.channels) for a, b in zip(base, stem) if a != b}
    assert ("add", (16,), (8,)) in moved and ("concat", (24, 16), (24, 8)) in moved


def test_a_cut_that_changes_more_than_channels_gives_no_map():
    from mobiledepth.prune.layers import Layer

    base = [Layer("conv", 8, 8, (3, 16), (False, True)), Layer("add", 8, 8, (16,), (True,))]
    assert width_map(base, base[:1], 16, 8) is None  # a layer less
    assert width_map(base, [base[0].with_channels((3, 8)), Layer("mul", 8, 8, (8,), (True,))], 16, 8) is None
    found = width_map(base, [base[0].with_channels((3, 8)), base[1].with_channels((8,))], 16, 8)
    assert substitute(base, {"g": found}, {"g": 8}) == [base[0].with_channels((3, 24)), base[1].with_channels((24,))]
    halves = width_map(base, [base[0].with_channels((3, 12)), base[1]], 16, 8)  # a dim moving by half a channel
    assert substitute(base, {"g": halves}, {"g": -7}) is None  # not a whole count: trace instead


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["basic_unet", "flexible_unet"])
def test_public_models_substituted_estimates_equal_the_traced_ones(tmp_path, factory):
    pytest.importorskip("monai")
    size = (64, 64)
    subject = _subject(f"benchmarks.public_models:{factory}", size)
    table = _table(subject.traced(size), tmp_path / "lut.json", size)
    groups = [g for g in subject.groups() if g.prunable]
    on_grid = lambda g, k: min(g.width, max(8, g.width * k // 8 // 8 * 8))  # noqa: E731 - k/8 of it, a multiple of 8
    single = [{g.name: w} for g in groups[::3] for w in sorted({on_grid(g, 1), on_grid(g, 5)})]
    several = [{g.name: on_grid(g, 4) for g in groups}]
    _check_same_as_traced(subject, table, single + several, size)
    cut = {name for widths in single + several for name, width in widths.items() if width < subject.widths()[name]}
    assert set(name for _, name in subject.width_maps) == cut and all(subject.width_maps.values())  # substituted
    assert deployed_layers(subject.model, size) == subject.traced(size)


def test_a_factory_run_probes_each_group_once(own_factory, monkeypatch):
    """start() probes every group (the floor estimate cuts them all); the iterations reuse the run's maps."""
    from test_prune_netadapt import _own_settings

    from mobiledepth.prune import netadapt, traced_layers

    root, tmp, ckpt = own_factory
    probed = []
    real = traced_layers.width_map
    monkeypatch.setattr(traced_layers, "width_map", lambda *args: probed.append(args[2]) or real(*args))
    run = netadapt.start(_own_settings(root, tmp, ckpt, target_ratio=0.5), out=tmp / "run")
    prunable = [g for g in run.record["iterations"][0]["widths"] if g in ("stem.0", "down.0", "fuse.0")]
    assert len(probed) == len(prunable) == len(run.width_maps)
    netadapt.step(run)
    netadapt.step(run)
    assert len(probed) == len(prunable)  # two iterations later: not one probe more
    assert len(run.record["iterations"]) == 3
