"""Lookup tables: grid, interpolation and estimate on hand-made tables; a real tiny build on host."""

from __future__ import annotations

import json

import pytest

from mobiledepth.arch import resolve_spec
from mobiledepth.errors import UserError
from mobiledepth.prune.groups import set_group_widths
from mobiledepth.prune.layers import NULL_LAYER, Layer, network_layers
from mobiledepth.prune.lut import LatencyTable, family_grid, interpolate, load_table, multiples


def test_multiples_grid():
    assert multiples(64, 8, 5) == [8, 16, 32, 48, 64]
    assert multiples(20, 8, 5) == [8, 16, 20]  # the real (odd) width is always a grid point
    assert multiples(8, 8, 5) == [8]


def test_interpolate_1d_and_2d_by_hand():
    axes = [[8, 16, 32]]
    points = {(8,): 10.0, (16,): 20.0, (32,): 60.0}
    assert interpolate(axes, points, (8,)) == 10.0
    assert interpolate(axes, points, (12,)) == pytest.approx(15.0)
    assert interpolate(axes, points, (24,)) == pytest.approx(40.0)
    assert interpolate(axes, points, (40,)) == pytest.approx(80.0)  # linear extrapolation past the end
    axes2 = [[8, 16], [8, 24]]
    points2 = {(8, 8): 1.0, (8, 24): 3.0, (16, 8): 5.0, (16, 24): 11.0}
    # bilinear at (12, 16): halfway in both -> mean of the 4 corners
    assert interpolate(axes2, points2, (12, 16)) == pytest.approx((1 + 3 + 5 + 11) / 4)
    # (16, 12): on the cin=16 edge, a quarter of the way from 8 to 24
    assert interpolate(axes2, points2, (16, 12)) == pytest.approx(5 + 0.25 * (11 - 5))


def _cost(layer: Layer) -> float:
    """A latency model that (bi)linear interpolation reproduces exactly: bilinear in channels."""
    c = layer.channels
    scale = layer.h * layer.w / 1024.0
    if layer.op == "conv":
        return 2.0 + scale * layer.kernel ** 2 * c[0] * c[1] * 0.01
    if layer.op == "concat":
        return 2.0 + scale * (c[0] + c[1]) * 0.05
    return 2.0 + scale * c[0] * 0.1


def hand_table(spec: dict, size=(64, 64), multiple: int = 8, points: int = 3, null_us: float = 2.0) -> dict:
    """A table JSON whose entries follow _cost on the spec's grid (no measurement)."""
    entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [null_us], "median_us": null_us}}
    for layers in family_grid(network_layers(spec, size), multiple, points).values():
        for layer in layers:
            entries[layer.key] = {"layer": layer.to_dict(), "samples_us": [_cost(layer)], "median_us": _cost(layer)}
    return {"format": "mobiledepth-lut/1", "kind": "lut", "schema": 1, "device": "host", "delegate": "cpu",
            "threads": 1, "runtime": "hand-made", "input_size": list(size), "model": spec["name"],
            "multiple": multiple, "points": points, "entries": entries}


def test_estimate_on_a_hand_made_table_off_grid():
    spec = resolve_spec("mdepth-tiny")
    table = LatencyTable(meta={k: v for k, v in hand_table(spec).items() if k != "entries"},
                         entries=hand_table(spec)["entries"])
    # widths between grid points: 40 hidden (grid 8/28/48 -> 40 is interpolated), 24-wide decoder out
    narrow = set_group_widths(spec, {"enc.block5.hidden": 40, "dec.stage0.hidden": 40, "dec.stage0.out": 8})
    expected = 2.0 + sum(_cost(layer) - 2.0 for layer in network_layers(narrow, (64, 64)))
    assert table.estimate(narrow).total_us == pytest.approx(expected)
    assert table.estimate(narrow).total_us < table.estimate(spec).total_us
    by_op = table.estimate(narrow).by_op()
    assert set(by_op) >= {"overhead", "conv", "dwconv", "concat", "phase_merge", "resize_bilinear", "add", "normalize"}


def test_estimate_is_estimate_layers_of_the_plan():
    spec = resolve_spec("mdepth-tiny")
    data = hand_table(spec)
    table = LatencyTable(meta={k: v for k, v in data.items() if k != "entries"}, entries=data["entries"])
    assert table.estimate(spec).total_us == table.estimate_layers(network_layers(spec, (64, 64))).total_us


def test_graph_correction_fit_by_hand():
    from mobiledepth.errors import StageFailed
    from mobiledepth.prune.lut import fit_correction

    # measured = null + 1.4 x sum + 3 µs x layers, exactly
    sums, counts = [1000.0, 600.0, 300.0], [50, 50, 50]
    measured = [2.0 + 1.4 * s + 3.0 * n for s, n in zip(sums, counts)]
    factor, per_op = fit_correction(sums, counts, measured, null_us=2.0)
    assert factor == pytest.approx(1.4) and per_op == pytest.approx(3.0)
    assert fit_correction([500.0], [40], [752.0], null_us=2.0) == pytest.approx((1.5, 0.0))  # one point: a factor
    with pytest.raises(StageFailed, match="factor"):
        fit_correction([1000.0, 300.0], [50, 50], [500.0, 900.0], null_us=2.0)  # wider measured faster


