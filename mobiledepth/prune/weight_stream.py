"""Weight streaming: what a layer's weights cost inside a whole model once the model outgrows the cache.

A single-layer model is timed with its weights hot in cache. Inside a whole model every invoke walks all
the weights in turn; once their total (the model's *footprint*) is larger than what the cache keeps, each
layer reads its weights from memory again. Layers whose cost is their weights (1x1 convs on a 2x2 or 4x4
map, wide 3x3 convs on small maps: the deep end of an encoder) then cost several times their table entry,
while layers whose cost is arithmetic do not change. The table cannot see this; a width variant that
shrinks the deep layers (and so the footprint) is then much faster than a correction fitted on uniform
cuts predicts (FlexibleUNet's random variants: +11-16 % before, docs/benchmarks.md).

The build measures it on the target (:func:`probe_weight_stream`): chains of ``depth`` 1x1 convs,
512 -> 512 channels on a 2x2 map (each about 1 MB of fp32 weights, arithmetic negligible), timed
interleaved in one session; the cost per MB of a chain is (t(depth) - t(1)) / (its footprint - one layer's),
made non-decreasing in the footprint. A layer inside a model then costs
``max(its table time, its weight MB x cost per MB at the model's footprint)`` (:meth:`WeightStream.in_graph`),
a roofline in which the table time is the arithmetic side. On this host (AMD EPYC, 1 MiB L2, 32 MiB L3) the
cost is ~30 µs/MB up to ~13 MB and ~80 µs/MB from ~24 MB, so models under ~13 MB (the paper model 10 MB,
BasicUNet 8 MB) never change and FlexibleUNet (EfficientNet-B0, 21 MB) does.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from pathlib import Path

from mobiledepth.io import write_json_atomic

STREAM_CHANNELS = 512              # 1x1 conv width of a chain layer: 512 x 512 fp32 = 1 MiB of weights
STREAM_SIZE = 2                    # its map (2x2: four output pixels, so the weights are the cost)
STREAM_DEPTHS = (1, 2, 4, 8, 12, 16, 24, 32, 48)  # chain lengths; a build times those up to its model's footprint
BYTES_PER_WEIGHT = 4               # fp32: the precision tables are built in


def weight_bytes(layer) -> int:
    """A layer's weights and bias in bytes (fp32): convolutions only; every other op has none."""
    if layer.op in ("conv", "deconv"):
        cin, cout = layer.channels[0], layer.channels[1]
        return BYTES_PER_WEIGHT * (cin * cout * layer.kernel ** 2 + cout)
    if layer.op == "dwconv":
        return BYTES_PER_WEIGHT * layer.channels[0] * (layer.kernel ** 2 + 1)
    return 0


def footprint_mb(layers) -> float:
    """The weights a whole model walks per invoke, in MB (10^6 bytes)."""
    return sum(weight_bytes(layer) for layer in layers) / 1e6


def chain_mb(depth: int) -> float:
    """Weights of a probe chain of ``depth`` layers, MB."""
    return depth * BYTES_PER_WEIGHT * (STREAM_CHANNELS * STREAM_CHANNELS + STREAM_CHANNELS) / 1e6


def probe_depths(model_mb: float) -> tuple[int, ...]:
    """The chain lengths a model of ``model_mb`` needs: every one up to the first at least as large (two at least)."""
    depths = [d for d in STREAM_DEPTHS if chain_mb(d) < model_mb]
    upto = len(depths) + 1
    return STREAM_DEPTHS[:max(2, upto)]


