"""Latency lookup tables: measure single-layer models on a device, estimate a network by summing.

A table is built for a spec, an input size, a device and a delegate:

1. :func:`mobiledepth.prune.layers.network_layers` lists the latency-relevant layers; layers
   that differ only in channel counts form a *family*, and each family gets a grid of
   channel counts (multiples of ``multiple``, ``points`` per channel dim, plus every width
   the spec actually has).
2. The grid points not yet in the cache are built as single-layer TFLite models by one
   TensorFlow child process (:mod:`mobiledepth.prune.layer_models`) and timed through
   ``android_bench`` (host interpreter or benchmark_model on a phone).
3. Every measurement is kept, with its raw samples, in a cache file keyed by (device,
   delegate, threads, runtime version) and layer config, written after every chunk, so a
   stopped build resumes and another spec reuses identical layers.

4. The graph correction (:class:`GraphCorrection`) is fitted on whole-model width variants timed
   side by side with the unpruned model (``calibrate``).

``LatencyTable.estimate_layers(layers)`` = per-invoke overhead + factor x the sum over layers of
(interpolated layer time - overhead, or its weights streamed at the model's footprint when longer:
:mod:`mobiledepth.prune.weight_stream`, measured by the build) + per-op overhead x layers; the
per-invoke overhead is measured on a one-ADD model (``null``). The layers come from
:func:`network_layers` (a spec) or :func:`mobiledepth.prune.traced_layers.traced_layers` (any module). ``validate_lut`` compares
estimated and measured ratios to the unpruned model, timed in one session.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mobiledepth.errors import MobileDepthError, StageFailed, UserError
from mobiledepth.io import sha256_json, write_json_atomic
from mobiledepth.records import new_record, read_export_record
from mobiledepth.progress import Progress, ProgressFn
from mobiledepth.prune.layers import NULL_LAYER, Layer, network_layers

LUT_FORMAT = "mobiledepth-lut/1"
CACHE_FORMAT = "mobiledepth-lut-cache/1"
STATISTICS = ("median", "p5", "min")


def statistic_of(samples: list[float], name: str = "median") -> float:
    """``median``, ``p5`` (5th percentile, linear) or ``min`` of timed runs.

    On a machine shared with other jobs, preemption inflates medians (2x seen here under a
    load of 5 on 2 cores); ``p5``/``min`` track the uncontended latency."""
    if name not in STATISTICS:
        raise UserError(f"unknown statistic {name!r}; choose one of {', '.join(STATISTICS)}")
    values = sorted(float(v) for v in samples)
    if not values:
        raise UserError("no timed samples to summarise; re-measure")
    if name == "min":
        return values[0]
    from android_bench.result import percentile

    return percentile(values, 50 if name == "median" else 5)


# ----------------------------------------------------------------------------- grid
def multiples(maximum: int, multiple: int, points: int) -> list[int]:
    """About ``points`` multiples of ``multiple`` spread evenly over [multiple, maximum], ending at maximum."""
    top = max(multiple, (maximum // multiple) * multiple)
    values = sorted({top, multiple} | {round(multiple + i * (top - multiple) / max(points - 1, 1)) // multiple * multiple
                                       for i in range(points)})
    values = [v for v in values if v >= multiple]
    return sorted(set(values) | ({maximum} if maximum > 0 else set()))


def family_grid(layers: list[Layer], multiple: int = 8, points: int = 5) -> dict[str, list[Layer]]:
    """family -> the grid layers to measure (cartesian product of per-dim values)."""
    by_family: dict[str, list[Layer]] = {}
    for layer in layers:
        by_family.setdefault(layer.family, []).append(layer)
    grid: dict[str, list[Layer]] = {}
    for family, members in by_family.items():
        dims = []
        for d, variable in enumerate(members[0].variable):
            actual = {m.channels[d] for m in members}
            if not variable:
                dims.append(sorted(actual))
            else:
                dims.append(sorted(set(multiples(max(actual), multiple, points)) | actual))
        grid[family] = [members[0].with_channels(c) for c in itertools.product(*dims)]
    return grid


# ----------------------------------------------------------------------------- the table
@dataclass
class LatencyTable:
    """A loaded table: metadata and entries (layer key -> {"layer", "samples_us", "median_us"})."""

    meta: dict
    entries: dict[str, dict]
    path: Path | None = None
    _families: dict = field(default_factory=dict, repr=False)

    @property
    def statistic(self) -> str:
        return self.meta.get("statistic", "median")

    def entry_us(self, entry: dict) -> float:
        """An entry's latency under the table's statistic (from its raw samples)."""
        if self.statistic == "median" or not entry.get("samples_us"):
            return float(entry["median_us"])
        return statistic_of(entry["samples_us"], self.statistic)

    @property
    def null_us(self) -> float:
        entry = self.entries.get(NULL_LAYER.key)
        return self.entry_us(entry) if entry else 0.0

    def family(self, family: str):
        """(per-dim sorted values, {channels: median}) of one family (cached)."""
        if family not in self._families:
            points = {tuple(e["layer"]["channels"]): self.entry_us(e)
                      for e in self.entries.values() if Layer.from_dict(e["layer"]).family == family}
            if not points:
                self._families[family] = None
            else:
                ndim = len(next(iter(points)))
                axes = [sorted({c[d] for c in points}) for d in range(ndim)]
                self._families[family] = (axes, monotone_grid(axes, points))
        return self._families[family]

    def layer_us(self, layer: Layer) -> float:
        """Latency of one layer: (multi)linear interpolation over its family's grid made monotone
        (a measured grid point reads as itself unless a narrower point timed slower)."""
        fam = self.family(layer.family)
        if fam is None:
            raise UserError(f"the lookup table has no entries for {layer.family}; build a table for this "
                            "spec and input size ('mobiledepth lut build')")
        axes, points = fam
        return interpolate(axes, points, layer.channels)

    @functools.cached_property
    def weight_stream(self):
        """The measured weight-streaming curve (``prune.weight_stream``), or None for a table built without it."""
        from mobiledepth.prune.weight_stream import WeightStream

        return WeightStream.from_dict(self.meta.get("weight_stream"))

    @property
    def correction(self) -> "GraphCorrection":
        """The measured graph correction (identity for a table built without calibration)."""
        return GraphCorrection.from_dict(self.meta.get("correction"))

    def estimate_layers(self, layers: list[Layer], corrected: bool = True) -> "Estimate":
        """Estimated latency (µs) of a network given as its layer list (``network_layers`` or
        ``traced_layers``): per-invoke overhead + per-op graph overhead x layers + factor x the sum of
        (layer - overhead), each layer at least its weights streamed at the model's footprint when the table
        measured that (:mod:`mobiledepth.prune.weight_stream`); ``corrected=False``: the plain sum (factor 1,
        no per-op term). Never below
        the plain sum: a graph is not faster than its layers timed hot (a fit with a negative per-op
        term would otherwise call the thinnest models nearly free)."""
        null = self.null_us
        hot = [max(self.layer_us(layer) - null, 0.0) for layer in layers]
        stream = self.weight_stream
        plain = list(zip(layers, stream.in_graph(layers, hot) if stream else hot))
        fix = self.correction if corrected else GraphCorrection()
        per_layer = [(layer, fix.factor * us) for layer, us in plain]
        graph_us = fix.per_op_us * len(layers)
        if graph_us + sum(t for _, t in per_layer) < sum(t for _, t in plain):
            per_layer, graph_us = plain, 0.0
        return Estimate(null + graph_us + sum(t for _, t in per_layer), per_layer, null, graph_us)

    def estimate(self, spec: dict, input_size: tuple[int, int] | None = None) -> "Estimate":
        """Estimated network latency of ``spec`` (µs), through :meth:`estimate_layers`."""
        return self.estimate_layers(network_layers(spec, tuple(input_size or self.meta["input_size"])))


@dataclass
class Estimate:
    """A network's estimated latency: ``total_us`` = ``overhead_us`` (one invoke) + ``graph_us`` (per-op
    graph overhead) + the per-layer times (already times the correction factor)."""

    total_us: float
    per_layer: list[tuple[Layer, float]]
    overhead_us: float
    graph_us: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000.0

    def by_op(self) -> dict[str, float]:
        out: dict[str, float] = {"overhead": self.overhead_us, "graph": self.graph_us}
        for layer, us in self.per_layer:
            out[layer.op] = out.get(layer.op, 0.0) + us
        return out


@dataclass
class GraphCorrection:
    """What a whole graph costs beyond its single layers, measured (``lut build --calibrate``).

    A single-layer model times with its tensors hot in cache; inside a graph every layer reads what
    the previous one wrote and the interpreter walks many ops, so the graph is slower than the sum
    (1.3-1.6x here, more for thin models). Fitted by least squares on whole-model width variants
    timed side by side: measured - null = ``factor`` x sum(layer - null) + ``per_op_us`` x layers.
    ``factor`` > 0 keeps the estimate monotone in every width; ``per_op_us`` carries the fixed
    part that dominates small models."""

    factor: float = 1.0
    per_op_us: float = 0.0
    points: list = field(default_factory=list)   # what it was fitted on (names, sums, measurements)
    reference_us: float | None = None            # the unpruned model's latency in the fitting session

    @classmethod
    def from_dict(cls, data: dict | None) -> "GraphCorrection":
        if not data:
            return cls()
        return cls(float(data["factor"]), float(data["per_op_us"]), list(data.get("points", [])),
                   data.get("reference_us"))

    def to_dict(self) -> dict:
        return {"factor": self.factor, "per_op_us": self.per_op_us, "points": self.points,
                "reference_us": self.reference_us,
                "model": "measured - null = factor * sum(layer - null) + per_op_us * layers (least squares)"}


def fit_correction(layer_sums: list[float], op_counts: list[int], measured: list[float], null_us: float) -> tuple[float, float]:
    """(factor, per_op_us) by least squares of ``measured - null`` on (layer sum, op count); a single
    point gives a pure factor. Refuses a fit that is not increasing in the layer sum."""
    import numpy as np

    y = np.asarray(measured, dtype=float) - null_us
    sums = np.asarray(layer_sums, dtype=float)
    if len(y) == 1 or np.ptp(sums) == 0:
        factor, per_op = float(y.mean() / sums.mean()), 0.0
    else:
        (factor, per_op), *_ = np.linalg.lstsq(np.column_stack([sums, np.asarray(op_counts, float)]), y, rcond=None)
    if not factor > 0:
        raise StageFailed(f"the graph correction fitted a factor of {factor:.3f} (wider measured faster); the "
                          "calibration timing was too noisy: rebuild on a quieter machine or with more --calibrate widths")
    return float(factor), float(per_op)


def monotone_grid(axes: list[list[int]], points: dict[tuple, float]) -> dict[tuple, float]:
    """The grid made non-decreasing along every channel axis (running maximum, axis by axis).

    A wider layer never does less work; where noise made a wider grid point time faster, the
    estimate would call a cut slower than no cut (seen: x0.75 estimated above x1). Interpolating a
    monotone grid stays monotone, so the network estimate is monotone in every width."""
    out = dict(points)
    for d, axis in enumerate(axes):
        for key in sorted(out, key=lambda c: c[d]):
            below = [c for c in out if c[d] < key[d] and c[:d] + c[d + 1:] == key[:d] + key[d + 1:]]
            if below:
                out[key] = max(out[key], max(out[c] for c in below))
    return out


def _bracket(axis: list[int], value: float) -> tuple[int, int, float]:
    """Indices of the grid cell holding ``value`` and the fraction inside (extrapolates at the ends)."""
    if len(axis) == 1:
        return 0, 0, 0.0
    import bisect

    hi = min(max(bisect.bisect_left(axis, value), 1), len(axis) - 1)
    lo = hi - 1
    return lo, hi, (value - axis[lo]) / (axis[hi] - axis[lo])


def interpolate(axes: list[list[int]], points: dict[tuple, float], channels: tuple[int, ...]) -> float:
    """Multilinear interpolation on a rectangular grid (linear extrapolation outside; never below 0)."""
    brackets = [_bracket(axis, c) for axis, c in zip(axes, channels)]
    total = 0.0
    for corner in itertools.product((0, 1), repeat=len(axes)):
        weight, key = 1.0, []
        for bit, (lo, hi, t), axis in zip(corner, brackets, axes):
            if lo == hi:
                if bit:
                    weight = 0.0
                key.append(axis[lo])
                continue
            weight *= t if bit else 1.0 - t
            key.append(axis[hi] if bit else axis[lo])
        if weight == 0.0:
            continue
        if tuple(key) not in points:
            raise UserError(f"the lookup table's grid has a hole at channels {tuple(key)}; rebuild it with 'mobiledepth lut build'")
        total += weight * points[tuple(key)]
    return max(total, 0.0)


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table JSON written by :func:`build_lut`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"lookup table {path} does not exist; build one with 'mobiledepth lut build'")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}); rebuild it with 'mobiledepth lut build'") from None
    if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
        raise UserError(f"{path} is not a mobiledepth lookup table (format {LUT_FORMAT}); build one with 'mobiledepth lut build'")
    return LatencyTable(meta={k: v for k, v in data.items() if k != "entries"}, entries=data["entries"], path=path)


# ----------------------------------------------------------------------------- measuring
def default_cache_dir() -> Path:
    """``$MOBILEDEPTH_LUT_CACHE`` or ``~/.cache/mobiledepth/lut``."""
    if os.environ.get("MOBILEDEPTH_LUT_CACHE"):
        return Path(os.environ["MOBILEDEPTH_LUT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mobiledepth" / "lut"


def runtime_identity(device: str, delegate: str, threads: int) -> dict:
    """What a measurement depends on besides the layer: device, delegate, threads, runtime version.

    A device/delegate pair its profile cannot run is refused here, before any work."""
    from android_bench.profiles import check_device_delegate

    try:
        check_device_delegate(device, delegate)
    except Exception as exc:  # BenchUserError: unknown device, or a delegate it lacks
        raise UserError(str(exc)) from None
    if device.lower() == "host":
        from android_bench.host import litert_version

        return {"device": "host", "delegate": delegate, "threads": threads, "runtime": f"ai-edge-litert {litert_version()}"}
    from android_bench.runner import resolve_binary
    from android_bench.adb import sha256_of

    try:
        binary = resolve_binary()
    except Exception as exc:  # BenchUserError: no binary configured
        raise UserError(str(exc)) from None
    return {"device": device, "delegate": delegate, "threads": threads,
            "runtime": f"benchmark_model sha256:{sha256_of(binary)[:16]}"}


def _cache_path(cache_dir: Path, identity: dict) -> Path:
    name = f"{identity['device']}-{identity['delegate']}-t{identity['threads']}-{sha256_json(identity)[:12]}.json"
    return cache_dir / name.replace("/", "_").replace(" ", "_")


def _read_cache(path: Path, identity: dict) -> dict:
    if not path.exists():
        return {"format": CACHE_FORMAT, **identity, "entries": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"LUT cache {path} is corrupt; delete it (measurements will be redone)") from None
    return data


def time_models(paths: list[Path], device: str, delegate: str, threads: int, runs: int, warmup: int) -> list[dict]:
    """BenchResults of several .tflite files on one device, through android_bench."""
    from android_bench.errors import BenchError
    from android_bench.runner import ModelItem, RunOptions, benchmark

    try:
        return benchmark([ModelItem(Path(p)) for p in paths], [device],
                         RunOptions(delegate=delegate, threads=threads, runs=runs, warmup=warmup))
    except BenchError as exc:
        raise (UserError if getattr(exc, "exit_code", 1) == 2 else MobileDepthError)(str(exc)) from None


def build_layer_models(jobs: list[dict], out_dir: Path, progress: ProgressFn | None,
                       timeout_s: float | None = None) -> tuple[float, list[str]]:
    """Build the single-layer TFLite models in one guarded TensorFlow child process in the converter
    environment (``mobiledepth.converter_env``; ``mobiledepth.child``: it dies with this process, and
    past ``timeout_s``, default 10 min + 10 s a job); returns (seconds, failures)."""
    from mobiledepth.child import run_child
    from mobiledepth.converter_env import converter_env, worker_command

    if not jobs:
        return 0.0, []
    jobs_file = out_dir / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    start = time.perf_counter()
    command = worker_command(Path(__file__).with_name("layer_models.py"), str(jobs_file), str(out_dir))
    env = {**converter_env(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    failures: list[str] = []
    finished = [0]

    def on_line(line: str) -> None:
        if line.startswith(("done ", "fail ")):
            finished[0] += 1
            if line.startswith("fail "):
                failures.append(line[5:].strip())
            if progress:
                progress(Progress("convert", "layer", done=finished[0], total=len(jobs)))

    log = out_dir / "builder.log"  # TF is chatty: stderr goes to a file, stdout carries the progress lines
    code = run_child(command, log, timeout_s or 600 + 10 * len(jobs), "the layer-model builder", env=env,
                     on_line=on_line)
    if code != 0:
        tail = [l for l in log.read_text(errors="replace").strip().splitlines() if l.strip()][-1:] or ["no output"]
        raise StageFailed(f"the layer-model builder failed ({tail[0][:200]}); check that tensorflow imports in the converter environment ({command[0]})")
    return time.perf_counter() - start, failures


@dataclass
class BuildResult:
    path: Path
    table: LatencyTable
    measured: int      # entries measured in this call
    reused: int        # entries taken from the cache
    convert_s: float
    time_s: float
    failures: list[str]
    calibrate_s: float = 0.0  # exporting and timing the whole-model variants of the graph correction
    probe: TileProbe | None = None  # what --multiple auto measured and chose


@dataclass
class LutTarget:
    """What a table is built for: the model's name, its spec (None for a factory model), its layers."""

    name: str
    spec: dict | None
    size: tuple[int, int]
    layers: list[Layer]
    model_hash: str
    layer_source: str  # "network_layers" (a spec) or "traced_layers" (any module)


