"""Fixtures the pruning tests share: mdepth-tiny with generated data and a hand-made table (``setup``), and a
factory model with a hand-made table over its traced layers (``own_factory``)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from test_prune_lut import hand_table  # the same hand-made latency model (tests/prune is on sys.path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mobiledepth.arch import build_model, save_checkpoint
    from mobiledepth.data.synth import generate

    root = tmp_path_factory.mktemp("netadapt")
    generate(root / "data", 12, (64, 64), seed=0, split="train")
    generate(root / "data", 8, (64, 64), seed=0, split="test")
    torch.manual_seed(0)
    model = build_model("mdepth-tiny", with_heads=False)
    ckpt = save_checkpoint(root / "tiny.pt", model, model.spec)
    table = hand_table(model.spec)
    (root / "lut.json").write_text(json.dumps(table))
    return root, ckpt, model.spec


@pytest.fixture()
def own_factory(setup, tmp_path, monkeypatch):
    """tests/prune/test_graph.py's own model as own_prunable:make, a checkpoint that remembers the factory (as
    'mobiledepth train' writes it) and a hand-made table over its traced layers."""
    from test_graph import OWN
    from test_prune_lut import _cost

    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.layers import NULL_LAYER
    from mobiledepth.prune.lut import family_grid
    from mobiledepth.prune.subject import deployed_layers

    (tmp_path / "own_prunable.py").write_text(OWN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("own_prunable", None)
    model = resolve_model("own_prunable:make", seed=0).model
    ckpt = save_checkpoint(tmp_path / "own.pt", model, None, factory="own_prunable:make")
    entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [2.0], "median_us": 2.0}}
    for layers in family_grid(deployed_layers(model, (64, 64)), 8, 3).values():
        for layer in layers:
            entries[layer.key] = {"layer": layer.to_dict(), "samples_us": [_cost(layer)], "median_us": _cost(layer)}
    table = {"format": "mobiledepth-lut/1", "kind": "lut", "schema": 1, "device": "host", "delegate": "cpu",
             "threads": 1, "runtime": "hand-made", "input_size": [64, 64], "model": "own_prunable:make",
             "multiple": 8, "points": 3, "entries": entries}
    (tmp_path / "lut.json").write_text(json.dumps(table))
    yield setup[0], tmp_path, ckpt
    sys.modules.pop("own_prunable", None)