def test_corrected_estimate_stays_monotone_and_adds_the_per_op_term():
    spec = resolve_spec("mdepth-tiny")
    data = hand_table(spec)
    meta = {k: v for k, v in data.items() if k != "entries"}
    plain = LatencyTable(meta=meta, entries=data["entries"])
    fixed = LatencyTable(meta={**meta, "correction": {"factor": 1.3, "per_op_us": 2.5}}, entries=data["entries"])
    layers = network_layers(spec, (64, 64))
    raw = plain.estimate_layers(layers)
    corrected = fixed.estimate_layers(layers)
    assert corrected.total_us == pytest.approx(2.0 + 1.3 * (raw.total_us - 2.0) + 2.5 * len(layers))
    assert corrected.graph_us == pytest.approx(2.5 * len(layers)) and fixed.estimate_layers(layers, corrected=False).total_us == raw.total_us
    assert sum(corrected.by_op().values()) == pytest.approx(corrected.total_us)
    narrow = set_group_widths(spec, {"enc.block5.hidden": 40, "dec.stage0.hidden": 40, "dec.stage0.out": 8})
    assert fixed.estimate(narrow).total_us < fixed.estimate(spec).total_us
    # a negative per-op term (a two-point fit on a busy machine) never takes the estimate below the plain sum
    floor = LatencyTable(meta={**meta, "correction": {"factor": 1.1, "per_op_us": -1e6}}, entries=data["entries"])
    assert floor.estimate_layers(layers).total_us == pytest.approx(raw.total_us)


def test_estimate_names_a_missing_family():
    spec = resolve_spec("mdepth-tiny")
    data = hand_table(spec)
    data["entries"] = {k: v for k, v in data["entries"].items() if not k.startswith("concat")}
    table = LatencyTable(meta={}, entries=data["entries"])
    with pytest.raises(UserError, match="no entries for concat"):
        table.estimate(spec, (64, 64))


def test_layers_mirror_the_exported_graph(tiny_export):
    """The table's layer list counts the same ops as the TFLite graph the export chain writes."""
    from collections import Counter

    graph = Counter(next(a for a in tiny_export.artifacts if a["path"] == "model_fp32.tflite")["ops"])
    layers = Counter(layer.op for layer in network_layers(resolve_spec("mdepth-tiny"), (64, 64)))
    assert graph["CONV_2D"] == layers["conv"] and graph["DEPTHWISE_CONV_2D"] == layers["dwconv"]
    assert graph["ADD"] == layers["add"] and graph["RESIZE_BILINEAR"] == layers["resize_bilinear"]
    assert graph["DEPTH_TO_SPACE"] == layers["phase_merge"] == 4  # the upsampling blocks, phase-split
    assert graph["CONCATENATION"] == layers["concat"] + layers["phase_merge"]
    assert "RESIZE_NEAREST_NEIGHBOR" not in graph
    assert network_layers(resolve_spec("mdepth-tiny"), (64, 64))[1] == Layer(
        "conv", 64, 64, (3, 8), (False, True), kernel=3, stride=2, act="relu6")


def test_load_table_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "bench"}))
    with pytest.raises(UserError, match="not a mobiledepth lookup table"):
        load_table(tmp_path / "x.json")
    with pytest.raises(UserError, match="does not exist"):
        load_table(tmp_path / "missing.json")


# --------------------------------------------------------------------------- a real build on host
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from mobiledepth.prune.lut import build_lut

    root = tmp_path_factory.mktemp("lut")
    events = []
    result = build_lut("mdepth-tiny", (64, 64), "host", "cpu", 1, out=root / "tiny.json", points=2, runs=3, warmup=1,
                       cache_dir=root / "cache", progress=events.append, calibrate_at=())
    return result, root, events


def test_tiny_build_on_host(built):
    result, root, events = built
    data = json.loads(result.path.read_text())  # a readable JSON file, not a pickle
    assert data["device"] == "host" and data["delegate"] == "cpu" and data["runtime"].startswith("ai-edge-litert")
    assert data["input_size"] == [64, 64]
    spec = resolve_spec("mdepth-tiny")
    wanted = {layer.key for layers in family_grid(network_layers(spec, (64, 64)), 8, 2).values() for layer in layers}
    assert set(data["entries"]) == wanted | {NULL_LAYER.key}
    for entry in data["entries"].values():
        assert len(entry["samples_us"]) == 3 and entry["median_us"] > 0
    assert result.measured == len(data["entries"]) and result.reused == 0
    assert {e.stage for e in events} == {"convert", "time", "stream"}
    stream = result.table.weight_stream  # measured for this runner, stored with the table
    assert stream is not None and data["weight_stream"]["rule"].startswith("layer in a model = max(")
    for stage in ("convert", "time"):  # each phase's count runs up to its total
        last = [e for e in events if e.stage == stage][-1]
        assert last.done == last.total > 0
    estimate = result.table.estimate(spec)
    assert estimate.total_us > estimate.overhead_us > 0
    # every layer of the unpruned spec is an exact grid point
    assert all(layer.key in data["entries"] for layer in network_layers(spec, (64, 64)))


