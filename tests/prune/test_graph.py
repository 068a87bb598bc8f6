"""Channel groups and surgery from Torch-Pruning's dependency graph (mobiledepth.arch.graph, mobiledepth.prune.graph): agreement with the
spec path on the paper's model, public models nobody here wrote (MONAI), rebuild from widths, the uniform baseline."""

from __future__ import annotations

import pytest
import torch

from mobiledepth.arch import build_model
from mobiledepth.errors import UserError
from mobiledepth.prune.graph import (build_graph, group_importance, group_widths, prune_to_widths, rebuild,
                                     round_down, uniform_prune)
from mobiledepth.prune.groups import channel_groups, tensor_layout
from mobiledepth.prune.surgery import channel_importance, keep_indices, prune_model

torch.set_num_threads(1)
SIZE = (64, 64)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def paper():
    """The paper's model with its training heads (they must follow the cuts too), eval mode."""
    torch.manual_seed(0)
    model = build_model("mdepth-mnv2-fbnet", with_heads=True).eval()
    return model, model.spec


def _spec_group_convs(spec: dict, model, variables: list[str]) -> set[str]:
    """The convolutions a spec group's width variables run through (either axis), from the plan's layout."""
    modules = dict(model.named_modules())
    convs = set()
    for key, info in tensor_layout(spec).items():
        prefix = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and isinstance(modules[prefix], torch.nn.Conv2d):
            if any(var in variables for segments in info["axes"].values() for var, _ in segments):
                convs.add(prefix)
    return convs


def _graph_convs(model, group) -> set[str]:
    modules = dict(model.named_modules())
    return {name for name in group.modules() if isinstance(modules[name], torch.nn.Conv2d)}


def _spec_to_graph(model, spec) -> dict[str, str]:
    """Spec group name -> the one graph group with the same width and the same member convolutions."""
    graph = build_graph(model, SIZE)
    mapping = {}
    for group in channel_groups(spec):
        convs = _spec_group_convs(spec, model, group.variables)
        same = [g.name for g in graph.groups.values() if g.width == group.width and _graph_convs(model, g) == convs]
        assert len(same) == 1, (group.name, convs, same)
        mapping[group.name] = same[0]
    return mapping


def test_every_spec_group_is_exactly_one_graph_group(paper):
    model, spec = paper
    graph = build_graph(model, SIZE)
    mapping = _spec_to_graph(model, spec)
    assert len(set(mapping.values())) == len(mapping) == 34
    # the graph's other groups are the 1-channel outputs (predict conv, two heads): never cut
    others = {name: g for name, g in graph.groups.items() if name not in mapping.values()}
    assert sorted(others) == ["decoder.predict", "heads.0", "heads.1"]
    assert all(not g.prunable and "depth output" in g.reason for g in others.values())
    assert all(graph.groups[name].prunable for name in mapping.values())
    assert mapping["enc.stem"] == "encoder.features.0.0"  # named by the first layer whose outputs it cuts
    assert "decoder.stages.4.expand.0:in" in graph.groups[mapping["enc.stage0"]].members  # the skip concat


def _cut_widths(spec) -> dict[str, int]:
    """Every group 8 narrower where it has room (tied widths stay tied: no residual add appears or goes)."""
    return {g.name: g.width - 8 for g in channel_groups(spec) if g.width >= 16}


def _slice_by_layout(state: dict, spec: dict, keep: dict[str, torch.Tensor]) -> dict:
    """The reference: every tensor sliced by hand along the network plan's layout (width variable -> kept
    indices), as the spec surgery did before the dependency graph took the cut over."""
    out = {}
    for key, tensor in state.items():
        for axis, segments in tensor_layout(spec).get(key, {"axes": {}})["axes"].items():
            pieces, offset = [], 0
            for var, size in segments:
                chosen = keep.get(var) if var is not None else None
                pieces.append(offset + (chosen if chosen is not None else torch.arange(size)))
                offset += size
            tensor = tensor.index_select(axis, torch.cat(pieces))
        out[key] = tensor
    return out


