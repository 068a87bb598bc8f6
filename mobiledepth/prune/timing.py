"""Timing on the table's runner: single-layer models built in the converter environment and timed through
``android_bench`` (host interpreter, or benchmark_model on a phone), models timed interleaved with a reference
in one session of the shared harness (``android_bench.interleave``), and the statistic a table summarises
timed runs with. The lookup table (``lut``), its probes (``channel_tile``, ``weight_stream``) and its
whole-model variants (``variants``) all time through here.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mobiledepth.errors import MobileDepthError, StageFailed, UserError
from mobiledepth.progress import Progress, ProgressFn


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

