"""Weight streaming (``prune.weight_stream``): weight bytes by hand, the probe's curve from chain timings, the
roofline a table applies, and a real probe on host (TensorFlow-built chains, the LiteRT interpreter)."""

from __future__ import annotations

import json

import pytest

from mobiledepth.prune.layers import Layer
from mobiledepth.prune.lut import LatencyTable
from mobiledepth.prune.weight_stream import (STREAM_DEPTHS, WeightStream, chain_mb, footprint_mb, probe_depths,
                                             probe_weight_stream, stream_from_chains, weight_bytes)


def conv(cin, cout, k=1, h=2, op="conv"):
    return Layer(op, h, h, (cin, cout), (True, True), k)


def test_weight_bytes_by_hand():
    assert weight_bytes(conv(192, 1152)) == 4 * (192 * 1152 + 1152)
    assert weight_bytes(conv(16, 32, k=3)) == 4 * (16 * 32 * 9 + 32)
    assert weight_bytes(conv(32, 16, k=2, op="deconv")) == 4 * (32 * 16 * 4 + 16)
    assert weight_bytes(Layer("dwconv", 8, 8, (96,), (True,), 3)) == 4 * 96 * 10
    assert weight_bytes(Layer("add", 8, 8, (96,), (True,))) == 0
    assert footprint_mb([conv(192, 1152), Layer("add", 8, 8, (96,), (True,))]) == pytest.approx(0.889344)


def test_probe_depths_reach_the_model_footprint():
    assert probe_depths(0.01) == (1, 2)                  # a tiny model: two chains, cheap
    assert probe_depths(21.4) == (1, 2, 4, 8, 12, 16, 24)  # FlexibleUNet: up to the first chain at least as large
    assert chain_mb(24) >= 21.4 > chain_mb(16)
    assert probe_depths(500.0) == STREAM_DEPTHS


def test_curve_is_marginal_and_never_falls():
    per_layer = {1: 40.0, 2: 30.0, 4: 30.0, 8: 30.0, 16: 80.0}  # µs per extra 1.05 MB layer up to each depth
    chains, total = {1: 50.0}, 50.0
    for previous, depth in zip([1, 2, 4, 8], [2, 4, 8, 16]):
        total += per_layer[depth] * (depth - previous)
        chains[depth] = total
    stream = stream_from_chains(chains, rounds=10, statistic="min")
    assert stream.footprints_mb == [chain_mb(d) for d in (2, 4, 8, 16)]
    marginal = [(chains[d] - 50.0) / (chain_mb(d) - chain_mb(1)) for d in (2, 4, 8, 16)]
    assert stream.us_per_mb[-1] == pytest.approx(marginal[-1])
    assert stream.us_per_mb == sorted(stream.us_per_mb)  # non-decreasing in the footprint
    assert stream.us_per_mb[0] == pytest.approx(min(marginal))
    noisy = {**chains, 2: chains[2] + 40.0}  # a slow short chain cannot make small models dearer
    assert stream_from_chains(noisy, 10, "min").us_per_mb[0] == pytest.approx(stream.us_per_mb[0])


def test_cost_interpolates_and_clamps():
    stream = WeightStream([2.0, 10.0, 20.0], [30.0, 30.0, 80.0], {}, 10, "min")
    assert stream.cost_us_per_mb(1.0) == 30.0 and stream.cost_us_per_mb(50.0) == 80.0
    assert stream.cost_us_per_mb(15.0) == pytest.approx(55.0)
    assert WeightStream.from_dict(json.loads(json.dumps(stream.to_dict()))).us_per_mb == stream.us_per_mb
    assert WeightStream.from_dict(None) is None


def test_in_graph_raises_only_weight_bound_layers_of_a_large_model():
    stream = WeightStream([2.0, 10.0, 20.0], [30.0, 30.0, 80.0], {}, 10, "min")
    deep, shallow = conv(1152, 1152), Layer("dwconv", 64, 64, (32,), (True,), 3)  # 5.3 MB vs 1.3 KB of weights
    hot = [100.0, 200.0]
    small = stream.in_graph([deep, shallow], hot)  # 5.3 MB model: 30 µs/MB -> 159 µs
    assert small == pytest.approx([weight_bytes(deep) / 1e6 * 30.0, 200.0])
    big = [deep] * 5 + [shallow]  # 26.6 MB: 80 µs/MB
    assert stream.in_graph(big, [100.0] * 5 + [200.0]) == pytest.approx([weight_bytes(deep) / 1e6 * 80.0] * 5 + [200.0])
    assert stream.in_graph([shallow], [200.0]) == [200.0]  # arithmetic-bound: the table time stands


def test_table_estimate_applies_the_stream_only_when_measured():
    layer = conv(1152, 1152)
    entries = {layer.key: {"layer": layer.to_dict(), "median_us": 110.0},
               "null": {"layer": Layer("null", 1, 1, (8,), (False,)).to_dict(), "median_us": 10.0}}
    entries = {Layer.from_dict(e["layer"]).key: e for e in entries.values()}
    plain = LatencyTable(meta={}, entries=entries)
    stream = WeightStream([2.0, 10.0, 20.0], [30.0, 30.0, 80.0], {}, 10, "min")
    streamed = LatencyTable(meta={"weight_stream": stream.to_dict()}, entries=entries)
    assert plain.estimate_layers([layer]).total_us == pytest.approx(110.0)
    model = [layer] * 5  # 26.6 MB of weights: each layer streams 5.3 MB at 80 µs/MB = 425 µs > 100 µs hot
    assert plain.estimate_layers(model).total_us == pytest.approx(10.0 + 5 * 100.0)
    assert streamed.estimate_layers(model).total_us == pytest.approx(10.0 + 5 * weight_bytes(layer) / 1e6 * 80.0)
    dw = Layer("dwconv", 64, 64, (32,), (True,), 3)
    entries[dw.key] = {"layer": dw.to_dict(), "median_us": 210.0}
    both = LatencyTable(meta={"weight_stream": stream.to_dict()}, entries=entries)
    assert both.estimate_layers(model + [dw]).total_us == pytest.approx(
        10.0 + 5 * weight_bytes(layer) / 1e6 * 80.0 + 200.0)  # the depthwise layer keeps its table time


def test_real_probe_on_host_and_its_cache(tmp_path):
    cache_file, cache = tmp_path / "cache.json", {}
    stream = probe_weight_stream(0.5, cache, cache_file, "host", "cpu", 1, "min", rounds=4)
    assert sorted(stream.chain_us) == [1, 2] and stream.chain_us[2] > stream.chain_us[1] > 0
    assert len(stream.us_per_mb) == 1 and stream.us_per_mb[0] > 0 and not stream.reused
    stored = json.loads(cache_file.read_text())["probes"]
    assert len(stored) == 1 and next(iter(stored)).startswith("weight_stream|c512|2x2|min|d1x2")
    again = probe_weight_stream(0.5, cache, cache_file, "host", "cpu", 1, "min")
    assert again.reused and again.us_per_mb == stream.us_per_mb  # from the cache, nothing built or timed


def test_cli_refuses_a_negative_calibrate_random(tmp_path):
    from tests.faults.cli_faults import assert_user_error, run_cli

    result = run_cli("lut", "build", "--model", "mdepth-tiny", "--calibrate-random", "-1", "--out",
                     str(tmp_path / "t.json"), cwd=tmp_path)
    assert_user_error(result, "--calibrate-random")
    assert not (tmp_path / "t.json").exists()
