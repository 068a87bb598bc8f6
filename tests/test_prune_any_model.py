"""NetAdapt on any model with real measurement (issue 12): a factory model's host lookup table, a prune whose
target is met on the TFLite latency measured side by side with the unpruned model, and the pieces of
benchmarks/prune_any_model.py (the uniform baseline's table, the summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = '''
import torch


class Tiny(torch.nn.Module):
    """conv-BN-ReLU, a stride-2 conv pair with a residual add, x2 upsampling, a 1-channel depth conv."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.BatchNorm2d(48), torch.nn.ReLU())
        self.down = torch.nn.Sequential(torch.nn.Conv2d(48, 64, 3, stride=2, padding=1), torch.nn.BatchNorm2d(64),
                                        torch.nn.ReLU())
        self.mid = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64))
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.depth = torch.nn.Conv2d(64, 1, 3, padding=1)

    def forward(self, x):
        f = self.down(self.stem(x))
        return self.depth(self.up(torch.relu(f + self.mid(f))))


def make():
    model = Tiny()
    model.input_size = (64, 64)
    return model
'''


@pytest.fixture()
def tiny(user_module):
    """tiny_own:make importable from the current directory, DIW-format data and a checkpoint that remembers it."""
    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.data.synth import generate

    root = user_module("tiny_own", TINY)
    generate(root / "data", 12, (64, 64), seed=0, split="train")
    generate(root / "data", 8, (64, 64), seed=0, split="test")
    model = resolve_model("tiny_own:make", seed=0).model
    return root, save_checkpoint(root / "tiny.pt", model, None, factory="tiny_own:make")


def test_uniform_table_is_monotone_and_starts_unpruned(tiny):
    """The baseline's candidates: uniform cuts of the trained model, narrower never estimated slower."""
    from benchmarks.prune_any_model import uniform_table

    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.lut import load_table
    from mobiledepth.prune.subject import deployed_layers

    tmp, ckpt = tiny
    table = _hand_table(deployed_layers(resolve_model("tiny_own:make", seed=0).model, (64, 64)))
    (tmp / "lut.json").write_text(json.dumps(table))
    rows = uniform_table("tiny_own:make", ckpt, (64, 64), load_table(tmp / "lut.json"), 8,
                         ratios=(0.3, 0.7, 0.85))
    assert rows[0][:2] == (0.0, {})
    estimates = [us for _, _, us in rows]
    assert estimates == sorted(estimates, reverse=True) and estimates[-1] < 0.5 * estimates[0]
    assert all(w % 8 == 0 for _, widths, _ in rows[1:] for name, w in widths.items() if name != "depth")


def test_uniform_widths_never_leave_a_group_uncut():
    """Torch-Pruning's pruner rounds a kept width down and skips the group when that gives 0 (48 channels
    at 0.85 stayed 48); the baseline keeps at least one multiple instead."""
    from mobiledepth.arch.graph import ChannelGraph, GraphGroup
    from mobiledepth.prune.graph import uniform_widths

    graph = ChannelGraph(None, None, {"a": GraphGroup("a", 48, True), "b": GraphGroup("b", 64, True),
                                      "c": GraphGroup("c", 4, True), "d": GraphGroup("d", 1, False)})
    assert uniform_widths(graph, 0.85) == {"a": 8, "b": 8, "c": 4}
    assert uniform_widths(graph, 0.5) == {"a": 24, "b": 32, "c": 4}
    assert uniform_widths(graph, 0.7) == {"a": 8, "b": 16, "c": 4}  # int(14.4) -> 8, int(19.2) -> 16


def test_uniform_candidates_extend_until_they_bracket_netadapt():
    """The table can misplace NetAdapt among the uniform cuts (seed 1 here: every timed cut was slower):
    time narrower ones while all are slower, wider ones while all are faster, stop once bracketed."""
    from benchmarks.prune_any_model import bracketing

    ladder = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65]
    assert bracketing({0.9: 0.96, 0.85: 0.93, 0.8: 0.87}, 0.657, ladder) == [0.75, 0.7]
    assert bracketing({0.7: 0.40, 0.65: 0.38}, 0.59, ladder) == [0.8, 0.75]
    assert bracketing({0.75: 0.86, 0.7: 0.42}, 0.59, ladder) == []
    assert bracketing({0.65: 0.70}, 0.59, ladder) == []  # the narrowest: nothing left to try


def test_uniform_cuts_either_side_of_netadapt_and_the_whdr_between():
    """A coarse uniform ladder (BasicUNet on a 16-grid: x0.75 measured 0.85, x0.7 0.42) rarely lands on
    NetAdapt's latency: the slowest cut at or under it and the fastest above it are both scored, and the
    uniform WHDR is read off the line between them at NetAdapt's ratio."""
    from benchmarks.prune_any_model import bracket, interpolated

    ratios = {0.8: 0.87, 0.75: 0.85, 0.7: 0.42, 0.65: 0.40}
    assert bracket(ratios, 0.64) == [0.7, 0.75]
    assert bracket(ratios, 0.85) == [0.75, 0.8]  # a tie counts as under
    assert bracket(ratios, 0.30) == [0.65]  # every cut slower: the fastest alone
    assert bracket(ratios, 0.95) == [0.8]
    assert interpolated([(0.42, 0.08), (0.85, 0.06)], 0.64) == pytest.approx(0.08 - 0.02 * 22 / 43)
    assert interpolated([(0.42, 0.08)], 0.64) == 0.08


def _hand_table(layers) -> dict:
    """A hand-made table: a layer costs 1 µs + (sum of its channels) x (input height) / 100."""
    from mobiledepth.prune.layers import NULL_LAYER
    from mobiledepth.prune.lut import family_grid

    def cost(layer) -> float:
        return 1.0 + sum(layer.channels) * layer.h / 100

    entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [2.0], "median_us": 2.0}}
    for grid in family_grid(layers, 8, 3).values():
        for layer in grid:
            entries[layer.key] = {"layer": layer.to_dict(), "samples_us": [cost(layer)], "median_us": cost(layer)}
    return {"format": "mobiledepth-lut/1", "kind": "lut", "schema": 1, "device": "host", "delegate": "cpu",
            "threads": 1, "runtime": "hand-made", "input_size": [64, 64], "model": "tiny_own:make", "multiple": 8,
            "points": 3, "entries": entries}


@pytest.mark.slow
def test_factory_prune_meets_a_measured_target(tiny):
    """A real host table over the traced layers, every decision on TFLite latency measured on this machine."""
    from mobiledepth.prune.lut import build_lut
    from mobiledepth.prune.netadapt import PruneSettings, prune

    tmp, ckpt = tiny
    torch.set_num_threads(1)
    lut = build_lut("tiny_own:make", (64, 64), out=tmp / "lut.json", points=2, runs=10, statistic="min",
                    cache_dir=tmp / "cache")
    settings = PruneSettings(model="tiny_own:make", checkpoint=str(ckpt), target_ms=None, target_ratio=0.8,
                             data=str(tmp / "data"), lut=str(lut.path), short_term_steps=2, long_term_steps=2,
                             initial_reduction=0.25, batch_size=4, measure_rounds=10, max_measure_rounds=80,
                             measure_runs=20)
    result = prune(settings, out=tmp / "run", store=False)
    record, final = result.record, result.record["final"]
    assert record["iterations"][0]["reference_tflite"] and record["iterations"][0]["measured_ms"] > 0
    assert final["measured"]["met"] and final["measured"]["high"] <= 0.8  # met = the upper bound under the target
    assert any(it.get("measured") for it in record["iterations"][1:])  # the loop stopped on a measurement
    assert json.loads((result.export_dir / "export.json").read_text())["model"]["name"] == "tiny_own:make"
    assert (result.export_dir / "bench.json").exists() and final["tflite_whdr"] is not None
    widths = final["widths"]
    assert widths["depth"] == 1 and any(widths[g] < w for g, w in record["iterations"][0]["widths"].items())