def lut_target(model, input_size: tuple[int, int] | None) -> LutTarget:
    """A spec's layers from its plan; any other model (``module:factory``) traced in its deployed form."""
    from mobiledepth.arch import resolve_spec, spec_hash
    from mobiledepth.arch.resolve import is_factory_ref

    if not is_factory_ref(model):
        spec = resolve_spec(model)
        size = tuple(input_size or spec.get("input_size") or (256, 256))
        return LutTarget(spec.get("name"), spec, size, network_layers(spec, size), spec_hash(spec), "network_layers")
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.subject import deployed_layers

    resolved = resolve_model(model)
    size = tuple(input_size or resolved.default_input_size)
    return LutTarget(resolved.name, None, size, deployed_layers(resolved.model, size), resolved.spec_hash,
                     "traced_layers")


def _measure_missing(missing: list[Layer], cache: dict, cache_file: Path, device: str, delegate: str, threads: int,
                     runs: int, warmup: int, chunk: int, progress) -> tuple[float, float, list[str]]:
    """Build and time the layer models not in the cache, writing the cache after every chunk;
    returns (convert seconds, timing seconds, failures)."""
    with tempfile.TemporaryDirectory(prefix="mobiledepth-lut-") as tmp:
        tmp_dir = Path(tmp)
        files = {f"{sha256_json(layer.to_dict())[:20]}.tflite": layer for layer in missing}
        jobs = [{"file": f, "layer": layer.to_dict()} for f, layer in files.items()]
        convert_s, failures = build_layer_models(jobs, tmp_dir, progress)
        ready = [(f, l) for f, l in files.items() if (tmp_dir / f).exists()]
        start = time.perf_counter()
        for offset in range(0, len(ready), chunk):
            part = ready[offset:offset + chunk]
            results = time_models([tmp_dir / f for f, _ in part], device, delegate, threads, runs, warmup)
            for (f, layer), result in zip(part, results):
                if result["failed"]:
                    failures.append(f"{layer.key}: {result['error']}")
                    continue
                cache["entries"][layer.key] = {"layer": layer.to_dict(), "samples_us": result["samples_us"],
                                               "median_us": result["stats"]["median"],
                                               "samples_kind": result["samples_kind"],
                                               "delegation": result["delegation"]["status"],
                                               "measured_at": result["started_at"]}
            cache["tool_version"] = results[0]["tool_version"] if results else None
            write_json_atomic(cache_file, cache)  # resumable: what is measured stays measured
            if progress:
                progress(Progress("time", "layer", done=min(offset + chunk, len(ready)), total=len(ready)))
        return convert_s, time.perf_counter() - start, failures