@dataclass
class WeightStream:
    """The measured cost of streaming weights, by footprint; stored in the table's meta (``weight_stream``)."""

    footprints_mb: list[float]   # chain footprints (increasing), from the second chain on
    us_per_mb: list[float]       # cost per MB there, made non-decreasing in the footprint
    chain_us: dict[int, float]   # depth -> the chain's latency (ratio to the longest x its latency)
    rounds: int
    statistic: str
    seconds: float = 0.0
    reused: bool = False

    def cost_us_per_mb(self, footprint: float) -> float:
        """Cost per MB of weights for a model of ``footprint`` MB: linear between probe footprints, the end
        values outside them."""
        xs, ys = self.footprints_mb, self.us_per_mb
        if footprint <= xs[0]:
            return ys[0]
        if footprint >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, footprint)
        t = (footprint - xs[i - 1]) / (xs[i] - xs[i - 1])
        return ys[i - 1] + t * (ys[i] - ys[i - 1])

    def in_graph(self, layers, hot_us: list[float]) -> list[float]:
        """Each layer's time inside the model: its table time, or its weights streamed at the model's
        footprint when that is longer."""
        per_mb = self.cost_us_per_mb(footprint_mb(layers))
        return [max(hot, weight_bytes(layer) / 1e6 * per_mb) for layer, hot in zip(layers, hot_us)]

    def to_dict(self) -> dict:
        return {"footprints_mb": self.footprints_mb, "us_per_mb": self.us_per_mb,
                "chain_us": {str(d): t for d, t in self.chain_us.items()}, "rounds": self.rounds,
                "statistic": self.statistic, "seconds": round(self.seconds, 2), "reused": self.reused,
                "probe": f"chains of 1x1 convs {STREAM_CHANNELS}->{STREAM_CHANNELS} on {STREAM_SIZE}x{STREAM_SIZE}, "
                         "interleaved in one session; cost per MB = (t(depth) - t(1)) / (MB(depth) - MB(1)), "
                         "non-decreasing in the footprint",
                "rule": "layer in a model = max(table time, weight MB x cost per MB at the model's weight footprint)"}

    @classmethod
    def from_dict(cls, data: dict | None) -> "WeightStream | None":
        if not data:
            return None
        return cls([float(v) for v in data["footprints_mb"]], [float(v) for v in data["us_per_mb"]],
                   {int(d): float(t) for d, t in data["chain_us"].items()}, int(data["rounds"]), data["statistic"],
                   float(data.get("seconds", 0.0)), bool(data.get("reused", False)))

    def line(self) -> str:
        """One line: the cost per MB at the probe's footprints."""
        points = ", ".join(f"{f:.0f} MB: {c:.0f}" for f, c in zip(self.footprints_mb, self.us_per_mb))
        return (f"weight streaming, µs per MB of weights by model footprint: {points}"
                f"{' [from the cache]' if self.reused else ''}")


def stream_from_chains(chain_us: dict[int, float], rounds: int, statistic: str) -> WeightStream:
    """The cost-per-MB curve of timed chains (depth -> µs): marginal over the one-layer chain, then the running
    minimum from the largest footprint down (a cost per MB cannot fall as the footprint grows)."""
    depths = sorted(chain_us)
    base = depths[0]
    points = [(chain_mb(d), (chain_us[d] - chain_us[base]) / (chain_mb(d) - chain_mb(base))) for d in depths[1:]]
    costs = [max(c, 0.0) for _, c in points]
    for i in range(len(costs) - 2, -1, -1):
        costs[i] = min(costs[i], costs[i + 1])
    return WeightStream([f for f, _ in points], costs, dict(chain_us), rounds, statistic)


def probe_weight_stream(model_mb: float, cache: dict, cache_file: Path, device: str, delegate: str, threads: int,
                        statistic: str, rounds: int = 10) -> WeightStream:
    """Build the chains a model of ``model_mb`` needs (:func:`probe_depths`), time them interleaved in one session
    of the shared harness on the table's runner, and fit the curve (:func:`stream_from_chains`). A probe of the
    same chains and statistic in the cache (this runner's file) is reused; a new one is written there."""
    from mobiledepth.prune.timing import time_probe_models

    depths = probe_depths(model_mb)
    key = f"weight_stream|c{STREAM_CHANNELS}|{STREAM_SIZE}x{STREAM_SIZE}|{statistic}|d{'x'.join(map(str, depths))}"
    if key in cache.get("probes", {}):
        stream = WeightStream.from_dict(cache["probes"][key])
        stream.reused = True
        return stream
    start = time.perf_counter()
    chain = {"op": "weight_chain", "h": STREAM_SIZE, "w": STREAM_SIZE, "channels": [STREAM_CHANNELS]}
    longest = depths[-1]
    timing = time_probe_models({d: {**chain, "depth": d} for d in depths}, longest, "weight-streaming probe", device,
                               delegate, threads, statistic, rounds)
    chain_us = {longest: timing.reference_us}
    chain_us.update({int(name): ratio.ratio * timing.reference_us for name, ratio in timing.ratios.items()})
    stream = stream_from_chains(chain_us, timing.rounds, statistic)
    stream.seconds = time.perf_counter() - start
    cache.setdefault("probes", {})[key] = stream.to_dict()
    write_json_atomic(cache_file, cache)
    return stream
