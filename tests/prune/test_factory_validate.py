"""lut validate --model module:factory: seeded random per-group width variants beside the uniform ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_factory_estimates import _table  # noqa: E402  (a hand-made table over traced layers)
from test_graph import OWN  # noqa: E402  (conv-BN-ReLU, residual add, depthwise, skip concat, a head)

from mobiledepth.prune import variants as lut_variants  # noqa: E402

SIZE = (64, 64)
REF = "own_prunable:make"


@pytest.fixture()
def own(user_module, tmp_path, monkeypatch):
    """own_prunable:make importable, and an exporter double that records what each variant would export."""
    from mobiledepth.prune.graph import group_widths

    user_module("own_prunable", OWN)
    exported = []

    def export(ref, model_hash, size, work, widths=None, model=None):
        exported.append({"widths": widths, "model_widths": group_widths(model, size) if widths else None})
        path = work / f"v{len(exported)}.tflite"
        path.write_bytes(b"")
        return f"key{len(exported)}", path

    monkeypatch.setattr(lut_variants, "exported_factory", export)
    return tmp_path, exported


def test_random_variants_are_seeded_on_the_tables_multiple_and_cut_as_exported(own):
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import build_graph, cut_to_widths
    from mobiledepth.prune.subject import deployed_layers

    tmp, exported = own
    variants = lut_variants.factory_variants(REF, SIZE, (1.0, 0.5), 16, tmp, random_count=3, seed=3)
    assert [v.name for v in variants] == ["uniform x1", "uniform x0.5", "random #1", "random #2", "random #3"]
    full = build_graph(resolve_model(REF).model, SIZE)
    randoms = variants[2:]
    for v, sent in zip(randoms, exported[2:]):
        assert sent["widths"] == sent["model_widths"] == v.widths  # the exported model is cut to the variant's widths
        for group in full.groups.values():
            if group.prunable:
                assert v.widths[group.name] % 16 == 0 and 16 <= v.widths[group.name] <= group.width
            else:
                assert v.widths[group.name] == group.width
        cut = cut_to_widths(resolve_model(REF).model, v.widths, input_size=SIZE)
        assert v.layers == deployed_layers(cut, SIZE)  # what the table estimates is the cut model's trace
    assert len({json.dumps(v.widths, sort_keys=True) for v in randoms}) > 1
    again = lut_variants.factory_variants(REF, SIZE, (1.0,), 16, tmp, random_count=3, seed=3)[1:]
    other = lut_variants.factory_variants(REF, SIZE, (1.0,), 16, tmp, random_count=3, seed=4)[1:]
    assert [v.widths for v in again] == [v.widths for v in randoms]  # the seed decides
    assert [v.widths for v in other] != [v.widths for v in randoms]
    assert [v.name for v in lut_variants.factory_variants(REF, SIZE, (1.0, 0.6), 16, tmp)] == ["uniform x1", "uniform x0.6"]


def test_lut_validate_times_the_random_variants_of_a_factory(own, monkeypatch, capsys):
    from mobiledepth.cli import main
    from mobiledepth.prune.subject import deployed_layers
    from mobiledepth.arch.resolve import resolve_model

    tmp, _ = own
    table = _table(deployed_layers(resolve_model(REF).model, SIZE), tmp / "lut.json", SIZE)
    data = json.loads(table.path.read_text())
    data["multiple"] = 16
    table.path.write_text(json.dumps(data))
    timed = []

    class Stop(Exception):
        pass

    def time_variants(variants, table, rounds):
        timed.append([(v.name, v.widths) for v in variants])
        raise Stop

    monkeypatch.setattr(lut_variants, "time_variants", time_variants)
    with pytest.raises(Stop):
        main(["lut", "validate", str(table.path), "--model", REF, "--random", "2", "--seed", "5",
              "--multipliers", "1.0,0.5", "--work-dir", str(tmp / "work")])
    names = [name for name, _ in timed[0]]
    assert names == ["uniform x1", "uniform x0.5", "random #1", "random #2"]  # timed with the uniform ones
    expected = lut_variants.factory_variants(REF, SIZE, (1.0,), 16, tmp, random_count=2, seed=5)[1:]
    assert [widths for _, widths in timed[0][2:]] == [v.widths for v in expected]  # --seed seeds them