# ----------------------------------------------------------------------------- channel tile (--multiple auto)
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


def time_probe_models(layers: dict[int, dict], reference: int, what: str, device: str, delegate: str, threads: int,
                      statistic: str, rounds: int, hint: str = "") -> "SessionTiming":
    """Build a probe's models (``layers``: name -> layer dict for :mod:`layer_models`) in one TensorFlow child and
    time them interleaved with ``layers[reference]`` in one session of the shared harness (per turn ``statistic``;
    ``rounds`` first, up to 3x while a ratio's CI is wider than ±2 %); the names become strings."""
    with tempfile.TemporaryDirectory(prefix="mobiledepth-probe-") as tmp:
        files = {name: Path(tmp) / f"probe{name}.tflite" for name in layers}
        _, failures = build_layer_models([{"file": files[n].name, "layer": layer} for n, layer in layers.items()],
                                         Path(tmp), None)
        if failures:
            raise StageFailed(f"the {what} could not build {failures[0]}{hint}")
        return time_against({str(n): f for n, f in files.items() if n != reference}, files[reference], device,
                            delegate, threads, rounds=rounds, max_rounds=3 * rounds, precision=0.02,
                            reduce=lambda block: statistic_of(block, statistic), reference_name=str(reference))


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


CALIBRATE_AT = (1.0, 0.6, 0.4)  # uniform widths the graph correction is fitted on (validation holds out others)
CALIBRATE_RANDOM = 2            # random per-group width variants fitted beside them (uniform cuts alone bend the fit)
CALIBRATE_SEED = 1              # their seed: validation draws with seed 0 by default, so its variants are held out


