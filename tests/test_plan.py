"""The network plan: what a spec builds, said once and read by the modules and by pruning."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mobiledepth.arch import DEFAULT_INPUT_SIZE, build_model, count_parameters, list_models, network_plan, resolve_spec
from mobiledepth.arch.plan import spec_input_size
from mobiledepth.errors import UserError
from mobiledepth.prune.groups import channel_groups
from mobiledepth.prune.layers import network_layers

PAPER = "mdepth-mnv2-fbnet"


def _mid_spec() -> dict:
    """benchmarks/prune_host.py's mdepth-mid (the NetAdapt benchmark model)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "prune_host.py"
    module_spec = importlib.util.spec_from_file_location("prune_host_for_plan_test", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return resolve_spec(module.MID_SPEC)


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def test_paper_plan_has_the_known_numbers():
    plan = network_plan(resolve_spec(PAPER))
    assert plan.input_size == (256, 256)
    assert plan.parameters() == 2_633_801
    assert plan.encoder.tap_indices == (1, 3, 6, 13, 17)
    assert plan.encoder.tap_channels == (16, 24, 32, 96, 320)
    first, second = plan.encoder.blocks[:2]
    assert (first.cin, first.hidden, first.cout, first.has_expand, first.residual) == (32, 32, 16, False, False)
    assert (second.cin, second.hidden, second.cout, second.stride, second.size) == (16, 96, 24, 2, (128, 128))
    assert plan.encoder.blocks[2].residual and plan.encoder.blocks[2].prefix == "encoder.features.3"
    stages = plan.decoder.stages
    assert [(s.cin, s.hidden, s.cout) for s in stages] == [(320, 960, 128), (224, 672, 96), (128, 384, 64),
                                                           (88, 264, 32), (48, 96, 32)]
    assert [s.upsample for s in stages] == [True, True, True, True, False]
    assert [s.skip for s in stages] == [96, 32, 24, 16, 0]
    assert stages[1].inputs == (("decoder.stages.0", 128), ("encoder.features.13", 96))
    assert stages[-1].out_size == (128, 128)
    assert [h.cin for h in plan.heads] == [96, 64]


@pytest.mark.parametrize("name", list_models())
def test_plan_describes_the_built_model(name):
    """Every planned conv is the module at its prefix, and together they are every parameter."""
    plan = network_plan(resolve_spec(name))
    model = build_model(name)
    assert plan.parameters() == count_parameters(model)
    assert plan.parameters(include_heads=True) == count_parameters(model, include_heads=True)
    modules = dict(model.named_modules())
    covered = set()
    for conv in plan.convs(include_heads=True):
        module = modules[conv.prefix]
        assert (module.in_channels, module.out_channels, module.kernel_size, module.stride, module.groups) == \
            (conv.cin, conv.cout, (conv.kernel,) * 2, (conv.stride,) * 2, conv.groups), conv.prefix
        assert (module.bias is not None) == conv.bias, conv.prefix
        covered |= {f"{conv.prefix}.{n}" for n, _ in module.named_parameters()}
        if conv.bn:
            assert modules[conv.bn].num_features == conv.cout
            covered |= {f"{conv.bn}.{n}" for n, _ in modules[conv.bn].named_parameters()}
    assert covered == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name", ["mdepth-tiny", "fastdepth"])
def test_planned_sizes_match_a_forward_pass(name):
    """Every block sees its planned input size; the last decoder stage ends at its planned size."""
    size = (64, 96)
    plan = network_plan(resolve_spec(name), size)
    model = build_model(name).eval()
    blocks = [*plan.encoder.blocks, *plan.decoder.stages]
    modules = dict(model.named_modules())
    seen = {}

    def record(prefix):
        def hook(module, args):
            seen[prefix] = tuple(args[0].shape[2:])
        return hook

    hooks = [modules[b.prefix].register_forward_pre_hook(record(b.prefix)) for b in blocks]
    with torch.no_grad():
        features = model.forward_train(torch.rand(1, 3, *size)).features
    for hook in hooks:
        hook.remove()
    assert {b.prefix: b.size for b in blocks} == seen
    assert tuple(features.shape[2:]) == plan.decoder.stages[-1].out_size
    assert plan.decoder.stages[0].size == (2, 3)


def test_lut_layers_and_groups_are_unchanged_from_before_the_plan():
    """Digests of the lists the pre-plan code produced (paper at 256x256, mdepth-mid at 128x128)."""
    for spec, size, n_layers, layers_digest, n_groups, groups_digest in [
            (resolve_spec(PAPER), (256, 256), 111, "1bc43089bffa20db", 34, "347e34412fb7e921"),
            (_mid_spec(), (128, 128), 84, "3e66a2e1ffb58f9c", 26, "ff61bc9e0b41d7d8")]:
        layers = [layer.to_dict() for layer in network_layers(spec, size)]
        groups = [dataclasses.asdict(g) for g in channel_groups(spec)]
        assert (len(layers), _digest(layers)) == (n_layers, layers_digest), spec["name"]
        assert (len(groups), _digest(groups)) == (n_groups, groups_digest), spec["name"]


def test_input_size_comes_from_the_caller_then_the_spec_then_the_default():
    spec = resolve_spec("mdepth-tiny")
    assert spec_input_size(spec, (32, 64)) == (32, 64)
    assert spec_input_size(spec) == (64, 64)
    del spec["input_size"]
    assert spec_input_size(spec) == DEFAULT_INPUT_SIZE
    assert network_plan(spec).input_size == DEFAULT_INPUT_SIZE


def test_an_inconsistent_spec_is_a_user_error_naming_it():
    spec = resolve_spec("mdepth-tiny")
    spec["architecture"]["decoder"]["stages"].pop()
    with pytest.raises(UserError, match="spec 'mdepth-tiny' is inconsistent: FBNetDecoder needs 5 encoder taps"):
        network_plan(spec)
    fast = resolve_spec("fastdepth")
    fast["architecture"]["decoder"]["widths"] = [512, 200, 128, 64, 32]
    with pytest.raises(UserError, match="additive skip needs width 256 after block 2"):
        build_model(fast)
