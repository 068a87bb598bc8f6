"""Your own model, bad input (issue 12): a factory that does not import, returns no module, or whose output is
not a depth map; a checkpoint of another model; a file naming a factory — one line each, exit 2, through the
real CLI, with a small factory module written here."""

from __future__ import annotations

import pytest

from cli_faults import assert_user_error, run_cli, tree

FACTORIES = '''
import torch


class Good(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x), None


def make():
    return Good()


def nothing():
    return None


def two_channels():
    return torch.nn.Conv2d(3, 2, 1)


def halved():
    return torch.nn.Conv2d(3, 1, 2, stride=2)
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """facs.py, a tiny dataset, a checkpoint of the factory model and one of a zoo model."""
    import torch

    from mobiledepth.arch import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("own_faults")
    (root / "facs.py").write_text(FACTORIES)
    (root / "broken.py").write_text("import no_such_dependency_here\ndef make():\n    pass\n")
    for split in ("train", "test"):
        assert run_cli("data", "synth", "--out", "data", "--n", "4", "--size", "64x64", "--split", split,
                       cwd=root).code == 0
    save_checkpoint(root / "zoo.pt", build_model("mdepth-tiny"), input_size=[64, 64])
    save_checkpoint(root / "own.pt", torch.nn.Conv2d(3, 1, 3, padding=1), None, input_size=[64, 64],
                    factory="facs:make")  # what 'mobiledepth train --model facs:make' saves (conv.* keys differ)
    return root


CASES = {
    "does-not-import": ("broken:make", ["cannot import 'broken'", "no_such_dependency_here"]),
    "missing-module": ("nowhere_at_all:make", ["cannot import 'nowhere_at_all'"]),
    "no-module": ("facs:nothing", ["returned NoneType, not a torch.nn.Module"]),
    "not-a-depth-map": ("facs:two_channels", ["returns a tensor of shape (1, 2, 64, 64)", "not a depth map"]),
    "wrong-size": ("facs:halved", ["(1, 1, 32, 32)", "not a depth map"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_factory_is_one_line_in_eval_and_train(work, case):
    ref, fragments = CASES[case]
    result = run_cli("eval", "--model", ref, "--data", "data", "--input-size", "64x64", "--no-store", cwd=work)
    assert_user_error(result, *fragments)
    train = run_cli("train", "--model", ref, "--data", "data", "--out", f"t-{case}", "--input-size", "64x64",
                    "--steps", "1", cwd=work)
    assert_user_error(train, *fragments)
    assert not (work / f"t-{case}").exists()


def test_a_bad_factory_is_one_line_in_export(work):
    before = tree(work)
    result = run_cli("export", "--model", "facs:two_channels", "--out", "e", "--no-store", cwd=work)
    assert_user_error(result, "--model facs:two_channels", "not a depth map")
    assert tree(work) == before


def test_a_factory_checkpoint_needs_its_model_named(work):
    for args in (("export", "--checkpoint", "own.pt", "--out", "e", "--no-store"),
                 ("eval", "--checkpoint", "own.pt", "--data", "data", "--no-store"),
                 ("eval", "--model", "own.pt", "--data", "data", "--no-store")):
        result = run_cli(*args, cwd=work)
        assert_user_error(result, "trained from the factory facs:make", "pass --model facs:make --checkpoint own.pt")
    assert not (work / "e").exists()


def test_a_checkpoint_of_another_model(work):
    result = run_cli("eval", "--model", "facs:make", "--checkpoint", "zoo.pt", "--data", "data", "--no-store", cwd=work)
    assert_user_error(result, "zoo.pt does not fit the model", "trained as mdepth-tiny: pass --model mdepth-tiny")
    other = run_cli("export", "--model", "mdepth-tiny", "--checkpoint", "own.pt", "--out", "e", "--no-store", cwd=work)
    assert_user_error(other, "own.pt does not fit the model", "trained as facs:make: pass --model facs:make")


def test_a_run_config_naming_a_factory_needs_confirmation(work):
    (work / "cfg.yaml").write_text("model: facs:make\ninput_size: [64, 64]\n")
    result = run_cli("train", "--config", "cfg.yaml", "--data", "data", "--out", "t-cfg", "--steps", "1", cwd=work)
    assert_user_error(result, "config cfg.yaml names facs:make", "pass --model facs:make to confirm it")
    assert not (work / "t-cfg").exists()


# --------------------------------------------------------------------------- prune on your own model (issue 12)
PRUNABLE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.depth = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return self.depth(self.body(x))


def make():
    return Net(32)


def make_other():
    return Net(24)
'''