def build_lut(model: str | dict, input_size: tuple[int, int] | None = None, device: str = "host",
              delegate: str = "cpu", threads: int = 1, out: str | os.PathLike | None = None,
              multiple: int | str = 8, points: int = 5, runs: int = 30, warmup: int = 5, chunk: int = 25,
              cache_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None,
              statistic: str = "median", calibrate_at=(),
              work_dir: str | os.PathLike | None = None, calibrate_random: int = CALIBRATE_RANDOM) -> BuildResult:
    """Measure every grid point of the model's layer families not yet cached; write the table JSON; then,
    when ``calibrate_at`` names widths (``lut build``'s default: :data:`CALIBRATE_AT`), fit the graph
    correction on whole-model width variants, those and ``calibrate_random`` random ones (seed
    :data:`CALIBRATE_SEED`) (exports: minutes; ``prune``'s on-the-fly table skips it).
    ``multiple="auto"``: the grid's multiple is the target's channel tile, measured first (:func:`probe_channel_tile`).
    Every build also measures what weights cost once the model outgrows the cache (``prune.weight_stream``)."""
    statistic_of([1.0], statistic)  # reject an unknown statistic before any work
    auto = multiple == "auto"
    if (not auto and (not isinstance(multiple, int) or multiple < 1)) or points < 2:
        raise UserError(f"--multiple must be 'auto' or >= 1 and --points >= 2 (got {multiple}, {points})")
    target = lut_target(model, input_size)
    size = target.size
    identity = runtime_identity(device, delegate, threads)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = _cache_path(cache_dir, identity)
    cache = _read_cache(cache_file, identity)
    probe = _auto_multiple(target, cache, cache_file, identity, statistic, progress) if auto else None
    multiple = probe.tile if probe else multiple
    grid = family_grid(target.layers, multiple, points)
    wanted = [NULL_LAYER] + [layer for layers in grid.values() for layer in layers]
    wanted = list({layer.key: layer for layer in wanted}.values())
    missing = [layer for layer in wanted if layer.key not in cache["entries"]]
    convert_s = time_s = 0.0
    failures: list[str] = []
    if missing:
        convert_s, time_s, failures = _measure_missing(missing, cache, cache_file, device, delegate, threads, runs,
                                                       warmup, chunk, progress)
    entries = {layer.key: cache["entries"][layer.key] for layer in wanted if layer.key in cache["entries"]}
    if NULL_LAYER.key not in entries or len(entries) < len(wanted):
        raise StageFailed(f"{len(wanted) - len(entries)} of {len(wanted)} layer configs could not be measured "
                          f"(first: {failures[0] if failures else '?'}); what was measured is cached in {cache_file}")
    stream = _weight_stream(target, cache, cache_file, identity, statistic, progress)
    table = {
        "format": LUT_FORMAT, **new_record("lut"),
        **identity, "input_size": list(size), "model": target.name, "spec_hash": target.model_hash,
        "layer_source": target.layer_source,
        "multiple": multiple, "points": points, "runs": runs, "warmup": warmup, "statistic": statistic,
        **({"multiple_probe": probe.to_dict()} if probe else {}),
        "weight_stream": stream.to_dict(),
        "builder": "tensorflow TFLiteConverter.from_concrete_functions (single-layer models)",
        "build_s": {"convert": round(convert_s, 2), "time": round(time_s, 2),
                    **({"probe": 0.0 if probe.reused else round(probe.seconds, 2)} if probe else {}),
                    "stream": 0.0 if stream.reused else round(stream.seconds, 2)},
        "entries": entries,
    }
    path = Path(out) if out else Path("runs") / "lut" / f"{_file_name(target.name)}-{size[0]}x{size[1]}-{device}-{delegate}.json"
    write_json_atomic(path, table)
    calibrate_s = _calibrate_build(path, target, calibrate_at, calibrate_random, work_dir, progress)
    return BuildResult(path, load_table(path), len(missing), len(wanted) - len(missing), convert_s, time_s, failures,
                       calibrate_s, probe)