def test_same_widths_same_parameters_and_same_kept_channels_same_outputs(paper):
    import copy

    from mobiledepth.prune.groups import set_group_widths

    model, spec = paper
    mapping = _spec_to_graph(model, spec)
    widths = _cut_widths(spec)
    groups = {g.name: g for g in channel_groups(spec)}
    kept = {name: keep_indices(channel_importance(model.state_dict(), spec, groups[name].variables), width)
            for name, width in widths.items()}
    reference = build_model(set_group_widths(spec, widths), with_heads=True).eval()
    reference.load_state_dict(_slice_by_layout(model.state_dict(), spec,
                                               {v: kept[n] for n in kept for v in groups[n].variables}))
    by_graph = prune_to_widths(copy.deepcopy(model), {mapping[n]: w for n, w in widths.items()}, SIZE,
                               keep={mapping[n]: k.tolist() for n, k in kept.items()})
    by_surgery, _ = prune_model(model, spec, widths)
    assert _params(by_graph) == _params(by_surgery) == _params(reference) < _params(model)
    assert all(torch.equal(a, b) for a, b in zip(by_surgery.state_dict().values(), reference.state_dict().values()))
    x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference.forward_train(x), by_graph.eval().forward_train(x)
    torch.testing.assert_close(got.depth, want.depth, rtol=1e-4, atol=1e-5)
    for head_want, head_got in zip(want.intermediates, got.intermediates, strict=True):
        torch.testing.assert_close(head_got, head_want, rtol=1e-4, atol=1e-5)


def test_magnitude_keeps_the_strongest_channels(paper):
    import copy

    model, _ = paper
    model = copy.deepcopy(model)
    graph = build_graph(model, SIZE)
    name = "decoder.stages.4.expand.0"  # decoder stage 5's expanded width (96): expand -> depthwise -> project
    importance = group_importance(graph, name)
    kept = sorted(torch.topk(importance, 32).indices.tolist())
    old = model.decoder.stages[4].expand[0].weight.detach().clone()
    prune_to_widths(model, {name: 32}, SIZE)
    assert torch.equal(model.decoder.stages[4].expand[0].weight, old[kept])
    assert model.decoder.stages[4].depthwise[0].groups == 32 == model.decoder.stages[4].project[0].in_channels


def test_rebuild_then_load_gives_the_pruned_model(paper):
    import copy

    model, _ = paper
    pruned = prune_to_widths(copy.deepcopy(model), {"encoder.features.2.conv.2": 16, "decoder.stages.0.expand.0": 480},
                             SIZE)
    widths = group_widths(pruned, SIZE)
    torch.manual_seed(5)
    fresh = rebuild(build_model("mdepth-mnv2-fbnet", with_heads=True).eval(), widths, SIZE)
    fresh.load_state_dict(pruned.state_dict())  # strict: every shape fits
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), pruned(x))
    assert group_widths(fresh, SIZE) == widths


def test_bad_widths_and_nothing_to_prune(paper):
    import copy

    model, _ = paper
    model = copy.deepcopy(model)
    with pytest.raises(UserError, match="unknown channel group"):
        prune_to_widths(model, {"enc.stage2": 8}, SIZE)
    with pytest.raises(UserError, match="cannot keep"):
        prune_to_widths(model, {"encoder.features.0.0": 64}, SIZE)
    with pytest.raises(UserError, match="cannot keep 0"):
        prune_to_widths(model, {"decoder.predict": 0}, SIZE)
    only_output = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1))
    with pytest.raises(UserError, match="nothing to prune"):
        build_graph(only_output, (16, 16))
    grouped = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=2),
                                  torch.nn.Conv2d(8, 1, 1))
    graph = build_graph(grouped, (16, 16), require_prunable=False)
    assert [g.reason for g in graph.groups.values()][:2] == ["a grouped convolution reads or writes it"] * 2
    with pytest.raises(UserError, match="nothing to prune"):
        build_graph(grouped, (16, 16))
    with pytest.raises(UserError, match="cannot be cut: a grouped convolution"):
        prune_to_widths(grouped, {"0": 4}, (16, 16))
    assert round_down(37, 8) == 32 and round_down(5, 8) == 8


def _monai(name):
    monai = pytest.importorskip("monai.networks.nets")
    if name == "BasicUNet":
        return monai.BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, norm="batch")
    return monai.FlexibleUNet(in_channels=3, out_channels=1, backbone="efficientnet-b0", pretrained=False,
                              spatial_dims=2)


