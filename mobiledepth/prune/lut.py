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

``estimate(table, spec)`` = per-invoke overhead + the sum over layers of (interpolated layer
time - overhead); the overhead is measured on a one-ADD model (``null``).
"""

from __future__ import annotations

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

    def estimate(self, spec: dict, input_size: tuple[int, int] | None = None) -> "Estimate":
        """Estimated network latency of ``spec`` (µs): overhead + sum of (layer - overhead)."""
        size = tuple(input_size or self.meta["input_size"])
        layers = network_layers(spec, size)
        null = self.null_us
        per_layer = [(layer, max(self.layer_us(layer) - null, 0.0)) for layer in layers]
        return Estimate(null + sum(t for _, t in per_layer), per_layer, null)


@dataclass
class Estimate:
    total_us: float
    per_layer: list[tuple[Layer, float]]
    overhead_us: float

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000.0

    def by_op(self) -> dict[str, float]:
        out: dict[str, float] = {"overhead": self.overhead_us}
        for layer, us in self.per_layer:
            out[layer.op] = out.get(layer.op, 0.0) + us
        return out


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


def _convert(jobs: list[dict], out_dir: Path, progress: ProgressFn | None,
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


def build_lut(model: str | dict, input_size: tuple[int, int] | None = None, device: str = "host",
              delegate: str = "cpu", threads: int = 1, out: str | os.PathLike | None = None,
              multiple: int = 8, points: int = 5, runs: int = 30, warmup: int = 5, chunk: int = 25,
              cache_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None,
              statistic: str = "median") -> BuildResult:
    """Measure every grid point of the spec's layer families not yet cached; write the table JSON."""
    from mobiledepth.arch import resolve_spec, spec_hash

    statistic_of([1.0], statistic)  # reject an unknown statistic before any work
    if multiple < 1 or points < 2:
        raise UserError(f"--multiple must be >= 1 and --points >= 2 (got {multiple}, {points})")
    spec = resolve_spec(model)
    size = tuple(input_size or spec.get("input_size") or (256, 256))
    identity = runtime_identity(device, delegate, threads)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = _cache_path(cache_dir, identity)
    cache = _read_cache(cache_file, identity)
    grid = family_grid(network_layers(spec, size), multiple, points)
    wanted = [NULL_LAYER] + [layer for layers in grid.values() for layer in layers]
    wanted = list({layer.key: layer for layer in wanted}.values())
    missing = [layer for layer in wanted if layer.key not in cache["entries"]]
    reused = len(wanted) - len(missing)
    failures: list[str] = []
    convert_s = time_s = 0.0
    if missing:
        with tempfile.TemporaryDirectory(prefix="mobiledepth-lut-") as tmp:
            tmp_dir = Path(tmp)
            files = {f"{sha256_json(layer.to_dict())[:20]}.tflite": layer for layer in missing}
            convert_s, failures = _convert([{"file": f, "layer": l.to_dict()} for f, l in files.items()], tmp_dir, progress)
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
            time_s = time.perf_counter() - start
    entries = {layer.key: cache["entries"][layer.key] for layer in wanted if layer.key in cache["entries"]}
    if NULL_LAYER.key not in entries or len(entries) < len(wanted):
        raise StageFailed(f"{len(wanted) - len(entries)} of {len(wanted)} layer configs could not be measured "
                          f"(first: {failures[0] if failures else '?'}); what was measured is cached in {cache_file}")
    table = {
        "format": LUT_FORMAT, **new_record("lut"),
        **identity, "input_size": list(size), "model": spec.get("name"), "spec_hash": spec_hash(spec),
        "multiple": multiple, "points": points, "runs": runs, "warmup": warmup, "statistic": statistic,
        "builder": "tensorflow TFLiteConverter.from_concrete_functions (single-layer models)",
        "build_s": {"convert": round(convert_s, 2), "time": round(time_s, 2)},
        "entries": entries,
    }
    path = Path(out) if out else Path("runs") / "lut" / f"{spec.get('name')}-{size[0]}x{size[1]}-{device}-{delegate}.json"
    write_json_atomic(path, table)
    return BuildResult(path, load_table(path), len(missing), reused, convert_s, time_s, failures)


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

    from mobiledepth.export import export_model
    from mobiledepth.io import write_text_atomic

    out_dir = Path(out_dir)
    spec_file = out_dir.with_name(out_dir.name + ".spec.yaml")  # export takes names and YAML paths
    write_text_atomic(spec_file, yaml.safe_dump(spec, sort_keys=False))
    result = export_model(model=str(spec_file), checkpoint=checkpoint, input_size=tuple(input_size), precisions="fp32",
                          out=out_dir)
    tflite = next(Path(result.run_dir) / a["path"] for a in result.record["artifacts"] if a["format"] == "tflite")
    return tflite, Path(result.run_dir)


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