def _auto_multiple(target: LutTarget, cache: dict, cache_file: Path, identity: dict, statistic: str,
                   progress: ProgressFn | None) -> TileProbe:
    """``--multiple auto``: the channel tile probed on the table's runner, announced in one progress line."""
    if progress:
        layer = probe_layer(target.layers)
        progress(Progress("probe", "start", detail=f"probing the channel tile on {identity['device']}: conv "
                          f"k{layer.kernel}/s{layer.stride} at {layer.h}x{layer.w}, {layer.channels[0]} in, "
                          f"{len(TILE_PROBE_CHANNELS)} output widths interleaved"))
    probe = probe_channel_tile(target.layers, cache, cache_file, identity["device"], identity["delegate"],
                               identity["threads"], statistic)
    if progress:
        progress(Progress("probe", "done", seconds=probe.seconds, detail=probe.line()))
    return probe


def _weight_stream(target: LutTarget, cache: dict, cache_file: Path, identity: dict, statistic: str,
                   progress: ProgressFn | None):
    """The weight-streaming curve up to the model's footprint, measured on the table's runner (or cached),
    announced in one progress line."""
    from mobiledepth.prune.weight_stream import footprint_mb, probe_depths, probe_weight_stream

    model_mb = footprint_mb(target.layers)
    if progress:
        progress(Progress("stream", "start", detail=f"probing weight streaming on {identity['device']}: the model "
                          f"walks {model_mb:.1f} MB of weights; {len(probe_depths(model_mb))} conv chains interleaved"))
    stream = probe_weight_stream(model_mb, cache, cache_file, identity["device"], identity["delegate"],
                                 identity["threads"], statistic)
    if progress:
        progress(Progress("stream", "done", seconds=stream.seconds, detail=stream.line()))
    return stream


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _calibrate_build(path: Path, target: LutTarget, calibrate_at, random_count: int, work_dir, progress) -> float:
    """Fit and store the graph correction on the model's uniform width variants (a spec's, or a factory
    model's cut by ``prune.graph.uniform_prune``) and ``random_count`` random ones; returns the seconds it took."""
    if not calibrate_at:
        return 0.0
    start = time.perf_counter()
    work = Path(work_dir) if work_dir else variants_dir(path)
    work.mkdir(parents=True, exist_ok=True)
    table = load_table(path)
    if target.spec is not None:
        variants = spec_variants(target.spec, target.size, calibrate_at, random_count, table.meta["multiple"],
                                 CALIBRATE_SEED, work, progress)
    else:
        variants = factory_variants(target.name, target.size, calibrate_at, table.meta["multiple"], work, progress,
                                    random_count, CALIBRATE_SEED)
    if progress:
        progress(Progress("calibrate", "start", detail=f"timing {len(variants)} whole models for the graph correction"))
    calibrate(path, variants)
    seconds = time.perf_counter() - start
    data = json.loads(path.read_text())
    data["build_s"]["calibrate"] = round(seconds, 2)
    write_json_atomic(path, data)
    return seconds