@pytest.mark.parametrize("name, size, groups", [("BasicUNet", (32, 32), 23), ("FlexibleUNet", (64, 64), 54)])
def test_public_models_build_groups_and_prune_to_widths(name, size, groups):
    torch.manual_seed(0)
    model = _monai(name).eval()
    graph = build_graph(model, size)
    assert len(graph.groups) == groups
    assert [g.name for g in graph.groups.values() if not g.prunable] == [list(graph.groups)[-1]]  # the output conv
    widths = {g.name: round_down(g.width // 2, 8) for g in graph.prunable() if g.width >= 16}
    before = _params(model)
    prune_to_widths(model, widths, size)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert _params(model) < before
    got = group_widths(model, size)
    assert all(got[name] == width for name, width in widths.items())


@pytest.mark.parametrize("name, size", [("BasicUNet", (32, 32)), ("FlexibleUNet", (64, 64))])
def test_uniform_baseline_rounds_every_group(name, size):
    torch.manual_seed(0)
    model = _monai(name).eval()
    before = build_graph(model, size)
    widths = uniform_prune(model, 0.5, round_to=8, input_size=size)
    for group in before.groups.values():
        if group.prunable and group.width >= 16:
            assert widths[group.name] % 8 == 0 and widths[group.name] < group.width, group.name
        elif not group.prunable:
            assert widths[group.name] == group.width
    with torch.no_grad():
        assert model(torch.rand(1, 3, *size)).shape == (1, 1, *size)
    with pytest.raises(UserError, match="ratio"):
        uniform_prune(model, 1.5)


# A user's model: conv-BN-ReLU, a residual add, a depthwise conv, a skip concat, a tuple output with one head.
OWN = '''
import torch
from torch import nn


def block(cin, cout, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.stem = block(3, width)
        self.down = block(width, 2 * width, stride=2)
        self.res = block(2 * width, 2 * width)
        self.dw = block(2 * width, 2 * width, groups=2 * width)
        self.fuse = block(3 * width, width)
        self.depth = nn.Conv2d(width, 1, 1)
        self.head = nn.Conv2d(2 * width, 1, 1)

    def forward(self, x):
        s = self.stem(x)
        d = self.down(s)
        d = self.dw(d + self.res(d))
        up = nn.functional.interpolate(d, scale_factor=2.0, mode="nearest")
        return self.depth(self.fuse(torch.cat([up, s], 1))), self.head(d)


def make():
    return Net(32)


def make_other():
    return Net(16)
'''


@pytest.fixture()
def own(user_module):
    """own_prunable.py importable from the current directory (a fresh import per test)."""
    return user_module("own_prunable", OWN)


def test_own_model_groups_follow_adds_concats_and_depthwise(own):
    from mobiledepth.arch.resolve import resolve_model

    model = resolve_model("own_prunable:make").model.eval()
    graph = build_graph(model, (32, 32))
    assert graph.widths() == {"stem.0": 32, "down.0": 64, "fuse.0": 32, "depth": 1, "head": 1}
    assert graph.groups["down.0"].modules() == {"down.0", "down.1", "res.0", "res.1", "dw.0", "dw.1", "fuse.0", "head"}
    assert "fuse.0:in" in graph.groups["stem.0"].members  # the skip concat's second half
    assert [g.name for g in graph.prunable()] == ["stem.0", "down.0", "fuse.0"]


def test_pruned_factory_checkpoint_loads_through_the_resolver(own):
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import save_pruned

    source = resolve_model("own_prunable:make", seed=1)
    model = prune_to_widths(source.model.eval(), {"down.0": 40, "stem.0": 16}, (32, 32))
    path = save_pruned(own / "pruned.pt", model, "own_prunable:make", (32, 32), input_size=[32, 32])
    loaded = resolve_model("own_prunable:make", path)
    assert loaded.checkpoint_meta() == {"factory": "own_prunable:make",
                                        "widths": {"stem.0": 16, "down.0": 40, "fuse.0": 32, "depth": 1, "head": 1}}
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x)[0], model(x)[0])
    with pytest.raises(UserError, match="was trained from the factory own_prunable:make"):
        resolve_model(None, path)  # the file alone never runs the factory
    with pytest.raises(UserError, match=r"was pruned from own_prunable:make: .* pass --model own_prunable:make"):
        resolve_model("own_prunable:make_other", path)
    with pytest.raises(UserError, match="pass --model own_prunable:make"):
        resolve_model("mdepth-tiny", path)


@pytest.mark.slow
def test_pruned_factory_checkpoint_exports_with_parity(own):
    """The export pipeline takes a pruned factory checkpoint (factory given again): ONNX and TFLite pass parity
    (by hand on this machine: 2 min 48 s under load, both converter routes)."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.export import export_model
    from mobiledepth.prune.graph import save_pruned

    model = prune_to_widths(resolve_model("own_prunable:make", seed=0).model.eval(), {"down.0": 40, "fuse.0": 16})
    path = save_pruned(own / "pruned.pt", model, "own_prunable:make")
    result = export_model(model="own_prunable:make", checkpoint=path, input_size=(64, 64), precisions="fp32",
                          out=own / "export")
    assert result.record["artifacts"] and all(a["parity"]["passed"] is True for a in result.record["artifacts"])
