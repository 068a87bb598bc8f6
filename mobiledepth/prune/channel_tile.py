"""``--multiple auto``: the channel tile of the table's runner, probed on the model's costliest prunable conv
(its output channels varied, timed interleaved in one session) and chosen as the largest tile whose step
function the times follow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mobiledepth.errors import UserError
from mobiledepth.io import write_json_atomic
from mobiledepth.prune.layers import Layer
from mobiledepth.prune.timing import SessionTiming, time_probe_models


TILE_CANDIDATES = (4, 8, 16, 32)          # tiles `--multiple auto` chooses from
TILE_PROBE_CHANNELS = (4, 8, 12, 16, 24, 32, 40, 48)  # output channels the probe times
TILE_TOLERANCE = 0.05                     # flat within, and each step above the last by more than, this (at least)


def step_fits(times: dict[int, float], tile: int, tolerance: float = TILE_TOLERANCE) -> bool:
    """Whether ``times`` (output channels -> µs) are a step function of ceil(c / tile): no c cheaper than its
    step's widest probe (the step top) by more than ``tolerance`` — rounding a width up to the tile then costs
    nothing — and every step top above the previous one by more than ``tolerance``; at least two steps must be
    probed, or nothing was seen to rise. One-sided: a width *dearer* than its step top (measured here: 24 output
    channels 1.33x the price of 32) is one more reason to stay on the tile, not a reason against it."""
    steps: dict[int, list[int]] = {}
    for channels in sorted(times):
        steps.setdefault(-(-channels // tile), []).append(channels)
    if len(steps) < 2:
        return False
    tops = [times[max(members)] for _, members in sorted(steps.items())]
    flat = all(times[c] >= times[max(members)] * (1 - tolerance) for members in steps.values() for c in members)
    return flat and all(high > low * (1 + tolerance) for low, high in zip(tops, tops[1:]))


def channel_tile(times: dict[int, float], candidates=TILE_CANDIDATES, tolerance: float = TILE_TOLERANCE) -> int:
    """The largest candidate tile T for which ``times`` are a step function of ceil(c / T) within
    ``tolerance`` (:func:`step_fits`), else the smallest candidate."""
    fitting = [tile for tile in candidates if step_fits(times, tile, tolerance)]
    return max(fitting) if fitting else min(candidates)


def _macs(layer: Layer) -> float:
    return layer.h * layer.w * layer.kernel ** 2 * layer.channels[0] * layer.channels[1] / layer.stride ** 2


def probe_layer(layers: list[Layer]) -> Layer:
    """The layer the tile probe varies: the costliest (MACs) member of the model's costliest full-conv family
    whose output channels pruning changes (its kernel, stride, activation, input size and input channels)."""
    families: dict[str, list[Layer]] = {}
    for layer in layers:
        if layer.op == "conv" and layer.variable[1]:
            families.setdefault(layer.family, []).append(layer)
    if not families:
        raise UserError("--multiple auto times a convolution whose output channels can be pruned, and this model "
                        "has none; give --multiple N (e.g. 8)")
    costliest = max(families.values(), key=lambda members: sum(map(_macs, members)))
    return max(costliest, key=_macs)


@dataclass
class TileProbe:
    """What ``--multiple auto`` measured and chose; stored in the table's meta (``multiple_probe``)."""

    layer: dict                       # the probed conv (channels: its own); output channels varied
    times_us: dict[int, float]        # output channels -> the table's statistic, ratio x reference in one session
    intervals: dict[int, list[float]]  # output channels -> the ratio's 95 % CI, times the reference
    tolerance: float                  # TILE_TOLERANCE, or the widest ratio CI half-width when wider
    fits: dict[int, bool]             # candidate tile -> step_fits
    tile: int
    rounds: int
    statistic: str
    seconds: float = 0.0
    reused: bool = False

    def rule(self) -> str:
        return (f"largest T in {sorted(self.fits)} for which no probe c is more than {self.tolerance * 100:.0f} % below "
                f"t(ceil(c/T)*T) and each step is more than {self.tolerance * 100:.0f} % above the last, else the smallest")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": sorted(self.times_us), "times_us": self.times_us,
                "intervals_us": self.intervals, "tolerance": self.tolerance, "fits": self.fits, "tile": self.tile,
                "rule": self.rule(), "rounds": self.rounds, "statistic": self.statistic,
                "timing": "interleaved in one session of the shared harness; ratio to the widest probe x its latency",
                "seconds": round(self.seconds, 2), "reused": self.reused}

    @classmethod
    def from_dict(cls, data: dict) -> "TileProbe":
        return cls(data["layer"], {int(c): float(t) for c, t in data["times_us"].items()},
                   {int(c): list(v) for c, v in data["intervals_us"].items()}, float(data["tolerance"]),
                   {int(t): bool(f) for t, f in data["fits"].items()}, int(data["tile"]), int(data["rounds"]),
                   data["statistic"], float(data.get("seconds", 0.0)), True)

    def line(self) -> str:
        """One line: what it chose and why."""
        layer = Layer.from_dict(self.layer)
        times = ", ".join(f"{c}: {t:.0f}" if t >= 100 else f"{c}: {t:.1f}" for c, t in sorted(self.times_us.items()))
        verdict = (f"a step function of ceil(c/{self.tile}) within {self.tolerance * 100:.0f} %"
                   if self.fits.get(self.tile) else
                   f"no candidate tile's step function within {self.tolerance * 100:.0f} %, so the smallest")
        fitted = ", ".join(f"{t} {'yes' if f else 'no'}" for t, f in sorted(self.fits.items()))
        return (f"channel tile {self.tile}: conv k{layer.kernel}/s{layer.stride} {layer.h}x{layer.w}, "
                f"{layer.channels[0]} in, {self.statistic} µs by output channels {times} is {verdict} "
                f"(fits: {fitted}){' [from the cache]' if self.reused else ''}; --multiple {self.tile}")


