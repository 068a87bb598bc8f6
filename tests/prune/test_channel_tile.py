"""`lut build --multiple auto`: the channel-tile rule on synthetic timings, the probe layer, a real probe on host."""

from __future__ import annotations

import json
import math
import random

import pytest

from mobiledepth.errors import UserError
from mobiledepth.prune.layers import Layer
from mobiledepth.prune.channel_tile import (TILE_CANDIDATES, TILE_PROBE_CHANNELS, TileProbe, channel_tile,
                                            probe_layer, step_fits)


def stepped(tile: int, base: float = 200.0, per_tile: float = 110.0, noise: float = 0.0, seed: int = 0) -> dict:
    """Times of a kernel that computes output channels ``tile`` at a time (the 3x3, 32-in conv measured here:
    8 -> 209, 16 -> 213, 32 -> 325 µs), each times (1 + uniform noise in ±``noise``)."""
    rng = random.Random(seed)
    return {c: (base + per_tile * math.ceil(c / tile)) * (1 + rng.uniform(-noise, noise)) for c in TILE_PROBE_CHANNELS}


def test_step_16_is_16():
    times = stepped(16)
    assert {tile: step_fits(times, tile) for tile in TILE_CANDIDATES} == {4: False, 8: False, 16: True, 32: False}
    assert channel_tile(times) == 16


def test_step_8_is_8():
    assert channel_tile(stepped(8)) == 8
    assert not step_fits(stepped(8), 16)  # 8 and 16 differ by a whole tile's price


def test_step_32_is_32_and_step_4_is_4():
    assert channel_tile(stepped(32)) == 32
    assert channel_tile(stepped(4, per_tile=40.0)) == 4


def test_linear_falls_to_the_smallest():
    linear = {c: 100.0 + 10.0 * c for c in TILE_PROBE_CHANNELS}
    assert not any(step_fits(linear, tile) for tile in (8, 16, 32))
    assert channel_tile(linear) == 4


def test_flat_fits_nothing_and_falls_to_the_smallest():
    flat = {c: 300.0 for c in TILE_PROBE_CHANNELS}  # nothing rises: no step was seen
    assert not any(step_fits(flat, tile) for tile in TILE_CANDIDATES)
    assert channel_tile(flat) == min(TILE_CANDIDATES)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_step_16_within_the_tolerance(seed):
    assert channel_tile(stepped(16, noise=0.02, seed=seed)) == 16


def test_noise_beyond_the_tolerance_is_not_called_a_step():
    times = stepped(16)
    times[8] *= 0.88  # 8 channels 12 % cheaper than 16: rounding 8 up to 16 would cost, beyond 5 %
    assert not step_fits(times, 16)
    assert step_fits(times, 16, tolerance=0.15)


def test_a_width_dearer_than_its_step_top_still_fits():
    """This host's probe (BasicUNet at 64x64: 3x3 conv, 64 in; min µs): 24 output channels cost twice 16 and more
    than 32, 40 and 48 twice 32. No width is cheaper than its 16-step's top, so 16 (what validated within 6.6 %)."""
    measured = {4: 415.1, 8: 413.2, 12: 414.8, 16: 414.1, 24: 831.2, 32: 626.0, 40: 1245.6, 48: 1253.0}
    assert {tile: step_fits(measured, tile) for tile in TILE_CANDIDATES} == {4: False, 8: False, 16: True, 32: False}
    assert channel_tile(measured) == 16


def test_one_step_probed_is_no_evidence():
    assert not step_fits({8: 200.0, 16: 201.0}, 16)


def _conv(h, cin, cout, kernel=3, stride=1, variable=(True, True)):
    return Layer("conv", h, h, (cin, cout), variable, kernel=kernel, stride=stride, act="relu")


def test_probe_layer_is_the_costliest_prunable_conv_family():
    layers = [_conv(64, 3, 32, variable=(False, True)),  # the stem: 3 in
              _conv(64, 32, 32), _conv(64, 32, 32),      # 64x64 3x3 family: 2 x 37.7 M MACs
              _conv(32, 64, 64), _conv(32, 64, 128, kernel=1),
              _conv(64, 32, 1, variable=(True, False)),  # output fixed: not probed
              Layer("dwconv", 64, 64, (512,), (True,), kernel=3)]
    assert probe_layer(layers) == _conv(64, 32, 32)


def test_probe_layer_refuses_a_model_without_a_prunable_conv():
    with pytest.raises(UserError, match="--multiple N"):
        probe_layer([Layer("dwconv", 8, 8, (16,), (True,), kernel=3), _conv(8, 16, 1, variable=(True, False))])


def test_probe_record_round_trips_and_says_why():
    times = stepped(16)
    probe = TileProbe(_conv(64, 32, 32).to_dict(), times, {c: [t * 0.99, t * 1.01] for c, t in times.items()}, 0.05,
                      {t: step_fits(times, t) for t in TILE_CANDIDATES}, 16, 10, "min", 12.5)
    data = json.loads(json.dumps(probe.to_dict()))  # as the table and the cache store it
    again = TileProbe.from_dict(data)
    assert (again.tile, again.times_us, again.fits, again.reused) == (16, probe.times_us, probe.fits, True)
    assert data["channels"] == list(TILE_PROBE_CHANNELS) and "ceil(c/T)" in data["rule"]
    line = probe.line()
    assert line.startswith("channel tile 16:") and "ceil(c/16)" in line and "16 yes" in line and "\n" not in line


def test_cli_refuses_a_word_for_multiple(tmp_path):
    from tests.faults.cli_faults import assert_user_error, run_cli

    result = run_cli("lut", "build", "--model", "mdepth-tiny", "--multiple", "sixteen", "--out", str(tmp_path / "t.json"),
                     cwd=tmp_path)
    assert_user_error(result, "--multiple 'sixteen'")


@pytest.mark.slow
def test_auto_multiple_on_host(tmp_path):
    """A real probe: it ran, chose one of the candidates, recorded it; a second build reuses it (no tile asserted)."""
    from mobiledepth.prune.lut import build_lut

    events = []
    result = build_lut("mdepth-tiny", (64, 64), "host", "cpu", 1, out=tmp_path / "t.json", multiple="auto", points=2,
                       runs=3, warmup=1, cache_dir=tmp_path / "cache", progress=events.append, statistic="min")
    meta = result.table.meta
    probe = meta["multiple_probe"]
    assert meta["multiple"] in TILE_CANDIDATES and meta["multiple"] == probe["tile"] == result.probe.tile
    assert sorted(int(c) for c in probe["times_us"]) == list(TILE_PROBE_CHANNELS)
    assert all(t > 0 for t in probe["times_us"].values()) and probe["rounds"] >= 10 and not probe["reused"]
    assert meta["build_s"]["probe"] > 0
    assert any(e.stage == "probe" and e.event == "done" and e.detail.startswith("channel tile") for e in events)
    from mobiledepth.prune.netadapt import table_multiple

    assert table_multiple(result.table) == meta["multiple"]  # prune's default --multiple
    again = build_lut("mdepth-tiny", (64, 64), "host", "cpu", 1, out=tmp_path / "again.json", multiple="auto",
                      points=2, runs=3, warmup=1, cache_dir=tmp_path / "cache", statistic="min")
    assert again.probe.reused and again.table.meta["multiple"] == meta["multiple"] and again.measured == 0