@pytest.fixture(scope="module")
def prunable(work):
    """prunable.py, a checkpoint of its factory, one pruned from it, a made-up table over its traced layers, and a
    checkpoint of facs:make (one conv: nothing to prune)."""
    import json

    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import prune_to_widths, save_pruned
    from mobiledepth.prune.layers import NULL_LAYER
    from mobiledepth.prune.lut import family_grid
    from mobiledepth.prune.subject import deployed_layers

    (work / "prunable.py").write_text(PRUNABLE)
    import sys

    sys.path.insert(0, str(work))
    try:
        model = resolve_model("prunable:make", seed=0).model.eval()
        save_checkpoint(work / "prunable.pt", model, None, factory="prunable:make")
        save_checkpoint(work / "good.pt", resolve_model("facs:make").model, None, factory="facs:make")
        entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [2.0], "median_us": 2.0}}
        for layers in family_grid(deployed_layers(model, (64, 64)), 8, 3).values():
            for layer in layers:
                cost = 2.0 + 0.01 * layer.h * layer.w * max(layer.channels) / 64
                entries[layer.key] = {"layer": layer.to_dict(), "samples_us": [cost], "median_us": cost}
        save_pruned(work / "pruned.pt", prune_to_widths(model, {"body.0": 16}), "prunable:make")
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("prunable", None)
    (work / "prunable_lut.json").write_text(json.dumps({
        "format": "mobiledepth-lut/1", "kind": "lut", "schema": 1, "device": "host", "delegate": "cpu", "threads": 1,
        "runtime": "made up", "input_size": [64, 64], "model": "prunable:make", "multiple": 8, "points": 3,
        "entries": entries}))
    return work


def _prune(work, *args):
    return run_cli("prune", "--data", "data", "--no-store", "--short-term-steps", "1", "--long-term-steps", "1", *args,
                   cwd=work)


def test_prune_a_model_with_nothing_prunable(prunable):
    before = tree(prunable)
    result = _prune(prunable, "--model", "facs:make", "--checkpoint", "good.pt", "--target-ratio", "0.5",
                    "--out", "p-flat")
    assert_user_error(result, "Good has nothing to prune", "depth output")
    assert tree(prunable) == before


def test_prune_a_target_below_what_the_model_can_reach(prunable):
    result = _prune(prunable, "--model", "prunable:make", "--checkpoint", "prunable.pt", "--lut", "prunable_lut.json",
                    "--target-ratio", "0.05", "--out", "p-low")
    line = assert_user_error(result, "target ratio 0.05 is not reachable", "the smallest allowed widths",
                             "raise --target-ratio above")
    assert float(line.split("raise --target-ratio above ")[1].split()[0]) > 0.05
    assert not (prunable / "p-low").exists()


def test_prune_a_checkpoint_pruned_from_another_model(prunable):
    for command in (("prune", "--data", "data", "--no-store", "--target-ratio", "0.5", "--out", "p-other"),
                    ("eval", "--data", "data", "--no-store", "--input-size", "64x64")):
        result = run_cli(*command, "--model", "prunable:make_other", "--checkpoint", "pruned.pt", cwd=prunable)
        assert_user_error(result, "pruned.pt was pruned from prunable:make", "pass --model prunable:make")
    assert not (prunable / "p-other").exists()