def test_tiny_build_resumes_from_the_cache(built):
    from mobiledepth.prune.lut import build_lut

    result, root, _ = built
    cache_file = next((root / "cache").glob("host-cpu-t1-*.json"))
    cache = json.loads(cache_file.read_text())
    dropped = sorted(cache["entries"])[:4]  # as if the build had stopped before these
    for key in dropped:
        del cache["entries"][key]
    cache_file.write_text(json.dumps(cache))
    again = build_lut("mdepth-tiny", (64, 64), "host", "cpu", 1, out=root / "again.json", points=2, runs=3, warmup=1,
                      cache_dir=root / "cache", calibrate_at=())
    assert again.measured == 4
    assert again.reused == len(again.table.entries) - 4
    old = json.loads(result.path.read_text())["entries"]
    new = json.loads(again.path.read_text())["entries"]
    assert all(new[k] == old[k] for k in old if k not in dropped)  # kept measurements are reused as-is


def test_estimate_is_monotonic_in_width_despite_a_noisy_grid_point():
    from mobiledepth.prune.lut import monotone_grid

    axes = [[8, 16, 24], [8, 16]]
    points = {(8, 8): 10.0, (16, 8): 30.0, (24, 8): 25.0, (8, 16): 12.0, (16, 16): 11.0, (24, 16): 40.0}
    fixed = monotone_grid(axes, points)
    assert fixed[(24, 8)] == 30.0 and fixed[(16, 16)] == 30.0 and fixed[(24, 16)] == 40.0  # running maxima
    assert fixed[(8, 8)] == 10.0 and fixed[(8, 16)] == 12.0  # already monotone: untouched
    for (a, b), value in fixed.items():
        assert all(fixed[(c, d)] <= value for (c, d) in fixed if c <= a and d <= b)


def test_statistics_by_hand():
    from mobiledepth.prune.timing import statistic_of

    samples = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert statistic_of(samples, "median") == 3.0
    assert statistic_of(samples, "min") == 1.0
    assert statistic_of(samples, "p5") == pytest.approx(1.0 + 0.05 * 4 * (2.0 - 1.0))  # linear between the two smallest
    with pytest.raises(UserError, match="unknown statistic"):
        statistic_of(samples, "mean")


def test_table_statistic_reads_the_raw_samples():
    entries = {NULL_LAYER.key: {"layer": NULL_LAYER.to_dict(), "samples_us": [1.0, 9.0, 2.0], "median_us": 2.0}}
    assert LatencyTable(meta={}, entries=entries).null_us == 2.0
    assert LatencyTable(meta={"statistic": "min"}, entries=entries).null_us == 1.0


@pytest.mark.slow
def test_calibrate_and_validate_on_host(built):
    """The correction is fitted on uniform variants; validation times every variant against the unpruned
    model in one session, holds the fitted ones apart, and reuses the exports."""
    from mobiledepth.prune.variants import calibrate, spec_variants, validate_lut

    result, root, _ = built
    work = root / "variants"
    fitted = spec_variants(resolve_spec("mdepth-tiny"), (64, 64), (1.0, 0.5), 0, 8, 0, work)
    correction = calibrate(result.path, fitted, rounds=6)
    assert correction.factor > 0 and [p["name"] for p in correction.points] == ["uniform x1", "uniform x0.5"]
    assert load_table(result.path).correction.factor == correction.factor  # stored in the table
    report = validate_lut(result.path, random_count=1, multipliers=(1.0, 0.5), runs=60, work_dir=work)
    rows = report["rows"]
    assert [r["name"] for r in rows] == ["uniform x1", "uniform x0.5", "random #1"]
    assert [r["held_out"] for r in rows] == [False, False, True]
    assert rows[0]["measured_ratio"] is None and rows[0]["ratio_error"] is None  # the reference
    for row in rows[1:]:  # every error comes with its interval, read from the ratio's CI
        low, high = row["measured_ratio_interval"]
        assert low <= row["measured_ratio"] <= high
        assert row["ratio_error_interval"][0] <= row["ratio_error"] <= row["ratio_error_interval"][1]
        assert row["measured_us"] == pytest.approx(row["measured_ratio"] * report["reference_us"])
    for row in rows:
        assert row["ms_error_interval"][0] <= row["ms_error"] <= row["ms_error_interval"][1]
    assert report["max_abs_error"] == max(abs(r["ratio_error"]) for r in rows[1:])
    exports = sorted(work.glob("v-*/**/*.tflite"))
    stamps = [f.stat().st_mtime_ns for f in exports]
    again = validate_lut(result.path, random_count=1, multipliers=(1.0, 0.5), runs=60, work_dir=work)
    assert len(again["rows"]) == 3 and len(list(work.glob("v-*/export.json"))) == 3  # one export per variant
    assert [f.stat().st_mtime_ns for f in exports] == stamps  # the second run reused the exported variants