@dataclass
class ValidationRow:
    name: str
    widths: dict
    estimate_us: float
    measured_us: float
    measured_low_us: float
    measured_high_us: float

    @property
    def error(self) -> float:
        return (self.estimate_us - self.measured_us) / self.measured_us

    @property
    def error_interval(self) -> tuple[float, float]:
        """The error's 95 % interval (from the measurement's order-statistic CI)."""
        return self.estimate_us / self.measured_high_us - 1, self.estimate_us / self.measured_low_us - 1


def exported_variant(variant: dict, size: tuple[int, int], work: Path) -> Path:
    """The variant's fp32 TFLite file: reused when this spec and size were exported into ``work``
    before (the folder is named by their hash), exported now otherwise."""
    out_dir = work / f"v-{sha256_json({'spec': variant, 'size': list(size)})[:16]}"
    try:
        artifact = read_export_record(out_dir).tflite_artifact()
        if artifact and (out_dir / artifact["path"]).is_file():
            return out_dir / artifact["path"]
    except MobileDepthError:
        pass  # no complete export there yet
    return export_spec(variant, size, out_dir)[0]


def _validation_timing(files: dict[str, Path], table: "LatencyTable", runs: int) -> dict[str, tuple]:
    """Every variant's latency (median, low, high in µs) from the shared harness: interleaved turns, one
    value per turn under the table's statistic, the median over turns with its order-statistic CI
    (``runs``: about how many timed invokes per variant before the first look)."""
    meta = table.meta
    names = list(files)
    rounds = max(6, runs // 9)
    timing = time_against({n: files[n] for n in names[1:]}, files[names[0]], meta["device"], meta["delegate"],
                          meta["threads"], rounds=rounds, max_rounds=rounds * 4, precision=0.01,
                          reduce=lambda block: statistic_of(block, table.statistic), reference_name=names[0])
    return timing.absolute


def validate_lut(table_path: str | os.PathLike, model: str | dict | None = None, random_count: int = 3,
                 multipliers=(1.0, 0.75, 0.5, 0.35), runs: int = 50, work_dir: str | os.PathLike | None = None,
                 seed: int = 0, progress: ProgressFn | None = None) -> dict:
    """LUT estimate vs end-to-end measurement for width variants; writes and returns a report dict."""
    from android_bench.result import percentile

    from mobiledepth.arch import resolve_spec, spec_from_record
    from mobiledepth.prune.groups import group_widths

    table = load_table(table_path)
    meta = table.meta
    spec = resolve_spec(model) if model else spec_from_record(meta["model"], f"lookup table {table_path}")
    size = tuple(meta["input_size"])
    work = Path(work_dir) if work_dir else Path(table_path).with_suffix("") .with_name(Path(table_path).stem + "-validate")
    work.mkdir(parents=True, exist_ok=True)
    variants = variant_specs(spec, multipliers, random_count, meta["multiple"], seed)
    files = {}
    for name, variant in variants:
        if progress:
            progress(Progress("export", "start", detail=f"exporting {name} (or reusing its export)"))
        files[name] = exported_variant(variant, size, work)
    if progress:
        progress(Progress("time", "start", detail=f"timing {len(files)} models on {meta['device']}, interleaved"))
    timed = _validation_timing(files, table, runs)
    rows = [ValidationRow(name, group_widths(variant), table.estimate(variant, size).total_us, *timed[name])
            for name, variant in variants if name in timed]
    errors = sorted(abs(r.error) for r in rows)
    report = {
        **new_record("lut_validation"),
        "table": str(table_path), "device": meta["device"], "delegate": meta["delegate"], "input_size": list(size),
        "statistic": table.statistic,
        "rows": [{"name": r.name, "estimate_us": r.estimate_us, "measured_us": r.measured_us, "error": r.error,
                  "measured_interval_us": [r.measured_low_us, r.measured_high_us],
                  "error_interval": list(r.error_interval), "widths": r.widths} for r in rows],
        "timing": "interleaved rotated turns of 10 invokes (1 untimed); per turn the table's statistic; "
                  "median over turns with a 95 % order-statistic CI",
        "max_abs_error": errors[-1], "median_abs_error": percentile(errors, 50),
    }
    write_json_atomic(work / "validation.json", report)
    return report