# ----------------------------------------------------------------------------- validation
def variant_specs(spec: dict, multipliers=(1.0, 0.75, 0.5, 0.35), random_count: int = 3, multiple: int = 8,
                  seed: int = 0) -> list[tuple[str, dict]]:
    """Width variants of a spec: uniform multipliers and random per-group widths (structure kept)."""
    from mobiledepth.prune.groups import channel_groups, set_group_widths, structure

    groups = [g for g in channel_groups(spec) if g.prunable]
    base = structure(spec)
    rng = random.Random(seed)
    out = []

    def fit(widths: dict[str, int]) -> dict:
        """Nudge widths (down, then up) until the structure equals the original's."""
        widths = dict(widths)
        for g in groups:
            for step in range(0, 64):
                trial = set_group_widths(spec, widths)
                if structure(trial) == base:
                    break
                delta = multiple * ((step // 2) + 1) * (-1 if step % 2 == 0 else 1)
                widths[g.name] = min(g.width, max(multiple, widths[g.name] + delta))
        spec_out = set_group_widths(spec, widths)
        if structure(spec_out) != base:
            raise UserError("could not find widths keeping the network structure; use fewer constraints")
        return spec_out

    for m in multipliers:
        widths = {g.name: min(g.width, max(multiple, int(round(g.width * m / multiple)) * multiple)) for g in groups}
        out.append((f"uniform x{m:g}", fit(widths)))
    for i in range(random_count):
        widths = {g.name: rng.choice(range(multiple, g.width + 1, multiple)) if g.width >= multiple else g.width
                  for g in groups}
        out.append((f"random #{i + 1}", fit(widths)))
    return out


def export_spec(spec: dict, input_size: tuple[int, int], out_dir: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Export ``spec`` to fp32 TFLite with the project's export chain; returns (tflite, run_dir)."""
    import yaml

    from mobiledepth.io import write_text_atomic

    out_dir = Path(out_dir)
    spec_file = out_dir.with_name(out_dir.name + ".spec.yaml")  # export takes names and YAML paths
    write_text_atomic(spec_file, yaml.safe_dump(spec, sort_keys=False))
    return export_fp32(str(spec_file), input_size, out_dir, checkpoint)


def export_fp32(model: str, input_size: tuple[int, int], out_dir: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``model`` (a spec YAML, zoo name or ``module:factory``) exported to fp32 TFLite through the route the
    table's layers mirror (:data:`VARIANT_ROUTE`, not every route); returns (tflite, run_dir)."""
    from mobiledepth.export import export_model

    result = export_model(model=model, checkpoint=checkpoint, input_size=tuple(input_size), precisions="fp32",
                          out=out_dir, converter=VARIANT_ROUTE)
    return Path(result.run_dir) / route_tflite(result.record["artifacts"])["path"], Path(result.run_dir)


def measure_spec(spec: dict, input_size: tuple[int, int], device: str, delegate: str, threads: int,
                 out_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 runs: int = 50, warmup: int = 5, statistic: str = "median") -> dict:
    """Export ``spec`` (fp32 TFLite, the project's export chain) and time it end to end on the device.

    ``latency_us`` is the chosen statistic of the timed runs (``median_us`` is always there too)."""
    tflite, run_dir = export_spec(spec, input_size, out_dir, checkpoint)
    bench = time_models([tflite], device, delegate, threads, runs, warmup)[0]
    if bench["failed"]:
        raise StageFailed(f"timing {tflite} on {device} failed: {bench['error']}")
    samples = bench["samples_us"] or [bench["stats"]["median"]]
    return {"tflite": str(tflite), "run_dir": str(run_dir), "bench": bench, "median_us": bench["stats"]["median"],
            "latency_us": statistic_of(samples, statistic), "statistic": statistic}


class DeviceRunTimer:
    """One benchmark_model invocation on a phone per ``time_once`` (its median, µs): a phone's turn in
    the interleaved harness (models alternate invocation by invocation, a cool-down between turns)."""

    def __init__(self, path: Path, device: str, delegate: str, threads: int, runs: int, warmup: int = 5):
        self.args = ([path], device, delegate, threads, runs, warmup)

    def time_once(self) -> float:
        result = time_models(*self.args)[0]
        if result["failed"]:
            raise StageFailed(f"timing {self.args[0][0]} on {self.args[1]} failed: {result['error']}")
        return float(result["stats"]["median"])


@dataclass
class SessionTiming:
    """Models timed interleaved with a reference in one session, summarised by the shared statistic
    (``android_bench.interleave``): each model's median per-round ratio to the reference, with its CI."""

    ratios: dict[str, object]  # name -> RatioInterval (model / reference)
    reference_us: float        # the reference's median turn in this session
    absolute: dict[str, tuple[float, float, float]]  # name -> (median, low, high) of its turns, µs
    rounds: int

    def latency_us(self, name: str):
        """``name``'s latency interval in µs: its ratio interval times the reference's latency here."""
        return self.ratios[name].scaled(self.reference_us)


# fresh interpreters every this many rounds: where an instance lands in memory shifts its speed by
# several percent (docs/ci.md); with one instance per model per session, two sessions of the same
# pair differed by 1-4 % (docs/benchmarks.md, issue 11: reloading is the remedy tried, not proven)
HOST_RELOAD_ROUNDS = 5


def timing_harness(paths: list[Path], device: str, delegate: str, threads: int, burst: int = 10,
                   device_runs: int = 20, cooldown_s: float = 5.0):
    """The shared harness for ``paths``: on host, rotated turns of ``burst`` invokes (the first untimed:
    caches warm as in an app), interpreters loaded anew every HOST_RELOAD_ROUNDS rounds; on a phone,
    one benchmark_model invocation per turn and a cool-down."""
    from functools import partial

    from android_bench.interleave import Interleaved

    if device.lower() == "host":
        from android_bench.host import HostModel

        return Interleaved([partial(HostModel, path, threads) for path in paths], block=max(burst - 1, 1), untimed=1,
                           order="rotate", reload_every=HOST_RELOAD_ROUNDS, drop_failures=False)
    return Interleaved([partial(DeviceRunTimer, path, device, delegate, threads, device_runs) for path in paths],
                       order="rotate", pause_s=cooldown_s, drop_failures=False)


def time_against(models: dict[str, Path], reference: Path, device: str = "host", delegate: str = "cpu",
                 threads: int = 1, rounds: int = 20, max_rounds: int = 120, precision: float = 0.02,
                 settled=None, reduce=None, reference_name: str = "reference",
                 cooldown_s: float = 5.0) -> SessionTiming:
    """Time ``models`` interleaved with ``reference`` until every ratio's CI is within ``precision``
    (or ``settled(timing)`` says the decision is clear), ``rounds`` .. ``max_rounds`` rounds.

    ``reduce`` turns one turn's timed block into one value (default: its median)."""
    from android_bench.interleave import measure_ratios

    names = list(models)
    harness = timing_harness([Path(models[n]) for n in names] + [Path(reference)], device, delegate, threads,
                             cooldown_s=cooldown_s)
    ref = len(names)

    def summary() -> SessionTiming:
        return _session_summary(harness, names, ref, reduce, reference_name)

    measure_ratios(harness, ref, rounds, max_rounds, settled=(lambda _: settled(summary())) if settled else None,
                   precision=precision, reduce=reduce)
    return summary()


def _session_summary(harness, names: list[str], ref: int, reduce, reference_name: str) -> SessionTiming:
    from android_bench.interleave import block_values, median_interval, ratio_interval

    return SessionTiming(
        ratios={n: ratio_interval(harness.blocks[i], harness.blocks[ref], reduce=reduce) for i, n in enumerate(names)},
        reference_us=median_interval(block_values(harness.blocks[ref], reduce))[0],
        absolute={n: median_interval(block_values(harness.blocks[i], reduce))
                  for i, n in enumerate(names + [reference_name])},
        rounds=harness.rounds)


# the route whose graph the table's layers mirror (onnx2tf's PAD + VALID stride-2 convs, the phase-split
# form); variants are always exported and timed through it, whatever route export would recommend
VARIANT_ROUTE = "onnx2tf"


def route_tflite(artifacts: list[dict]) -> dict | None:
    """The fp32 TFLite artifact of :data:`VARIANT_ROUTE` (records without routes: the first TFLite)."""
    tflites = [a for a in artifacts if a.get("format") == "tflite"]
    return next((a for a in tflites if a.get("route", VARIANT_ROUTE) == VARIANT_ROUTE), None)


def _reused_export(out_dir: Path) -> Path | None:
    """The fp32 TFLite file of a complete export in ``out_dir``, if there is one."""
    try:
        artifact = route_tflite(read_export_record(out_dir).data["artifacts"])
    except MobileDepthError:
        return None  # no complete export there yet
    return out_dir / artifact["path"] if artifact and (out_dir / artifact["path"]).is_file() else None


def exported_variant(variant: dict, size: tuple[int, int], work: Path) -> Path:
    """The variant's fp32 TFLite file: reused when this spec and size were exported into ``work``
    before (the folder is named by their hash), exported now otherwise."""
    out_dir = work / f"v-{variant_key(variant, size)}"
    return _reused_export(out_dir) or export_spec(variant, size, out_dir)[0]


def exported_factory(ref: str, model_hash: str, size: tuple[int, int], work: Path,
                     widths: dict | None = None, model=None) -> tuple[str, Path]:
    """A factory model's fp32 TFLite file, exported once into ``work`` (reused later); returns (key, file).
    With ``widths``, ``model`` is the factory's model cut to them, exported from a pruned checkpoint."""
    key = sha256_json({"factory": ref, "model": model_hash, "size": list(size), **({"widths": widths} if widths else {})})[:16]
    out_dir = work / f"v-{key}"
    found = _reused_export(out_dir)
    if found is None:
        checkpoint = None
        if widths:
            from mobiledepth.prune.graph import save_pruned

            checkpoint = save_pruned(work / f"v-{key}.pt", model, ref, tuple(size))
        found = export_fp32(ref, size, out_dir, checkpoint)[0]
    return key, found


def random_group_widths(graph, count: int, multiple: int, seed: int = 0) -> list[dict[str, int]]:
    """``count`` random width choices for a channel graph (``arch.graph.ChannelGraph``), seeded: every prunable
    group at a multiple of ``multiple`` up to its width, drawn uniformly (a group narrower than ``multiple`` stays)."""
    rng = random.Random(seed)
    return [{g.name: rng.choice(range(multiple, g.width + 1, multiple)) if g.width >= multiple else g.width
             for g in graph.prunable()} for _ in range(count)]


def factory_variants(ref: str, size: tuple[int, int], multipliers, multiple: int, work: Path,
                     progress: ProgressFn | None = None, random_count: int = 0, seed: int = 0) -> list[TimedVariant]:
    """A factory model (the reference, "uniform x1"), its uniform width variants (every prunable channel group cut
    by Torch-Pruning's magnitude pruner, ``prune.graph.uniform_prune``) and ``random_count`` random per-group
    width variants (:func:`random_group_widths`, seeded by ``seed``; cut keeping the channels of highest
    magnitude), each exported once."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import build_graph, group_widths, prune_to_widths, uniform_prune

    def uniform(m: float):
        return lambda model: uniform_prune(model, 1.0 - m, multiple, size) if m < 1.0 else None

    def cut_to(widths: dict[str, int]):
        return lambda model: group_widths(prune_to_widths(model, widths, size), size)

    cuts = [(f"uniform x{m:g}", uniform(m)) for m in (1.0,) + tuple(m for m in multipliers if m != 1.0)]
    if random_count:
        graph = build_graph(resolve_model(ref).model, size)
        cuts += [(f"random #{i + 1}", cut_to(widths))
                 for i, widths in enumerate(random_group_widths(graph, random_count, multiple, seed))]
    return [_factory_variant(ref, size, name, cut, work, progress) for name, cut in cuts]


def _factory_variant(ref: str, size: tuple[int, int], name: str, cut, work: Path, progress) -> TimedVariant:
    """One factory variant: a fresh model, ``cut(model)`` in place (returns its group widths, or None for the
    uncut model), exported once into ``work``, with its traced layers."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.subject import deployed_layers

    resolved = resolve_model(ref)
    widths = cut(resolved.model)
    if progress:
        progress(Progress("export", "start", detail=f"exporting {ref} {name} (or reusing its export)"))
    key, tflite = exported_factory(ref, resolved.spec_hash, size, work, widths, resolved.model)
    return TimedVariant(name, key, widths or {}, deployed_layers(resolved.model, size), tflite)


def variants_dir(table_path: str | os.PathLike) -> Path:
    """Where a table's exported width variants live (calibration and validation share them)."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + "-variants")


def variant_key(variant: dict, size: tuple[int, int]) -> str:
    """A variant's identity (its spec and input size), as its export folder is named."""
    return sha256_json({"spec": variant, "size": list(size)})[:16]


@dataclass
class TimedVariant:
    """A width variant ready to time: its layers (what the table estimates) and its exported TFLite file."""

    name: str
    key: str
    widths: dict
    layers: list[Layer]
    tflite: Path


def spec_variants(spec: dict, size: tuple[int, int], multipliers, random_count: int, multiple: int, seed: int,
                  work: Path, progress: ProgressFn | None = None) -> list[TimedVariant]:
    """The unpruned spec first ("uniform x1", the reference), then uniform and random width variants,
    each exported once into ``work`` (reused later)."""
    from mobiledepth.prune.groups import group_widths

    multipliers = (1.0,) + tuple(m for m in multipliers if m != 1.0)
    out = []
    for name, variant in variant_specs(spec, multipliers, random_count, multiple, seed):
        if progress:
            progress(Progress("export", "start", detail=f"exporting {name} (or reusing its export)"))
        out.append(TimedVariant(name, variant_key(variant, size), group_widths(variant), network_layers(variant, size),
                                exported_variant(variant, size, work)))
    return out


def time_variants(variants: list[TimedVariant], table: "LatencyTable", rounds: int) -> SessionTiming:
    """Every variant timed side by side with the first (the unpruned reference) in one session of the
    shared harness: per turn the table's statistic; ``rounds`` first, up to 4x while a ratio's CI is
    wider than ±1 %."""
    meta = table.meta
    reference = variants[0]
    return time_against({v.name: v.tflite for v in variants[1:]}, reference.tflite, meta["device"], meta["delegate"],
                        meta["threads"], rounds=rounds, max_rounds=rounds * 4, precision=0.01,
                        reduce=lambda block: statistic_of(block, table.statistic), reference_name=reference.name)


def calibrate(table_path: str | os.PathLike, variants: list[TimedVariant], rounds: int = 30) -> GraphCorrection:
    """Fit the table's graph correction on ``variants`` (the first is the reference) timed in one session,
    and store it in the table; returns it."""
    table = load_table(table_path)
    timing = time_variants(variants, table, rounds)
    null = table.null_us
    points = []
    for v in variants:
        plain = table.estimate_layers(v.layers, corrected=False)
        ratio = timing.ratios[v.name].ratio if v is not variants[0] else 1.0
        points.append({"name": v.name, "variant": v.key, "layers": len(v.layers), "layer_sum_us": plain.total_us - null,
                       "ratio": ratio, "measured_us": ratio * timing.reference_us})
    factor, per_op = fit_correction([p["layer_sum_us"] for p in points], [p["layers"] for p in points],
                                    [p["measured_us"] for p in points], null)
    correction = GraphCorrection(factor, per_op, points, timing.reference_us)
    data = json.loads(Path(table_path).read_text())
    data["correction"] = correction.to_dict()
    write_json_atomic(table_path, data)
    return correction


@dataclass
class ValidationRow:
    """One variant: the table's estimate, and its latency measured side by side with the reference.

    ``ratio`` is the measured ratio to the reference (None for the reference itself); the ms values are
    that ratio times the reference's latency in the same session (the reference: its own turns)."""

    name: str
    widths: dict
    estimate_us: float
    estimate_ratio: float                  # estimate / the reference's estimate
    ratio: object | None                   # RatioInterval, model / reference
    measured_us: tuple[float, float, float]  # (median, low, high)
    held_out: bool                         # not one of the variants the correction was fitted on

    @property
    def ratio_error(self) -> float | None:
        """(estimated ratio) / (measured ratio) - 1: the error NetAdapt's decisions see."""
        return None if self.ratio is None else self.estimate_ratio / self.ratio.ratio - 1

    @property
    def ratio_error_interval(self) -> tuple[float, float] | None:
        if self.ratio is None:
            return None
        return self.estimate_ratio / self.ratio.high - 1, self.estimate_ratio / self.ratio.low - 1

    @property
    def ms_error(self) -> float:
        """The table's ms vs the ms measured in this session (includes the session's drift)."""
        return self.estimate_us / self.measured_us[0] - 1

    @property
    def ms_error_interval(self) -> tuple[float, float]:
        return self.estimate_us / self.measured_us[2] - 1, self.estimate_us / self.measured_us[1] - 1

    def to_dict(self) -> dict:
        return {"name": self.name, "held_out": self.held_out, "estimate_us": self.estimate_us,
                "estimate_ratio": self.estimate_ratio, "measured_ratio": None if self.ratio is None else self.ratio.ratio,
                "measured_ratio_interval": None if self.ratio is None else [self.ratio.low, self.ratio.high],
                "ratio_error": self.ratio_error, "ratio_error_interval": self.ratio_error_interval,
                "measured_us": self.measured_us[0], "measured_interval_us": list(self.measured_us[1:]),
                "ms_error": self.ms_error, "ms_error_interval": list(self.ms_error_interval), "widths": self.widths}


def validation_rows(variants: list[TimedVariant], table: "LatencyTable", timing: SessionTiming) -> list[ValidationRow]:
    """Estimate vs measurement for every timed variant (the first is the reference)."""
    fitted = {p.get("variant") for p in table.correction.points}
    reference_us = table.estimate_layers(variants[0].layers).total_us
    rows = []
    for v in variants:
        estimate = table.estimate_layers(v.layers).total_us
        if v is variants[0]:
            ratio, measured = None, tuple(timing.absolute[v.name])
        else:
            ratio = timing.ratios[v.name]
            scaled = ratio.scaled(timing.reference_us)
            measured = (scaled.ratio, scaled.low, scaled.high)
        rows.append(ValidationRow(v.name, v.widths, estimate, estimate / reference_us, ratio, measured,
                                  v.key not in fitted))
    return rows


def validate_lut(table_path: str | os.PathLike, model: str | dict | None = None, random_count: int = 3,
                 multipliers=(1.0, 0.75, 0.5, 0.35), runs: int = 300, work_dir: str | os.PathLike | None = None,
                 seed: int = 0, progress: ProgressFn | None = None) -> dict:
    """LUT estimate vs end-to-end measurement for width variants timed side by side with the unpruned
    model in one session; writes ``validation.json`` in the work folder and returns the report dict.

    The headline error is the ratio error (estimated vs measured ratio to the unpruned model): the
    unit NetAdapt decides in, free of the whole machine's drift between sessions; the ms error (the
    table's ms vs ms measured in this session) is reported beside it."""
    from android_bench.result import percentile

    from mobiledepth.arch import resolve_spec, spec_from_record

    from mobiledepth.arch.resolve import is_factory_ref

    table = load_table(table_path)
    meta = table.meta
    size = tuple(meta["input_size"])
    work = Path(work_dir) if work_dir else variants_dir(table_path)
    work.mkdir(parents=True, exist_ok=True)
    if is_factory_ref(model):
        variants = factory_variants(model, size, multipliers, meta["multiple"], work, progress, random_count, seed)
    else:
        spec = resolve_spec(model) if model else spec_from_record(meta["model"], f"lookup table {table_path}")
        variants = spec_variants(spec, size, multipliers, random_count, meta["multiple"], seed, work, progress)
    if progress:
        progress(Progress("time", "start", detail=f"timing {len(variants)} models on {meta['device']}, interleaved"))
    timing = time_variants(variants, table, max(10, runs // 9))
    rows = validation_rows(variants, table, timing)
    ratio_errors = sorted(abs(r.ratio_error) for r in rows if r.ratio_error is not None) or [0.0]
    ms_errors = sorted(abs(r.ms_error) for r in rows)
    correction = table.correction
    report = {
        **new_record("lut_validation"),
        "table": str(table_path), "device": meta["device"], "delegate": meta["delegate"], "input_size": list(size),
        "statistic": table.statistic, "reference": variants[0].name, "rounds": timing.rounds,
        "rows": [r.to_dict() for r in rows],
        "timing": "every variant side by side with the unpruned reference in one session: interleaved rotated turns "
                  "of 10 invokes (1 untimed), per turn the table's statistic; median per-round ratio to the "
                  "reference with a 95 % order-statistic CI; ms = ratio x the reference's median in this session",
        "correction": {"factor": correction.factor, "per_op_us": correction.per_op_us},
        "reference_us": timing.reference_us,
        "session_drift": (timing.reference_us / correction.reference_us - 1) if correction.reference_us else None,
        "max_abs_error": ratio_errors[-1], "median_abs_error": percentile(ratio_errors, 50),
        "max_abs_ms_error": ms_errors[-1], "median_abs_ms_error": percentile(ms_errors, 50),
    }
    write_json_atomic(work / "validation.json", report)
    return report
