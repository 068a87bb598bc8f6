"""Latency lookup tables: measure single-layer models on a device, estimate a network by summing.

A table is built for a spec, an input size, a device and a delegate:

1. :func:`mobiledepth.prune.layers.network_layers` lists the latency-relevant layers; layers
   that differ only in channel counts form a *family*, and each family gets a grid of
   channel counts (multiples of ``multiple``, ``points`` per channel dim, plus every width
   the spec actually has).
2. The grid points not yet in the cache are built as single-layer TFLite models by one
   TensorFlow child process (:mod:`mobiledepth.prune.layer_models`) and timed through
   ``android_bench`` (host interpreter or benchmark_model on a phone): :mod:`mobiledepth.prune.timing`.
3. Every measurement is kept, with its raw samples, in a cache file keyed by (device,
   delegate, threads, runtime version) and layer config, written after every chunk, so a
   stopped build resumes and another spec reuses identical layers.

4. The graph correction (:class:`GraphCorrection`) is fitted on whole-model width variants timed
   side by side with the unpruned model (:func:`mobiledepth.prune.variants.calibrate`).

``LatencyTable.estimate_layers(layers)`` = per-invoke overhead + factor x the sum over layers of
(interpolated layer time - overhead, or its weights streamed at the model's footprint when longer:
:mod:`mobiledepth.prune.weight_stream`, measured by the build) + per-op overhead x layers; the
per-invoke overhead is measured on a one-ADD model (``null``). The layers come from
:func:`network_layers` (a spec) or :func:`mobiledepth.prune.traced_layers.traced_layers` (any module).
``variants.validate_lut`` compares estimated and measured ratios to the unpruned model, timed in one session.

The rooms beside this one: ``timing`` (layer models built and timed, interleaved sessions, the table's
statistic), ``channel_tile`` (``--multiple auto``), ``weight_stream`` (weights that outgrow the cache),
``variants`` (whole-model width variants: export, calibration, validation).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mobiledepth.errors import StageFailed, UserError
from mobiledepth.io import sha256_json, write_json_atomic
from mobiledepth.records import new_record
from mobiledepth.progress import Progress, ProgressFn
from mobiledepth.prune.channel_tile import TILE_PROBE_CHANNELS, TileProbe, probe_channel_tile, probe_layer
from mobiledepth.prune.layers import NULL_LAYER, Layer, network_layers
from mobiledepth.prune.timing import build_layer_models, statistic_of, time_models

LUT_FORMAT = "mobiledepth-lut/1"
CACHE_FORMAT = "mobiledepth-lut-cache/1"


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
    from mobiledepth.prune.variants import calibrate, factory_variants, spec_variants, variants_dir

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