def probe_channel_tile(layers: list[Layer], cache: dict, cache_file: Path, device: str, delegate: str,
                       threads: int, statistic: str, rounds: int = 10) -> TileProbe:
    """Time the model's :func:`probe_layer` at :data:`TILE_PROBE_CHANNELS` output channels, interleaved in one
    session of the shared harness on the table's runner, and choose the tile (:func:`channel_tile`). A probe of
    the same layer and statistic in the cache (this runner's file) is reused; a new one is written there."""
    base = probe_layer(layers)
    key = f"{base.family}|cin{base.channels[0]}|{statistic}|c{'x'.join(map(str, TILE_PROBE_CHANNELS))}"
    if key in cache.get("probes", {}):
        return TileProbe.from_dict(cache["probes"][key])
    start = time.perf_counter()
    probes = {c: base.with_channels((base.channels[0], c)).to_dict() for c in TILE_PROBE_CHANNELS}
    widest = max(probes)
    timing = time_probe_models(probes, widest, "channel-tile probe", device, delegate, threads, statistic, rounds,
                               hint="; give --multiple N instead of auto")
    probe = _tile_probe(base, timing, widest, statistic)
    probe.seconds = time.perf_counter() - start
    cache.setdefault("probes", {})[key] = probe.to_dict()
    write_json_atomic(cache_file, cache)
    return probe


def _tile_probe(base: Layer, timing: "SessionTiming", widest: int, statistic: str) -> TileProbe:
    """The probe's times (each ratio to the widest probe x its latency), its noise and the chosen tile."""
    times = {widest: timing.reference_us}
    intervals = {widest: list(timing.absolute[str(widest)][1:])}
    for name, ratio in timing.ratios.items():
        scaled = ratio.scaled(timing.reference_us)
        times[int(name)], intervals[int(name)] = scaled.ratio, [scaled.low, scaled.high]
    tolerance = max([TILE_TOLERANCE] + [r.half_width for r in timing.ratios.values()])
    fits = {tile: step_fits(times, tile, tolerance) for tile in TILE_CANDIDATES}
    return TileProbe(base.to_dict(), dict(sorted(times.items())), dict(sorted(intervals.items())), tolerance, fits,
                     channel_tile(times, TILE_CANDIDATES, tolerance), timing.rounds, statistic)

